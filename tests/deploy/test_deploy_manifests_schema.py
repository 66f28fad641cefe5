"""Every rendered manifest validates against its API schema.

Built-in kinds: kubernetes-validate's strict JSON schemas (unknown fields are errors) of the
pinned Kubernetes version. Prometheus Operator kinds (ServiceMonitor, PrometheusRule) have no
schema there; they are checked with cloudcoil's pydantic models, generated from the operator's
CRDs: the object must parse and dump back unchanged (so unknown or misspelt fields fail too).
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pydantic
import pytest
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

from tests.deploy.chart import CPU_DEMO_VALUES, KUBERNETES_VERSION, Manifest, load_values, manifests

OPERATOR_API = "monitoring.coreos.com/v1"
OPERATOR_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "ServiceMonitor": prometheus_operator.ServiceMonitor,
    "PrometheusRule": prometheus_operator.PrometheusRule,
}
# Everything optional switched on or away from its default.
KITCHEN_SINK: dict[str, Any] = {
    "replicaCount": 2,
    "device": "auto",
    "gpus": 2,
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "gpu-inference",
    "podAnnotations": {"example.com/team": "music"},
    "podLabels": {"tier": "inference"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}
        ]}]}}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "strategy": {"type": "Recreate", "rollingUpdate": None},
    "serviceAccount": {"create": False, "name": "v2bgm-runner"},
    "service": {"type": "LoadBalancer", "annotations": {"example.com/internal": "true"}},
    "weights": {"existingClaim": "yue-weights", "init": {"enabled": True, "mode": "hub",
                "resources": {"limits": {"memory": "8Gi"}}}},
    "extraTritonArgs": ["--log-verbose=1"],
    "extraEnv": [{"name": "HF_TOKEN",
                  "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
    "autoscaling": {"enabled": False},
    "adminApi": {"existingSecret": "v2bgm-admin", "secretKey": "key"},
    "networkPolicy": {"enabled": True, "extraIngress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ingress": "true"}}}],
         "ports": [{"port": "http", "protocol": "TCP"}]}]},
    "podDisruptionBudget": {"maxUnavailable": None, "minAvailable": 1},
    "monitoring": {"serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}},
                   "prometheusRule": {"labels": {"release": "kube-prometheus-stack"}}},
}  # fmt: skip
VALUE_SETS = {
    "default": None,
    "cpu-demo": load_values(CPU_DEMO_VALUES),
    "kitchen-sink": KITCHEN_SINK,
}


def validate(doc: Manifest) -> None:
    if doc["apiVersion"] == OPERATOR_API:
        model = OPERATOR_MODELS[doc["kind"]].model_validate(doc)
        assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc, (
            f"{doc['kind']} has fields its CRD does not know"
        )
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_manifests_validate(name: str) -> None:
    docs = manifests(VALUE_SETS[name])
    assert docs
    for doc in docs:
        validate(doc)


def test_kitchen_sink_values_take_effect() -> None:
    docs = {d["kind"]: d for d in manifests(KITCHEN_SINK)}
    assert "PersistentVolumeClaim" not in docs and "HorizontalPodAutoscaler" not in docs
    assert docs["PodDisruptionBudget"]["spec"] == {
        "minAvailable": 1,
        "selector": docs["PodDisruptionBudget"]["spec"]["selector"],
    }
    assert docs["Deployment"]["spec"]["replicas"] == 2
    assert docs["Service"]["spec"]["type"] == "LoadBalancer"
    server = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][-1] == "--log-verbose=1"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 2


def deployment() -> Manifest:
    return next(d for d in manifests() if d["kind"] == "Deployment")


def test_kubernetes_schema_rejects_a_misspelt_field() -> None:
    doc = copy.deepcopy(deployment())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_rejects_a_wrong_type() -> None:
    doc = copy.deepcopy(deployment())
    doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "90s"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("ServiceMonitor", lambda spec: spec["endpoints"][0].update(intervall="15s")),
        ("PrometheusRule", lambda spec: spec["groups"][0]["rules"][0].update({"for": 5})),
        ("PrometheusRule", lambda spec: spec["groups"][0].pop("name")),
    ],
    ids=["misspelt-field", "wrong-type", "missing-required"],
)
def test_operator_models_reject_broken_objects(kind: str, break_it) -> None:
    doc = copy.deepcopy(next(d for d in manifests() if d["kind"] == kind))
    break_it(doc["spec"])
    with pytest.raises((pydantic.ValidationError, AssertionError)):
        validate(doc)
