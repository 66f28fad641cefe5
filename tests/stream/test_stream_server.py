"""`video_to_music_stream` on a real tritonserver over real gRPC, called with raw tritonclient:
the events in order, option errors, and cancellation mid-stage-1."""

from __future__ import annotations

import json
import queue
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from v2bgm_contract import interface as contract

from v2bgm.serve import TritonServer

pytestmark = pytest.mark.server
WAIT_S = 600.0  # tiny models on a busy 2-core machine
CANCEL_STOPS_WITHIN_S = 1.0
MUSIC_S = 1.0  # short: every second of music is seconds of stage 1 here
LONG_MUSIC_S = 120.0  # stage 1 runs for minutes: a cancel lands mid-stage-1


def tensor(name: str, value: np.ndarray) -> grpcclient.InferInput:
    spec = next(t for t in contract.STREAM.inputs if t.name == name)
    value = np.asarray(value, dtype=spec.numpy_dtype)[None]
    t = grpcclient.InferInput(name, list(value.shape), spec.datatype)
    t.set_data_from_numpy(value)
    return t


def request(frames: int = 3, **options: object) -> list[grpcclient.InferInput]:
    video = np.random.default_rng(frames).integers(0, 256, (frames, 64, 96, 3), dtype=np.uint8)
    inputs = [tensor("FRAMES", video), tensor("FPS", [1.0])]
    return inputs + [tensor(name, value) for name, value in options.items()]


