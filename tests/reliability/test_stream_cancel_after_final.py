"""A caller that cancels its stream right after the final response, with several streams in
flight, through `v2bgm-serve` (raw tritonclient, as a backend service might call it): the server
still serves, and SIGTERM still ends it cleanly (exit 0 within the exit timeout, no stub left).

Triton 2.51 leaks a stream cancelled while the response carrying its final flag is being
written, and the server then waits out its exit timeout (1 in 3 runs of these steps did): the
streaming model sends that flag alone, after `done` (v2bgm.triton.stream.FINAL_FLAG_DELAY_S;
docs/reliability.md)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.reliability.probes import stub_pids
from tests.reliability.test_shutdown import EXIT_MARGIN_S, launch  # noqa: F401 (fixture)
from tests.stream.test_stream_server import Stream, request

pytestmark = [pytest.mark.server, pytest.mark.load]  # make load: minutes of streams

EXIT_TIMEOUT_S = 60
STREAMS = 4
ROUNDS = 4


def cancel_after_done(url: str, seed: int, got: list) -> None:
    stream = Stream(url)
    try:
        stream.send(request(frames=1, SEED=[seed]))
        kinds = [event["type"] for event, _ in stream.events()]
        stream.cancel()  # at once: between the final response and the stream's close
        got.append(kinds)
    except Exception as exc:  # reported by the test
        got.append(exc)
    finally:
        stream.client.close()


def test_cancel_right_after_the_final_response_leaves_a_server_that_stops_cleanly(launch):  # noqa: F811
    served = launch(f"--exit-timeout-secs={EXIT_TIMEOUT_S}")
    for round_ in range(ROUNDS):
        got: list = []
        threads = [
            threading.Thread(target=cancel_after_done, args=(served.grpc_url, 10 * round_ + i, got))
            for i in range(STREAMS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        assert len(got) == STREAMS and all(kinds[-1] == "done" for kinds in got), got
    # still serving, normally
    last: list = []
    cancel_after_done(served.grpc_url, 99, last)
    assert last[0][-1] == "done", last
    start = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(EXIT_TIMEOUT_S + EXIT_MARGIN_S) == 0
    assert time.monotonic() - start < EXIT_TIMEOUT_S, "tritonserver waited out its exit timeout"
    assert stub_pids(served.server_pid) == []
