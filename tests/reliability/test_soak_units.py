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


def test_a_dead_server_is_reported_by_its_signal():
    assert soak.death_message(-11, 142) == (
        "tritonserver died (signal 11, SIGSEGV) after 142 requests answered"
    )
    assert soak.death_message(1, 0) == "tritonserver died (exit code 1) after 0 requests answered"


def test_waiting_for_answers_stops_when_the_server_dies():
    tally = soak.Tally()
    tally.add("OK")

    def dead() -> None:
        raise soak.ServerDied("gone")

    assert tally.wait_for(1, 5.0, dead)  # already answered: no need to look
    with pytest.raises(soak.ServerDied):
        tally.wait_for(2, 60.0, dead)
    assert not tally.wait_for(2, 0.1, lambda: None)
