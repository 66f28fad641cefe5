"""Overload on the loopback: twice the tiny models' measured capacity for a few seconds against a
server with small queues. Every request is answered (a result or UNAVAILABLE at once), none
hangs, accepted ones wait a bounded time, and the client's retries get a burst through."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from v2bgm_client import api as client_api
from v2bgm_client import interface as api
from v2bgm_client.errors import ServerError

from tests.reliability.servers import render_repository, start_server
from v2bgm.serve import TritonServer
from v2bgm.triton.model_configs import QueuePolicy

# Kept out of `make test` for now: on a 2-core machine shared with other CPU-heavy work both
# tests failed their latency bounds (issue 10 notes); `make load` runs them.
pytestmark = [pytest.mark.server, pytest.mark.load]

LOAD_S = 5.0  # how long the burst lasts
LOAD_FACTOR = 2.0  # times the measured capacity
MAX_REQUESTS = 24  # whatever the machine's speed, the test stays bounded
MIN_REQUESTS = 6  # at twice the capacity, enough to overflow one running and one queued
QUEUE_SIZE = 1  # per model: small, so that twice the capacity overflows it
DURATION_S = 1.0  # of music per request: the shortest the interface allows


@pytest.fixture(scope="module")
def server(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    tmp = tmp_path_factory.mktemp("overload")
    # The queue timeout is set per request below (the tiny models' speed depends on the machine).
    queue = QueuePolicy(max_size=QUEUE_SIZE, timeout_us=60_000_000)
    repo = render_repository(
        tmp / "repo",
        (api.CAPTIONER_MODEL, api.COMPOSER_MODEL, api.PIPELINE_MODEL),
        {api.CAPTIONER_MODEL: queue, api.COMPOSER_MODEL: queue},
    )
    triton = start_server(repo, weights, tmp / "tritonserver.log")
    yield triton
    assert triton.stop() == 0


def request(seed: int) -> dict[str, np.ndarray]:
    frames = np.random.default_rng(seed).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    return client_api.build_request(frames, 1.0, DURATION_S, seed)


def test_twice_the_capacity_is_answered_at_once_or_in_bounded_time(server):
    url = f"127.0.0.1:{server.grpc_port}"
    client = grpcclient.InferenceServerClient(url)
    outputs = [grpcclient.InferRequestedOutput(s.name) for s in api.PIPELINE.outputs]

    def call(seed: int) -> None:
        client.infer(api.PIPELINE_MODEL, client_api.infer_inputs(request(seed)), outputs=outputs)

    call(0)  # warm-up
    laps = []
    for seed in (1, 2):  # the faster of two: another process may share the CPU for a while
        start = time.monotonic()
        call(seed)
        laps.append(time.monotonic() - start)
    service_s = min(laps)  # one request alone: capacity is 1 / service_s
    interval = service_s / LOAD_FACTOR
    count = min(MAX_REQUESTS, max(MIN_REQUESTS, math.ceil(LOAD_S / interval)))
    # Accepted requests wait at most one queue's worth per model and then run: bounded.
    bound_s = 2 * (QUEUE_SIZE + 1) * service_s + 5.0

    answers: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def callback(i: int, sent: float, result: object, error: object) -> None:
        code = "OK" if error is None else error.status().rsplit(".", 1)[-1]
        answers[i] = (code, time.monotonic() - sent)
        if len(answers) == count:
            done.set()

    for i in range(count):
        sent = time.monotonic()
        client.async_infer(
            api.PIPELINE_MODEL,
            client_api.infer_inputs(request(100 + i)),
            callback=lambda result, error, i=i, sent=sent: callback(i, sent, result, error),
            outputs=outputs,
            client_timeout=bound_s * 4,  # a hang shows as DEADLINE_EXCEEDED, not as a stuck test
        )
        time.sleep(interval)
    assert done.wait(bound_s * 2), f"{count - len(answers)} of {count} requests unanswered"
    client.close()

    codes = Counter(code for code, _ in answers.values())
    print(f"service {service_s:.2f} s, sent {count}, answered {len(answers)}: {dict(codes)}")
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes["OK"] >= 1 and codes["UNAVAILABLE"] >= 1, codes  # served, and shed the excess
    rejected = [s for code, s in answers.values() if code == "UNAVAILABLE"]
    accepted = [s for code, s in answers.values() if code == "OK"]
    assert max(accepted) <= bound_s, (accepted, bound_s)
    # A full queue rejects at once; a queued request that outlived its timeout may take longer.
    assert min(rejected) < 0.5, rejected
    assert server.is_ready()


def test_client_retries_an_overloaded_server_until_served(server):
    url = f"127.0.0.1:{server.grpc_port}"
    burst = 3  # more than the queues and the instances hold at once: some are rejected first
    results: list[object] = [None] * burst

    def one(i: int) -> None:
        try:
            outputs = client_api.infer(url, request(200 + i), 120.0, rng=random.Random(i))
            results[i] = client_api.parse_response(outputs)
        except ServerError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert all(isinstance(r, client_api.Response) for r in results), results
