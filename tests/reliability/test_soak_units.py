"""The soak's bookkeeping (tests/reliability/soak.py, run by `make soak`) without a server."""

from __future__ import annotations

import os

import pytest

from tests.reliability import soak

MIB = 1024 * 1024


def test_growth_beyond_the_limit_and_vanished_processes_are_flagged():
    before = {"tritonserver": 100 * MIB, "music_composer_0_0": 1000 * MIB, "gone": MIB}
    after = {"tritonserver": 111 * MIB, "music_composer_0_0": 1090 * MIB}
    flagged = soak.over_limit(before, after, soak.MAX_GROWTH)
    assert set(flagged) == {"tritonserver", "gone"}
    assert flagged["tritonserver"] == pytest.approx(0.11)
    assert soak.over_limit(before, before, soak.MAX_GROWTH) == {}


def test_shrinking_is_not_a_leak():
    assert soak.over_limit({"p": 100 * MIB}, {"p": 50 * MIB}, soak.MAX_GROWTH) == {}


def test_rss_of_this_process():
    assert 10 * MIB < soak.rss_bytes(os.getpid()) < 100_000 * MIB


def test_memory_report_in_mib():
    assert soak.memory_report(100 * MIB, 105 * MIB) == {
        "after_warmup": 100.0,
        "at_end": 105.0,
        "growth_pct": 5.0,
    }
    assert soak.memory_report(100 * MIB, None)["growth_pct"] is None


def test_warmup_must_leave_requests_to_measure():
    with pytest.raises(SystemExit):
        soak.parse_args(["--requests", "10", "--warmup", "10"])
