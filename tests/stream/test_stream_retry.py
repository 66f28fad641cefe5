"""The stream path's retries on a real tritonserver over real gRPC: a composer with one slot and
no line is busy while another stream composes, so a second stream ends with UNAVAILABLE after its
`started` event. Without retries the client raises it; with them it sends the request again with
the seed the server announced, and once the slot is free it gets the music that seed makes."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from v2bgm_client.errors import ServerError
from v2bgm_client.options import SoundtrackOptions
from v2bgm_client.retry import Retrying
from v2bgm_client.stream import build_stream_request, stream_events
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from tests.reliability.servers import render_repository, start_server
from tests.stream.test_stream_server import LONG_MUSIC_S, Stream, request
from v2bgm.serve import TritonServer
from v2bgm.triton.model_configs import QueuePolicy

pytestmark = pytest.mark.server
TIMEOUT_S = 600.0  # tiny models on a busy 2-core machine
MUSIC_S = 1.0


@pytest.fixture(scope="module")
def one_slot(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    tmp = tmp_path_factory.mktemp("stream-retry")
    no_line = QueuePolicy(max_size=0, timeout_us=0)  # the composer's max_waiting: 0
    repo = render_repository(
        tmp / "repo",
        (contract.CAPTIONER_MODEL, contract.COMPOSER_MODEL, contract.STREAM_MODEL),
        {contract.COMPOSER_MODEL: {"queue": no_line, "slots": {"KIND_CPU": 1, "KIND_GPU": 1}}},
    )
    triton = start_server(repo, weights, tmp / "tritonserver.log")
    yield triton
    assert triton.stop() == 0


def holder_composing(url: str) -> Stream:
    """A stream that holds the composer's one slot (minutes of stage 1) until cancelled."""
    holder = Stream(url)
    holder.send(request(SEED=[1], DURATION_S=[LONG_MUSIC_S]))
    for event, _ in holder.events():
        if event["type"] == "progress" and event["stage"] == "stage1" and event["fraction"] > 0:
            return holder
    raise AssertionError("the holder finished before it was composing")


def small_request(seed: int | None = None) -> dict[str, np.ndarray]:
    frames = np.random.default_rng(5).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    return build_stream_request(frames, 1.0, SoundtrackOptions(duration_s=MUSIC_S, seed=seed))


def test_busy_stream_is_retried_with_its_seed_and_makes_that_seeds_music(one_slot):
    url = f"127.0.0.1:{one_slot.grpc_port}"
    holder = holder_composing(url)
    try:
        with pytest.raises(ServerError, match="is unavailable") as refused:
            list(stream_events(url, small_request(), TIMEOUT_S, retry=False))
        assert refused.value.code == "UNAVAILABLE"

        seen: list = []
        retried = threading.Event()
        failure: list[BaseException] = []

        def consume() -> None:
            try:
                for event in stream_events(url, small_request(), TIMEOUT_S, rng=random.Random(3)):
                    seen.append(event)
                    if isinstance(event, Retrying):
                        retried.set()
            except BaseException as exc:  # reported below
                failure.append(exc)
                retried.set()

        worker = threading.Thread(target=consume)
        worker.start()
        assert retried.wait(TIMEOUT_S)
    finally:
        holder.cancel()  # the slot frees: the next attempt gets it
        holder.close()
    worker.join(TIMEOUT_S)
    assert not worker.is_alive() and not failure, failure

    notices = [e for e in seen if isinstance(e, Retrying)]
    starts = [e for e in seen if isinstance(e, events.Started)]
    assert notices and all(n.code == "UNAVAILABLE" for n in notices)
    assert len(starts) == len(notices) + 1  # the events start over after each notice
    seed = starts[0].seed
    assert {s.seed for s in starts} == {seed} and {n.seed for n in notices} == {seed}
    (composed,) = [e for e in seen if isinstance(e, events.Composed)]
    assert isinstance(seen[-1], events.Done) and composed.seed == seed

    # The same seed sent afresh, nothing else in flight: the same music.
    again = list(stream_events(url, small_request(seed), TIMEOUT_S, retry=False))
    (fresh,) = [e for e in again if isinstance(e, events.Composed)]
    assert fresh.audio is not None and composed.audio is not None
    np.testing.assert_array_equal(fresh.audio, composed.audio)
