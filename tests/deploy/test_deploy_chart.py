"""The Helm chart: lint, what it renders, and that the pieces fit together."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    CPU_DEMO_VALUES,
    DASHBOARD_FILE,
    KUBERNETES_VERSION,
    NAMESPACE,
    RELEASE,
    RULES_FILE,
    Manifest,
    by_kind,
    containers,
    default_values,
    env_of,
    load_values,
    manifests,
    notes,
    server_container,
)

LINT_WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error
MIN_STARTUP_BUDGET_S = 20 * 60  # 7B weights from a network volume
GPU_RESOURCE = "nvidia.com/gpu"


@pytest.mark.parametrize("values_file", [None, CPU_DEMO_VALUES], ids=["default", "cpu-demo"])
def test_helm_lint_strict_is_clean(values_file) -> None:
    values = load_values(values_file) if values_file else None
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= LINT_WARNING]
    assert not report["errors"] and not problems, report


def test_default_release_objects(default_docs: dict[str, Manifest]) -> None:
    assert set(default_docs) == {
        "Deployment", "Service", "ServiceAccount", "PersistentVolumeClaim",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule",
        "ConfigMap", "Pod",
    }  # fmt: skip
    assert default_docs["Pod"]["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_gpu_pod_spec(default_docs: dict[str, Manifest]) -> None:
    values = default_values()
    spec = default_docs["Deployment"]["spec"]["template"]["spec"]
    server = server_container(default_docs["Deployment"])
    assert server["resources"]["limits"][GPU_RESOURCE] == values["gpus"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/dev/shm"]["name"] == "dshm"
    assert mounts["/weights"] == {"name": "weights", "mountPath": "/weights", "readOnly": True}
    claim = volumes["weights"]["persistentVolumeClaim"]["claimName"]
    assert claim == default_docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert env_of(server)["V2BGM_WEIGHTS"] == "/weights"
    assert env_of(server)["V2BGM_DEVICE"] == "gpu"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert "replicas" not in default_docs["Deployment"]["spec"]  # the HPA owns it


def test_probes_use_triton_health_endpoints(default_docs: dict[str, Manifest]) -> None:
    server = server_container(default_docs["Deployment"])
    startup, liveness = server["startupProbe"], server["livenessProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert liveness["exec"]["command"] == ["v2bgm-health", "live"]
    assert server["readinessProbe"]["exec"]["command"] == ["v2bgm-health", "ready"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= MIN_STARTUP_BUDGET_S
    # v2bgm-serve must not give up on a slow load before the kubelet does.
    assert int(env_of(server)["V2BGM_READY_TIMEOUT_S"]) == budget


def test_graceful_termination(default_docs: dict[str, Manifest]) -> None:
    shutdown = default_values()["gracefulShutdown"]
    spec = default_docs["Deployment"]["spec"]["template"]["spec"]
    server = server_container(default_docs["Deployment"])
    exit_timeouts = [a for a in server["args"] if a.startswith("--exit-timeout-secs=")]
    assert server["args"][0] == "--"  # the rest goes to tritonserver
    assert exit_timeouts == [f"--exit-timeout-secs={shutdown['tritonExitTimeoutSeconds']}"]
    pre_stop = " ".join(server["lifecycle"]["preStop"]["exec"]["command"])
    assert 'touch "$V2BGM_DRAIN_FILE"' in pre_stop
    assert f"sleep {shutdown['drainSeconds']}" in pre_stop
    assert env_of(server)["V2BGM_DRAIN_FILE"].startswith("/tmp/")  # /tmp is a writable emptyDir
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > shutdown["drainSeconds"] + shutdown["tritonExitTimeoutSeconds"]


def test_service_exposes_the_container_ports(default_docs: dict[str, Manifest]) -> None:
    service = default_docs["Service"]
    server = server_container(default_docs["Deployment"])
    container_ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert container_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert set(service_ports) == set(container_ports)
    for name, port in service_ports.items():
        assert port["targetPort"] == name and port["port"] == container_ports[name]
    pod_labels = default_docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_scrapes_the_metrics_port(default_docs: dict[str, Manifest]) -> None:
    monitor = default_docs["ServiceMonitor"]["spec"]
    service = default_docs["Service"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [("metrics", "/metrics")]


def test_prometheus_rule_is_the_rules_file(default_docs: dict[str, Manifest]) -> None:
    assert default_docs["PrometheusRule"]["spec"] == yaml.safe_load(RULES_FILE.read_text())


def test_dashboard_config_map_is_the_dashboard_file(default_docs: dict[str, Manifest]) -> None:
    config_map = default_docs["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD_FILE.read_text())


def test_hpa_scales_the_deployment_on_the_configured_metric(
    default_docs: dict[str, Manifest],
) -> None:
    metric = default_values()["autoscaling"]["metric"]
    hpa = default_docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": default_docs["Deployment"]["metadata"]["name"],
    }
    (rule,) = hpa["metrics"]
    assert rule["type"] == "Pods"
    assert rule["pods"]["metric"]["name"] == metric["name"]
    assert rule["pods"]["target"] == {
        "type": "AverageValue",
        "averageValue": metric["targetAverageValue"],
    }


def test_pdb_selects_the_pods(default_docs: dict[str, Manifest]) -> None:
    pdb = default_docs["PodDisruptionBudget"]["spec"]
    pod_labels = default_docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["maxUnavailable"] == 1


def adapter_rule_names(rule: dict[str, Any]) -> tuple[str, str, str]:
    """(source series, exposed metric name, model) named by a prometheus-adapter rule."""
    series = re.fullmatch(r"\^(\w+)\$", rule["name"]["matches"]).group(1)
    (model,) = set(re.findall(r'model="(\w+)"', rule["seriesQuery"] + rule["metricsQuery"]))
    assert rule["seriesQuery"].startswith(series + "{")
    return series, rule["name"]["as"], model


def test_adapter_rule_in_notes_and_readme_uses_the_values_names() -> None:
    metric = default_values()["autoscaling"]["metric"]
    expected = (metric["series"], metric["name"], metric["model"])
    text = notes()
    block = text[text.index("  - seriesQuery:") : text.index("\nCheck:")]
    (from_notes,) = yaml.safe_load(block)
    assert adapter_rule_names(from_notes) == expected
    readme = (CHART / "README.md").read_text()
    marker = readme.index("<!-- adapter-rule")
    code = re.search(r"```yaml\n(.*?)```", readme[marker:], re.S).group(1)
    (from_readme,) = yaml.safe_load(code)["rules"]["custom"]
    assert adapter_rule_names(from_readme) == expected
    # the metric names appear in values.yaml only (templates read them from there)
    for template in (CHART / "templates").rglob("*.*"):
        assert metric["name"] not in template.read_text(), template.name
        assert metric["series"] not in template.read_text(), template.name


def test_renamed_metric_reaches_hpa_and_notes() -> None:
    values = {"autoscaling": {"metric": {"name": "v2bgm_queue_seconds"}}}
    hpa = by_kind(manifests(values))["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "v2bgm_queue_seconds"
    assert "as: v2bgm_queue_seconds" in notes(values)


def test_cpu_demo_runs_tiny_models_without_gpus(cpu_demo_docs: dict[str, Manifest]) -> None:
    assert "HorizontalPodAutoscaler" not in cpu_demo_docs
    assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap"} & set(cpu_demo_docs)
    deployment = cpu_demo_docs["Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert "nodeSelector" not in spec and "tolerations" not in spec
    for container in containers(deployment):
        assert GPU_RESOURCE not in json.dumps(container.get("resources", {}))
    (init,) = spec["initContainers"]
    assert init["args"] == ["v2bgm-fetch-weights", "tiny", "/weights"]
    assert {"name": "weights", "mountPath": "/weights"} in init["volumeMounts"]  # writable
    server = server_container(deployment)
    assert env_of(server)["V2BGM_DEVICE"] == "cpu"
    assert init["image"] == server["image"]


def test_existing_claim_replaces_the_created_one() -> None:
    docs = by_kind(manifests({"weights": {"existingClaim": "yue-weights"}}))
    assert "PersistentVolumeClaim" not in docs
    volumes = docs["Deployment"]["spec"]["template"]["spec"]["volumes"]
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    ]
    assert claims == ["yue-weights"]


def test_compile_cache_claim_is_mounted_and_named_to_the_server() -> None:
    default = server_container(by_kind(manifests())["Deployment"])
    assert "V2BGM_COMPILE_CACHE" not in env_of(default)  # the pod's /tmp keeps it
    values = {"compileCache": {"existingClaim": "v2bgm-compile-cache", "mountPath": "/cc"}}
    deployment = by_kind(manifests(values))["Deployment"]
    server = server_container(deployment)
    assert env_of(server)["V2BGM_COMPILE_CACHE"] == "/cc"
    assert {"name": "compile-cache", "mountPath": "/cc"} in server["volumeMounts"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["compile-cache"]["persistentVolumeClaim"]
    assert claim == {"claimName": "v2bgm-compile-cache"}


def test_notes_walk_to_a_first_request() -> None:
    text = notes()
    assert f"port-forward service/{RELEASE}-v2bgm 8001:8001" in text
    assert "--url localhost:8001" in text
    assert "ReadWriteOnce" in text  # the warning: 4 replicas, one RWO claim
    assert "ReadWriteOnce" not in notes(load_values(CPU_DEMO_VALUES))


def test_metrics_listen_on_the_pod_address_only(default_docs: dict[str, Manifest]) -> None:
    server = server_container(default_docs["Deployment"])
    (address,) = [e for e in server["env"] if e["name"] == "V2BGM_METRICS_ADDRESS"]
    assert address["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_admin_key_comes_from_the_secret_as_a_file() -> None:
    default = by_kind(manifests())["Deployment"]
    assert "V2BGM_ADMIN_KEY_FILE" not in env_of(server_container(default))  # random: closed
    values = {"adminApi": {"existingSecret": "v2bgm-admin", "secretKey": "key"}}
    deployment = by_kind(manifests(values))["Deployment"]
    server = server_container(deployment)
    assert env_of(server)["V2BGM_ADMIN_KEY_FILE"] == "/var/run/secrets/v2bgm/key"
    mount = {"name": "admin-key", "mountPath": "/var/run/secrets/v2bgm", "readOnly": True}
    assert mount in server["volumeMounts"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["admin-key"]["secret"]["secretName"] == "v2bgm-admin"
    assert volumes["admin-key"]["secret"]["items"] == [{"key": "key", "path": "key"}]


def test_network_policy_lets_clients_reach_grpc_and_monitoring_the_metrics() -> None:
    assert "NetworkPolicy" not in by_kind(manifests())  # off by default
    docs = by_kind(manifests({"networkPolicy": {"enabled": True}}))
    policy = docs["NetworkPolicy"]["spec"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    clients, monitoring = policy["ingress"]
    values = default_values()["networkPolicy"]
    assert clients["from"] == [{"namespaceSelector": values["clientNamespaceSelector"]}]
    assert monitoring["from"] == [{"namespaceSelector": values["monitoringNamespaceSelector"]}]
    ports = {p["name"] for p in server_container(docs["Deployment"])["ports"]}
    assert [p["port"] for p in clients["ports"]] == ["grpc"]
    assert [p["port"] for p in monitoring["ports"]] == ["metrics"]
    assert {"grpc", "metrics"} <= ports  # named ports the container declares
