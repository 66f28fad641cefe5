"""Reading the Grafana dashboard file: its panels and their PromQL."""

from __future__ import annotations

import json
from typing import Any

from tests.monitoring.files import DASHBOARD_FILE


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def panels() -> list[dict[str, Any]]:
    """The panels that show data (rows are headings)."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def rows() -> list[str]:
    return [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]


def exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]
