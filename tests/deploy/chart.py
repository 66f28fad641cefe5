"""Render the chart offline (helm-python-sdk embeds Helm 4) and pick objects out of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "v2bgm"
CPU_DEMO_VALUES = CHART / "values-cpu-demo.yaml"
RULES_FILE = CHART / "files" / "prometheus-rules.yml"
DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
RELEASE = "music"
NAMESPACE = "v2bgm-test"
KUBERNETES_VERSION = "1.31.0"  # the schemas the manifests are validated against

Manifest = dict[str, Any]


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def default_values() -> dict[str, Any]:
    return load_values(CHART / "values.yaml")


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template RELEASE helm/v2bgm -f ...` prints it."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(values: dict[str, Any] | None = None) -> list[Manifest]:
    docs = []
    for path, text in sorted(render(values).items()):
        if path.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def by_kind(docs: list[Manifest]) -> dict[str, Manifest]:
    kinds = [doc["kind"] for doc in docs]
    duplicated = {kind for kind in kinds if kinds.count(kind) > 1}
    assert not duplicated, f"several objects of kind {duplicated}"
    return {doc["kind"]: doc for doc in docs}


def notes(values: dict[str, Any] | None = None) -> str:
    return next(text for path, text in render(values).items() if path.endswith("NOTES.txt"))


def containers(deployment: Manifest) -> Iterator[Manifest]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def server_container(deployment: Manifest) -> Manifest:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: Manifest) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}
