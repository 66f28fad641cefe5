"""Chaos with streams (`make load`): 8 streams in flight through `v2bgm-serve` on the tiny models,
the composer's stub killed. Every stream hears of it (UNAVAILABLE) within 20 s, the launcher
restarts the server, each stream's retry (the client's, before any audio) carries the seed the
server announced and gets its music from the new server; nothing of the dead server is left in
/dev/shm, and no stub outlives the launcher."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from v2bgm_client.options import SoundtrackOptions
from v2bgm_client.retry import Retrying
from v2bgm_client.stream import build_stream_request, stream_events
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from tests.reliability.probes import stub_pids, wait_until_composing
from tests.reliability.servers import Launched, launch_serve, render_repository, stop_launched
from tests.reliability.test_faults import kill_pid, stderr_of
from v2bgm.serve import SHM_DIR, STUB_SHM_ARG, stub_args

pytestmark = [pytest.mark.server, pytest.mark.load]

STREAMS = 8
MUSIC_S = 12.0  # long enough to be composing when the stub dies
HEARD_WITHIN_S = 20.0
TIMEOUT_S = 900.0  # each stream's deadline: a restart and 8 compositions on 2 cores


@dataclass
class Watched:
    """One stream's events, with the time each arrived."""

    events: list = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: BaseException | None = None

    def first(self, kind: type) -> int | None:
        return next((i for i, e in enumerate(self.events) if isinstance(e, kind)), None)


@pytest.fixture
def launched(weights: Path, tmp_path: Path, monkeypatch) -> Iterator[Launched]:
    models = (contract.CAPTIONER_MODEL, contract.COMPOSER_MODEL, contract.STREAM_MODEL)
    slots = {"slots": {"KIND_CPU": STREAMS, "KIND_GPU": STREAMS}}
    repo = render_repository(tmp_path / "repo", models, {contract.COMPOSER_MODEL: slots})
    monkeypatch.setenv("V2BGM_STARTING_FILE", str(tmp_path / "starting"))
    launched = launch_serve(weights, repo, tmp_path / "serve.err")
    yield launched
    stop_launched(launched.process, 120)


def watch(url: str, index: int, into: Watched) -> None:
    frames = np.random.default_rng(index).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    request = build_stream_request(frames, 1.0, SoundtrackOptions(duration_s=MUSIC_S))
    try:
        for event in stream_events(url, request, TIMEOUT_S, rng=random.Random(index)):
            into.events.append(event)
            into.times.append(time.monotonic())
    except BaseException as exc:  # reported by the test
        into.error = exc


def in_flight(watched: list[Watched]) -> None:
    """Until every stream has started (the server took it)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not all(w.first(events.Started) is not None or w.error for w in watched):
        assert time.monotonic() < deadline, "the streams never started"
        time.sleep(0.1)
    assert not [w.error for w in watched if w.error]


def test_a_killed_composer_stub_with_8_streams_in_flight(launched: Launched, monkeypatch):
    # the restart of the tiny models can take minutes on a busy 2-core machine: the streams'
    # clients wait for it longer than a user's default (v2bgm_client.retry.RESTART_WAIT_S)
    monkeypatch.setenv("V2BGM_RESTART_WAIT_S", str(TIMEOUT_S))
    first_server = launched.server_pid
    regions = [SHM_DIR / Path(a[STUB_SHM_ARG]).name for a in stub_args(first_server).values()]
    assert regions and all(r.exists() for r in regions)
    watched = [Watched() for _ in range(STREAMS)]
    workers = [
        threading.Thread(target=watch, args=(launched.grpc_url, i, w))
        for i, w in enumerate(watched)
    ]
    for worker in workers:
        worker.start()
    in_flight(watched)
    wait_until_composing(launched.metrics_port)
    assert not any(w.first(events.Composed) is not None for w in watched), "too late"
    kill_pid(first_server, contract.COMPOSER_MODEL)
    killed_at = time.monotonic()

    said = [launched.next_line()]  # perhaps the stubs it cleaned up first, then ready again
    while "ready again" not in said[-1] and len(said) < 5 and said[-1]:
        assert "killed stubs left running" in said[-1], said
        said.append(launched.next_line())
    assert "ready again" in said[-1], (said, stderr_of(launched))
    for worker in workers:
        worker.join(TIMEOUT_S)
    assert not any(w.is_alive() for w in workers)
    assert "died: restarting tritonserver" in stderr_of(launched)

    for i, w in enumerate(watched):
        assert w.error is None, (i, w.error)
        notice = w.first(Retrying)
        assert notice is not None, (i, "the stream never heard of the crash")
        assert w.times[notice] - killed_at <= HEARD_WITHIN_S, (i, w.times[notice] - killed_at)
        assert w.events[notice].code == "UNAVAILABLE"
        assert w.first(events.Composed) > notice  # no audio before the crash: it was retried
        starts = [e for e in w.events if isinstance(e, events.Started)]
        retries = [e for e in w.events if isinstance(e, Retrying)]
        assert {s.seed for s in starts} == {starts[0].seed} == {r.seed for r in retries}
        (composed,) = [e for e in w.events if isinstance(e, events.Composed)]
        assert composed.seed == starts[0].seed and composed.audio.size > 0
        assert isinstance(w.events[-1], events.Done)

    heard = [w.times[w.first(Retrying)] - killed_at for w in watched]
    ended = [w.times[-1] - killed_at for w in watched]
    attempts = [sum(isinstance(e, Retrying) for e in w.events) for w in watched]
    print(f"heard of the crash {min(heard):.1f}-{max(heard):.1f} s after the kill; all done "
          f"{max(ended):.0f} s after it; retries per stream {attempts}")  # fmt: skip
    assert not any(r.exists() for r in regions)  # the dead server's stub regions are gone
    second_server = launched.server_pid
    assert second_server != first_server and stub_pids(first_server) == []
    launched.process.send_signal(signal.SIGTERM)
    assert launched.process.wait(120) == 0, stderr_of(launched)
    assert stub_pids(second_server) == []
