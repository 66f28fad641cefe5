{{/* Names and labels, as `helm create` makes them. */}}
{{- define "v2bgm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "v2bgm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "v2bgm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "v2bgm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "v2bgm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "v2bgm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "v2bgm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "v2bgm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "v2bgm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "v2bgm.weightsClaim" -}}
{{- default (printf "%s-weights" (include "v2bgm.fullname" .)) .Values.weights.existingClaim }}
{{- end }}

{{/* How long v2bgm-serve waits for readiness: the startup probe's whole budget. */}}
{{- define "v2bgm.startupBudgetSeconds" -}}
{{- mul .Values.probes.startup.periodSeconds .Values.probes.startup.failureThreshold }}
{{- end }}

{{/* What JSON schema cannot say: relations between values. */}}
{{- define "v2bgm.checks" -}}
{{- $g := .Values.gracefulShutdown }}
{{- if le (int $g.terminationGracePeriodSeconds) (add $g.drainSeconds $g.tritonExitTimeoutSeconds | int) }}
{{- fail (printf "gracefulShutdown.terminationGracePeriodSeconds (%v) must exceed drainSeconds + tritonExitTimeoutSeconds (%v): the kubelet would kill requests Triton is still finishing" $g.terminationGracePeriodSeconds (add $g.drainSeconds $g.tritonExitTimeoutSeconds)) }}
{{- end }}
{{- if and (eq .Values.device "gpu") (lt (int .Values.gpus) 1) }}
{{- fail "device: gpu needs gpus >= 1 (or use device: cpu, e.g. with values-cpu-demo.yaml)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" }}
{{- end }}
{{- end }}
