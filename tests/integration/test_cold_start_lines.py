"""Each served model logs where its cold start went (v2bgm.triton.coldstart), on the session's
real tritonserver: the stub's start and imports, the weights, the warm-up (the composer's `full`
by default), and the host-memory peak; the benchmark reads the same lines back."""

from __future__ import annotations

import pytest
from v2bgm_contract import interface as contract

from v2bgm.serve import TritonServer
from v2bgm.triton import coldstart

pytestmark = pytest.mark.server


def test_each_model_logs_its_cold_start_phases_and_memory_peak(server: TritonServer):
    assert server.log_path is not None
    found = coldstart.read_lines(server.log_path.read_text())
    assert set(found) >= {contract.CAPTIONER_MODEL, contract.COMPOSER_MODEL}
    composer = found[contract.COMPOSER_MODEL]
    assert [p["phase"] for p in composer["phases"]] == [
        coldstart.STUB_START,
        "imports: composer",
        "weights: yue-s1",
        "weights: yue-s2",
        "weights: x-codec, vocoder",
        "warm-up: first request",
        "warm-up: stage-2 shapes (0 graphs)",  # no CUDA graphs on the CPU
        "warm-up: stage 1, two requests",
        "warm-up: stage-1 shapes (0 graphs)",
        "metrics",
    ]
    captioner = found[contract.CAPTIONER_MODEL]
    assert [p["phase"] for p in captioner["phases"]] == [
        coldstart.STUB_START,
        "weights: videollama3",
        "warm-up (dynamic cache)",
        "metrics",
    ]
    for summary in (composer, captioner):
        assert summary["device"] == "cpu"
        assert summary["seconds"] == pytest.approx(sum(p["s"] for p in summary["phases"]), abs=0.1)
        assert summary["phases"][0]["s"] > 0.5  # a stub imports torch and transformers first
        peaks = [p["vm_hwm_mib"] for p in summary["phases"]]
        assert peaks == sorted(peaks) and summary["vm_hwm_mib"] >= peaks[-1] > 100
