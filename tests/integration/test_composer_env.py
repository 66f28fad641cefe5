"""The composer's environment overrides reach its stub on a real tritonserver (one server for
all): $V2BGM_COMPOSER_SLOTS its slots metric and its line, not the config's (4 on the CPU);
$V2BGM_MAX_DURATION_S its cap on DURATION_S, not the config's 600 s; $V2BGM_COMPOSER_WARM_UP=first
its warm-up (the first request's path alone, as its cold-start line says), and it still serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_contract import interface as contract

from tests.reliability.probes import metric
from tests.reliability.servers import render_repository, start_server
from v2bgm.triton import coldstart, limits
from v2bgm.triton.handlers import SLOTS_ENV, WARM_UP_ENV

pytestmark = pytest.mark.server

CAP_S = 5.0


def compose(url: str, duration_s: float):
    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, value, dtype in (
        ("TAGS", np.array([[b"pop piano"]], np.object_), "BYTES"),
        ("DURATION_S", np.array([[duration_s]], np.float32), "FP32"),
    ):
        tensor = grpcclient.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    try:
        return client.infer(contract.COMPOSER_MODEL, inputs, client_timeout=300)
    finally:
        client.close()


def test_the_environment_overrides_the_configs_slots_cap_and_warm_up(
    weights: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv(SLOTS_ENV, "2")
    monkeypatch.setenv(limits.ENV, f"{CAP_S:g}")
    monkeypatch.setenv(WARM_UP_ENV, "first")
    repo = render_repository(tmp_path / "repo", (contract.COMPOSER_MODEL,))
    log = tmp_path / "tritonserver.log"
    server = start_server(repo, weights, log)
    url = f"127.0.0.1:{server.grpc_port}"
    try:
        phases = coldstart.read_lines(log.read_text())[contract.COMPOSER_MODEL]["phases"]
        warm_up = [p["phase"] for p in phases if p["phase"].startswith("warm-up")]
        assert warm_up == ["warm-up: first request"]
        assert metric(server.metrics_port, "v2bgm_slots", contract.COMPOSER_MODEL) == 2
        with pytest.raises(InferenceServerException) as err:
            compose(url, CAP_S + 1)
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "more than this server composes: 5 s" in err.value.message()
        assert limits.ENV in err.value.message()
        audio = compose(url, CAP_S).as_numpy("AUDIO")[0]
        assert len(audio) == CAP_S * 44100
    finally:
        server.stop(timeout_s=10)
