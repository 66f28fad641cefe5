"""Where the monitoring files and Debian's Prometheus binaries (`make prometheus`) live."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_BIN = ROOT / ".cache" / "prometheus" / "usr" / "bin"
RULES_FILE = ROOT / "helm" / "v2bgm" / "files" / "prometheus-rules.yml"
DASHBOARD_FILE = ROOT / "helm" / "v2bgm" / "files" / "grafana-dashboard.json"
GRAFANA_PROVISIONING = ROOT / "monitoring" / "grafana" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus.yml"
