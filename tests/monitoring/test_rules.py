"""The rules file: valid for Prometheus, unit-tested with promtool, in step with metrics.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from v2bgm_contract import interface as contract

from tests.monitoring.files import RULES_FILE
from v2bgm.triton import metrics

RULES_TEST = Path(__file__).with_name("rules_test.yml")
# Metric names a PromQL expression reads: ours, Triton's and Prometheus' own `up`.
RAW_NAME = re.compile(r"\b(v2bgm_[a-z_]+|nv_[a-z_]+|up)\b")
RECORDED_NAME = re.compile(r"\bv2bgm:[a-z0-9_]+(?::[a-z0-9_]+)?")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def rules() -> list[dict]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in metrics.NAMES:
            return name.removesuffix(suffix)
    return name


def test_promtool_checks_the_rules_file(promtool: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", RULES_FILE], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: Path) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TEST], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_read_only_metrics_that_exist() -> None:
    """Every v2bgm_* name is defined in metrics.py; every model named is the interface's."""
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        for name in RAW_NAME.findall(rule["expr"]):
            if name.startswith("v2bgm_"):
                assert base_name(name) in metrics.NAMES, (name, rule)
        for name in RECORDED_NAME.findall(rule["expr"]):
            assert name in recorded, (name, rule)
        for model in re.findall(r'model=~?"([^"]+)"', rule["expr"]):
            assert set(model.split("|")) <= set(contract.MODELS), (model, rule)


def test_every_server_metric_is_used_by_a_rule() -> None:
    used = {base_name(n) for rule in rules() for n in RAW_NAME.findall(rule["expr"])}
    assert set(metrics.NAMES) <= used, set(metrics.NAMES) - used


def test_alerts_say_how_bad_and_what_to_do() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {a["alert"] for a in alerts} >= {
        "V2bgmQueueTimeRising",
        "V2bgmHeadroomLow",
        "V2bgmFailureRatioHigh",
        "V2bgmModelNotReady",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert
