"""When the stream path sends a request again (v2bgm_client.retry), without a server: the
integration test (tests/stream/test_stream_retry.py) runs the same policy against a real one."""

from __future__ import annotations

import random

import numpy as np
import pytest
from v2bgm_client.api import server_error
from v2bgm_client.errors import ServerError
from v2bgm_client.retry import StreamRetry
from v2bgm_contract import events
from v2bgm_contract import interface as contract

URL = "127.0.0.1:8001"
REQUEST = {contract.FRAMES.name: np.zeros((1, 1, 4, 4, 3), dtype=np.uint8)}
STARTED = events.Started(seed=1234, candidates=1, duration_s=2.0)
AUDIO = events.Composed(candidate=0, seed=1234, sample_rate=8, audio_s=2.0, timings={})


def error(code: str, message: str = "composer busy") -> ServerError:
    return server_error(URL, f"StatusCode.{code}", message, 60.0)


def policy(**kw) -> StreamRetry:
    return StreamRetry(REQUEST, kw.pop("timeout_s", 60.0), random.Random(0), **kw)


@pytest.mark.parametrize("code", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
def test_busy_before_audio_is_retried_with_the_seed_the_server_announced(code):
    p = policy()
    p.saw(STARTED)
    notice = p.after(error(code))
    assert notice is not None and notice.code == code and notice.seed == 1234
    assert notice.attempt == 1 and 0.0 <= notice.delay_s <= 0.5
    assert p.request[contract.SEED.name].tolist() == [[1234]]
    assert contract.SEED.name not in REQUEST  # the caller's request is left alone
    assert p.request[contract.FRAMES.name] is REQUEST[contract.FRAMES.name]


def test_a_seed_the_caller_chose_is_kept():
    chosen = np.asarray([[7]], dtype=contract.SEED.numpy_dtype)
    p = StreamRetry({**REQUEST, contract.SEED.name: chosen}, 60.0, random.Random(0))
    p.saw(STARTED)
    assert p.after(error("UNAVAILABLE")).seed == 7


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "INTERNAL", "CANCELLED"])
def test_other_statuses_are_final(code):
    p = policy()
    p.saw(STARTED)
    assert p.after(error(code)) is None


def test_a_server_that_cannot_be_reached_is_reported_at_once():
    unreachable = error("UNAVAILABLE", "failed to connect to all addresses")
    assert unreachable.code is None and "cannot reach" in str(unreachable)
    assert policy().after(unreachable) is None


def test_after_audio_only_when_asked():
    p = policy()
    p.saw(STARTED)
    p.saw(AUDIO)
    assert p.after(error("UNAVAILABLE")) is None
    q = policy(after_audio=True)
    q.saw(STARTED)
    q.saw(AUDIO)
    assert q.after(error("UNAVAILABLE")).seed == 1234


def test_retries_back_off_and_stop_at_the_deadline():
    p = policy(timeout_s=3.0)
    delays = []
    while (notice := p.after(error("UNAVAILABLE"))) is not None:
        delays.append(notice.delay_s)
        p.deadline -= notice.delay_s  # as if the wait had passed
    assert delays and sum(delays) < 3.0 and len(delays) == p.attempt
    caps = [0.5 * 2**i for i in range(len(delays))]
    assert all(d <= cap for d, cap in zip(delays, caps, strict=True))


def test_disabled_never_retries():
    assert policy(enabled=False).after(error("UNAVAILABLE")) is None


def test_after_a_dropped_connection_a_server_not_yet_listening_is_waited_for():
    p = policy()
    p.saw(STARTED)
    lost = error("UNAVAILABLE", "Socket closed")
    assert lost.connection_lost and "may have restarted" in str(lost)
    assert p.after(lost) is not None
    refused = error("UNAVAILABLE", "failed to connect to all addresses")
    assert refused.code is None
    assert p.after(refused).code == "UNAVAILABLE"  # the restart is under way
    assert policy().after(refused) is None  # without a dropped connection: at once
    assert policy().final(refused) is refused


def test_a_server_that_does_not_come_back_is_reported_as_the_dropped_connection():
    p = policy(restart_wait_s=0.0)
    lost = error("UNAVAILABLE", "Socket closed")
    assert p.after(lost) is not None
    refused = error("UNAVAILABLE", "failed to connect to all addresses")
    p.lost_at -= 1.0  # the restart window has passed
    assert p.after(refused) is None
    assert p.final(refused) is lost


def test_the_restart_wait_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("V2BGM_RESTART_WAIT_S", "7")
    assert policy().restart_wait_s == 7.0
    monkeypatch.delenv("V2BGM_RESTART_WAIT_S")
    assert policy().restart_wait_s == 180.0