class Stream:
    """One gRPC stream: send a request, read its events (and errors) as they come."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.answers: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def send(self, inputs: list[grpcclient.InferInput]) -> None:
        self.client.async_stream_infer(contract.STREAM_MODEL, inputs)

    def events(self) -> Iterator[tuple[dict, np.ndarray | None]]:
        while True:
            result, error = self.answers.get(timeout=WAIT_S)
            if error is not None:
                raise error
            event = json.loads(result.as_numpy("EVENT")[0, 0])
            yield event, result.as_numpy("AUDIO")
            if event["type"] == "done":
                return

    def cancel(self) -> None:
        self.client.stop_stream(cancel_requests=True)

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@pytest.fixture
def stream(grpc_url: str) -> Iterator[Stream]:
    s = Stream(grpc_url)
    yield s
    s.close()


def metrics(server: TritonServer) -> dict[str, float]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


def series(values: dict[str, float], name: str, model: str, **labels: str) -> float:
    wanted = [f'model="{model}"', *(f'{k}="{v}"' for k, v in labels.items())]
    matches = [
        v for k, v in values.items() if k.startswith(name + "{") and all(w in k for w in wanted)
    ]
    assert len(matches) == 1, (name, model, labels)
    return matches[0]


def test_events_arrive_in_order_with_their_content(stream):
    stream.send(request(SEED=[41], CANDIDATES=[2], DURATION_S=[MUSIC_S]))
    got = list(stream.events())
    kinds = [event["type"] for event, _ in got]
    # started, caption, then per candidate progress... audio, and done last.
    assert kinds[:2] == ["started", "caption"] and kinds[-1] == "done"
    audio_at = [i for i, kind in enumerate(kinds) if kind == "audio"]
    assert len(audio_at) == 2
    assert set(kinds[2 : audio_at[0]]) == {"progress"}
    assert set(kinds[audio_at[0] + 1 : audio_at[1]]) == {"progress"}

    started, caption = got[0][0], got[1][0]
    assert started == {
        "type": "started", "seed": 41, "candidates": 2, "duration_s": MUSIC_S, "cuts_s": []
    }  # fmt: skip
    assert caption["caption"].strip() and caption["tags"].strip() and caption["lyrics"] == ""

    for candidate, index in enumerate(audio_at):
        event, audio = got[index]
        assert (event["candidate"], event["seed"]) == (candidate, 41 + candidate)
        assert audio.dtype == np.float32 and audio.shape == (
            1,
            round(MUSIC_S * event["sample_rate"]),
        )
        assert np.abs(audio).max() > 0 and event["audio_s"] == pytest.approx(MUSIC_S)
        assert set(event["timings"]) == {"stage1", "stage2", "decode"}
        assert event["sections"] == [{"label": "[verse]", "start_s": 0.0, "end_s": MUSIC_S}]
    first, second = got[audio_at[0]][1], got[audio_at[1]][1]
    assert not np.array_equal(first, second)  # two candidates, two soundtracks

    progress = [e for e, _ in got if e["type"] == "progress"]
    stages = [p["stage"] for p in progress if p["candidate"] == 0]
    assert stages[0] in ("queued", "stage1") and "stage1" in stages  # others may be too quick
    order = {"queued": 0, "stage1": 1, "stage2": 2, "decode": 3}
    assert [order[s] for s in stages] == sorted(order[s] for s in stages)
    for p in progress:
        assert 0.0 <= p["fraction"] <= 1.0
        assert p["music_s"] == pytest.approx(p["fraction"] * MUSIC_S)
    # The second candidate has the first one's stage costs to go by.
    assert any(p["eta_s"] is not None and p["eta_s"] >= 0 for p in progress if p["candidate"] == 1)
    done = got[-1][0]
    assert {"captioning", "stage1", "stage2", "decode", "total"} <= set(done["timings"])


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        ({"CANDIDATES": [contract.MAX_CANDIDATES + 1]}, ["CANDIDATES", "[1, 4]"]),
        ({"DURATION_S": [900.0]}, ["DURATION_S is 900 s", "600 s", "the operator's setting"]),
        ({"DURATION_S": [1300.0]}, ["DURATION_S", "1200"]),
        ({"FIXED_TAGS": [b"jaz"]}, ["jaz", "'jazz'"]),
    ],
)
def test_bad_options_end_the_stream_with_one_clear_error(stream, options, needles):
    stream.send(request(**options))
    seen = []
    with pytest.raises(Exception) as err:
        for event, _ in stream.events():
            seen.append(event)
    # a typed error event (Triton's stream carries no status per response), then the error,
    # whose message opens with the same status for raw callers
    *_, last = seen
    assert last["type"] == "error" and last["code"] == "INVALID_ARGUMENT"
    assert "INVALID_ARGUMENT: " in str(err.value)
    for needle in needles:
        assert needle in str(err.value) and needle in last["message"]


def test_cancel_mid_stage1_stops_frees_and_serves_the_next(grpc_url, server):
    before = metrics(server)
    doomed = Stream(grpc_url)
    doomed.send(request(SEED=[1], DURATION_S=[LONG_MUSIC_S]))
    for event, _ in doomed.events():
        if event["type"] == "progress" and event["stage"] == "stage1" and event["fraction"] > 0:
            break
    doomed.cancel()
    cancelled_at = time.monotonic()
    while series(metrics(server), "v2bgm_requests_in_generation", contract.COMPOSER_MODEL):
        assert time.monotonic() - cancelled_at < CANCEL_STOPS_WITHIN_S, "still composing"
        time.sleep(0.02)
    doomed.close()

    fresh = Stream(grpc_url)
    try:
        fresh.send(request(frames=1, SEED=[2]))  # no DURATION_S: the video's, 1 frame at 1/s
        got = list(fresh.events())
    finally:
        fresh.close()
    assert got[0][0]["duration_s"] == 1.0
    (composed, audio), done = got[-2], got[-1]
    assert (composed["type"], done[0]["type"]) == ("audio", "done")
    assert audio.shape == (1, composed["sample_rate"])

    after = metrics(server)
    for model in (
        contract.STREAM_MODEL,
        contract.CAPTIONER_MODEL,
        contract.COMPOSER_MODEL,
        contract.PIPELINE_MODEL,
    ):
        assert series(after, "nv_inference_pending_request_count", model) == 0, model
    for model in (contract.CAPTIONER_MODEL, contract.COMPOSER_MODEL):
        assert series(after, "v2bgm_requests_in_generation", model) == 0, model
    reason = {"reason": "cancelled"}
    cancelled = series(after, "v2bgm_failures_total", contract.COMPOSER_MODEL, **reason)
    assert (
        cancelled - series(before, "v2bgm_failures_total", contract.COMPOSER_MODEL, **reason) == 1
    )
    internal = {"reason": "internal"}
    assert series(after, "v2bgm_failures_total", contract.COMPOSER_MODEL, **internal) == series(
        before, "v2bgm_failures_total", contract.COMPOSER_MODEL, **internal
    )
    # the streaming model's own: one cancelled stream, one answered, none in flight, and its
    # waits for a first event (both streams) and a first audio (the second only)
    stream_model = contract.STREAM_MODEL
    assert (
        series(after, "v2bgm_failures_total", stream_model, **reason)
        - series(before, "v2bgm_failures_total", stream_model, **reason)
        == 1
    )
    assert (
        series(after, "v2bgm_requests_total", stream_model)
        - series(before, "v2bgm_requests_total", stream_model)
        == 2
    )
    assert series(after, "v2bgm_requests_in_generation", stream_model) == 0
    assert series(after, "v2bgm_model_ready", stream_model) == 1
    for name, more in (("first_event", 2), ("first_audio", 1)):
        count = f"v2bgm_stream_{name}_seconds_count"
        assert series(after, count, stream_model) - series(before, count, stream_model) == more


def test_cancel_during_captioning_stops_waiting_at_once(grpc_url, server):
    """The captioner cannot be stopped mid-forward, but the stream need not wait for it: it ends
    (cancelled) while the captioner is still working, and no composition starts."""
    before = metrics(server)
    composed_before = series(before, "v2bgm_requests_total", contract.COMPOSER_MODEL)
    captioned_before = series(before, "v2bgm_requests_total", contract.CAPTIONER_MODEL)
    # the interface's largest video: seconds of captioning even for the tiny model on a CPU
    shape = (contract.MAX_FRAMES, contract.MAX_FRAME_SIDE, contract.MAX_FRAME_SIDE, 3)
    video = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    doomed = Stream(grpc_url)
    doomed.send([tensor("FRAMES", video), tensor("FPS", [1.0]), tensor("SEED", [3])])
    event, _ = next(doomed.events())
    assert event["type"] == "started"  # captioning now
    doomed.cancel()
    cancelled_at = time.monotonic()
    while series(metrics(server), "v2bgm_requests_in_generation", contract.STREAM_MODEL):
        assert time.monotonic() - cancelled_at < CANCEL_STOPS_WITHIN_S, "still waiting"
        time.sleep(0.02)
    # the stream ended before its caption was answered...
    captioned = series(metrics(server), "v2bgm_requests_total", contract.CAPTIONER_MODEL)
    assert captioned == captioned_before
    doomed.close()
    deadline = time.monotonic() + WAIT_S  # ...which came later, and was dropped
    while series(metrics(server), "v2bgm_requests_total", contract.CAPTIONER_MODEL) == captioned:
        assert time.monotonic() < deadline, "the caption never came"
        time.sleep(0.1)
    after = metrics(server)  # its late answer was dropped: nothing was composed for it
    assert series(after, "v2bgm_requests_total", contract.COMPOSER_MODEL) == composed_before


@pytest.mark.parametrize("options", [{"DURATION_S": [MUSIC_S]}, {"CANDIDATES": [9]}])
def test_the_final_flag_comes_alone_after_the_last_event(grpc_url, options):
    """`done` (or the error) is an ordinary response and Triton's final flag follows alone:
    Triton 2.51 leaks a stream whose caller cancels while the response carrying the final flag
    is being written (stream.FINAL_FLAG_DELAY_S). A caller that asks for empty final responses
    sees it; other callers see `done` last, as before."""
    client = grpcclient.InferenceServerClient(grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer(
            contract.STREAM_MODEL, request(**options), enable_empty_final_response=True
        )
        got = []  # (event type, or "error" / "empty"; the response's final flag)
        while not got or not got[-1][1]:
            result, error = answers.get(timeout=WAIT_S)
            if error is not None:
                got.append(("triton error", False))
                continue
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            kind = json.loads(result.as_numpy("EVENT")[0, 0])["type"] if response.outputs else ""
            got.append((kind or "empty", final))
    finally:
        client.stop_stream()
        client.close()
    ends = (
        [("done", False)]
        if "DURATION_S" in options
        else [("error", False), ("triton error", False)]
    )
    assert got[-len(ends) - 1 :] == [*ends, ("empty", True)], got
    assert all(not final for _, final in got[:-1])
