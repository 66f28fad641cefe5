"""The Grafana dashboard file and its provisioning: panels read the recording rules.

Whether each panel shows data from a real run is checked in test_prometheus.py.
"""

from __future__ import annotations

import re

import yaml

from tests.monitoring import grafana
from tests.monitoring.files import GRAFANA_PROVISIONING, RULES_FILE

RECORDED_NAME = re.compile(r"\bv2bgm:[a-z0-9_]+(?::[a-z0-9_]+)?")
TOPICS = ("capacity", "throughput", "latency", "queue", "gpu", "failures", "streams")


def recorded_rules() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_panels_read_recording_rules_that_exist() -> None:
    recorded = recorded_rules()
    for title, expr in grafana.exprs():
        names = set(RECORDED_NAME.findall(expr))
        assert names <= recorded, (title, names - recorded)
        assert names or "ALERTS" in expr, f"{title}: reads no recording rule: {expr}"


def test_every_recording_rule_is_on_the_dashboard() -> None:
    shown = {name for _, expr in grafana.exprs() for name in RECORDED_NAME.findall(expr)}
    assert recorded_rules() <= shown, recorded_rules() - shown


def test_one_row_per_topic() -> None:
    rows = [title.lower() for title in grafana.rows()]
    for topic in TOPICS:
        assert any(topic in row for row in rows), (topic, rows)


def test_panels_use_the_datasource_variable_and_do_not_overlap() -> None:
    board = grafana.dashboard()
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in grafana.panels():
        assert panel["description"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel


def test_grafana_provisioning_points_at_the_dashboard_folder() -> None:
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "v2bgm.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/v2bgm"
    sources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
