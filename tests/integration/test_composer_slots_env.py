"""$V2BGM_COMPOSER_SLOTS reaches the composer's stub on a real tritonserver: its slots metric and
its line follow the override, not the config (4 on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from v2bgm_contract import interface as contract

from tests.reliability.probes import metric
from tests.reliability.servers import render_repository, start_server
from v2bgm.triton.handlers import SLOTS_ENV

pytestmark = pytest.mark.server


def test_the_environment_overrides_the_configs_slots(weights: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(SLOTS_ENV, "2")
    repo = render_repository(tmp_path / "repo", (contract.COMPOSER_MODEL,))
    server = start_server(repo, weights, tmp_path / "tritonserver.log")
    try:
        assert metric(server.metrics_port, "v2bgm_slots", contract.COMPOSER_MODEL) == 2
    finally:
        server.stop(timeout_s=10)
