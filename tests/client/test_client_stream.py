"""The streaming call's wire format, options, events and batch bookkeeping, without a server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from v2bgm_client.batch import batch_outputs, is_done, list_inputs
from v2bgm_client.errors import ServerError, VideoError
from v2bgm_client.options import SoundtrackOptions
from v2bgm_client.soundtrack import Collected, output_paths
from v2bgm_client.stream import build_stream_request, parse_stream_result
from v2bgm_contract import events
from v2bgm_contract import interface as contract

FRAMES = np.zeros((3, 32, 48, 3), np.uint8)


def test_request_follows_the_interface():
    options = SoundtrackOptions(
        seed=9, candidates=2, vocals=True, hint="calm", tags=("jazz",), cuts_s=(0.5, 1.25)
    )
    request = build_stream_request(FRAMES, 1.0, options, duration_s=2.5)
    specs = {spec.name: spec for spec in contract.STREAM.inputs}
    assert set(request) == set(specs)  # every input, optional ones included
    for name, value in request.items():
        assert value.dtype == specs[name].numpy_dtype and value.shape[0] == 1, name
    assert request["DURATION_S"][0, 0] == pytest.approx(2.5)
    assert request["CANDIDATES"][0, 0] == 2 and request["SEED"][0, 0] == 9
    assert request["FIXED_TAGS"][0].tolist() == [b"jazz"] and request["HINT"][0, 0] == b"calm"
    assert request["CUTS_S"][0].tolist() == [0.5, 1.25]


def test_request_defaults_leave_seed_to_the_server_and_duration_to_the_option():
    request = build_stream_request(FRAMES, 1.0, SoundtrackOptions(duration_s=4.0), 2.0)
    assert "SEED" not in request and "HINT" not in request and "FIXED_TAGS" not in request
    assert request["DURATION_S"][0, 0] == pytest.approx(4.0)  # the option beats the video's
    short = build_stream_request(FRAMES, 1.0, SoundtrackOptions(), 0.4)
    assert short["DURATION_S"][0, 0] == pytest.approx(contract.MIN_DURATION_S)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SoundtrackOptions(candidates=0), "candidates must be in [1, 4]"),
        (SoundtrackOptions(candidates=contract.MAX_CANDIDATES + 1), "candidates must be in"),
        (SoundtrackOptions(seed=-1), "SEED must be in"),
        (SoundtrackOptions(duration_s=1201.0), "DURATION_S must be in [1.0, 1200.0]"),
        (SoundtrackOptions(mode="louder"), "mode must be one of replace, mix, duck"),
        (SoundtrackOptions(lufs=3.0), "loudness target must be in [-40, -5] LUFS"),
        (SoundtrackOptions(lufs=float("nan")), "loudness target"),
        (SoundtrackOptions(keep_audio="mp3"), "keep-audio format must be one of flac, wav"),
        (SoundtrackOptions(sample_rate=32_000), "sample rate must be 44100 or 48000 Hz, got 32000"),
        (
            SoundtrackOptions(cuts_s=(1.0, 3.0)),
            "CUTS_S must lie strictly between 0 and the duration 2",
        ),
        (SoundtrackOptions(cuts_s=(1.5, 0.5)), "CUTS_S must be sorted"),
        (SoundtrackOptions(hint="x" * 600), "HINT is 600 bytes"),
        (SoundtrackOptions(tags=("a",) * 6), "FIXED_TAGS holds 6 tags"),
    ],
)
def test_options_are_checked_with_clear_messages(options, message):
    with pytest.raises(contract.InvalidInput) as err:
        build_stream_request(FRAMES, 1.0, options, 2.0)
    assert message in str(err.value)


class FakeResult:
    def __init__(self, **tensors: np.ndarray) -> None:
        self.tensors = tensors

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self.tensors.get(name)


def event_result(event: events.Event) -> FakeResult:
    tensors = {"EVENT": np.array([[events.encode(event)]], np.object_)}
    if isinstance(event, events.Composed):
        tensors["AUDIO"] = event.audio[None]
        tensors["SAMPLE_RATE"] = np.array([[event.sample_rate]], np.int32)
    return FakeResult(**tensors)


EVENTS = [
    events.Started(seed=5, candidates=1, duration_s=2.0),
    events.Captioned("A dog surfs.", "surf rock upbeat", "", 0.5),
    events.Progress(0, "stage1", 0.5, 1.0, 3.0, None),
    events.Progress(0, "stage2", 0.25, 0.5, 4.0, 2.5),
    events.Composed(0, 5, 16_000, 2.0, {"stage1": 3.0}, np.zeros(32_000, np.float32)),
    events.Done({"captioning": 0.5, "stage1": 3.0, "total": 6.0}),
]
ERROR = events.Error("INVALID_ARGUMENT", "CANDIDATES must be in [1, 4], got 9")


@pytest.mark.parametrize(
    "event", [*EVENTS, ERROR], ids=[type(e).__name__ for e in [*EVENTS, ERROR]]
)
def test_events_round_trip(event):
    parsed = parse_stream_result(event_result(event))
    assert parsed == event
    if isinstance(event, events.Composed):
        np.testing.assert_array_equal(parsed.audio, event.audio)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({}, "no EVENT"),
        ({"EVENT": np.array([[b"not json"]], np.object_)}, "not a stream event"),
        ({"EVENT": np.array([[b'{"type": "weather"}']], np.object_)}, "not a stream event"),
        ({"EVENT": np.array([[b'{"type": "done"}']], np.object_)}, "done event lacks"),
        (
            {"EVENT": np.array([[events.encode(EVENTS[4])]], np.object_)},
            "an audio event without valid AUDIO",
        ),
    ],
)
def test_malformed_events(tensors, message):
    with pytest.raises(ServerError, match=message):
        parse_stream_result(FakeResult(**tensors))


def test_newer_servers_may_add_fields():
    data = b'{"type": "done", "timings": {}, "extra": 1}'
    assert events.decode(data) == events.Done({})


def test_collected_stream_must_be_whole():
    collected = Collected()
    for event in EVENTS[:4]:
        collected.add(event)
    with pytest.raises(ServerError, match="ended early"):
        collected.check(1)
    collected.add(EVENTS[4])
    collected.add(EVENTS[5])
    collected.check(1)
    with pytest.raises(ServerError, match="1 soundtracks, 2 asked for"):
        collected.check(2)


def test_output_paths_per_candidate():
    assert output_paths("out/v.mp4", 1) == [Path("out/v.mp4")]
    assert output_paths("out/v.mp4", 3) == [Path(f"out/v-{i}.mp4") for i in (1, 2, 3)]


def test_batch_inputs_from_a_folder_or_a_list(tmp_path):
    for name in ("b.mp4", "a.MOV", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert list_inputs(tmp_path) == [tmp_path / "a.MOV", tmp_path / "b.mp4"]
    listing = tmp_path / "list.txt"
    listing.write_text("# videos\nb.mp4\n\n/abs/c.mkv\n")
    assert list_inputs(listing) == [tmp_path / "b.mp4", Path("/abs/c.mkv")]
    with pytest.raises(VideoError, match="no such folder or list file"):
        list_inputs(tmp_path / "missing")


def test_batch_outputs_and_resuming(tmp_path):
    inputs = [Path("x/a.mp4"), Path("y/b.mkv")]
    outputs = batch_outputs(inputs, tmp_path)
    assert outputs == [tmp_path / "a.mp4", tmp_path / "b.mkv"]
    assert batch_outputs(inputs, tmp_path, ".mp4")[1] == tmp_path / "b.mp4"
    with pytest.raises(VideoError, match="would both be written"):
        batch_outputs([Path("x/a.mp4"), Path("y/a.mp4")], tmp_path)
    assert not is_done(outputs)
    for path in outputs:
        path.write_bytes(b"done")
    assert is_done(outputs)


def test_progress_view_shows_stage_candidate_music_and_eta():
    import io

    from rich.console import Console
    from v2bgm_client.progress import ProgressView

    screen = io.StringIO()
    view = ProgressView(
        enabled=True,
        console=Console(file=screen, width=150, force_terminal=True, color_system=None),
    )
    with view:
        view.update("clip.mp4", events.Started(seed=1, candidates=2, duration_s=30.0))
        view.update("clip.mp4", events.Captioned("a [verse] of [bold]", "pop [x]", "", 0.1))
        view.update("clip.mp4", events.Progress(1, "stage1", 0.5, 15.0, 20.0, 75.0))
        view.bars.refresh()
    text = screen.getvalue()
    assert "clip.mp4: pop [x]  a [verse] of [bold]" in text  # brackets shown, not markup
    assert "clip.mp4 2/2: composing (stage 1)" in text
    assert "15.0/30.0 s of music" in text and "ETA 1:15" in text
    assert ProgressView(enabled=False).enabled is False  # --quiet, or no terminal


class FakeAioStream:
    """tritonclient.grpc.aio's response iterator: the results, then the end of the call."""

    def __init__(self, results: list[FakeResult], log: list[str]) -> None:
        self.results, self.log = list(results), log

    def __aiter__(self) -> FakeAioStream:
        return self

    async def __anext__(self) -> tuple[FakeResult, None]:
        if self.results:
            return self.results.pop(0), None
        self.log.append("ended")  # the server's status came: the call is over
        raise StopAsyncIteration

    def cancel(self) -> None:
        self.log.append("cancelled")


class FakeAioClient:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def stream_infer(self, requests, stream_timeout: float) -> FakeAioStream:
        return FakeAioStream([event_result(e) for e in EVENTS], self.log)

    async def close(self) -> None:
        self.log.append("closed")  # cancels a call still open


@pytest.mark.parametrize("leave_after", [None, 1])
def test_asyncio_stream_ends_its_call_before_closing(monkeypatch, leave_after):
    # Done arrives before the call's OK status: closing the channel right away would cancel a
    # finished request (Triton 2.51's streaming stub may then fail to shut down). A caller that
    # leaves early cancels on purpose.
    from v2bgm_client import aio

    log: list[str] = []
    monkeypatch.setattr(aio, "open_client", lambda module, url, tls: FakeAioClient(log))

    async def consume() -> list[events.Event]:
        got = []
        stream = aio.stream_events("h:1", {})
        async for event in stream:
            got.append(event)
            if len(got) == leave_after:
                break
        await stream.aclose()
        return got

    got = asyncio.run(consume())
    if leave_after is None:
        assert got == EVENTS and log == ["ended", "closed"]
    else:
        assert got == EVENTS[:1] and log == ["cancelled", "closed"]


def test_asyncio_stream_raises_the_typed_error_and_ends_the_call(monkeypatch):
    """An `error` event ends the request on the server: the client raises the same line as the
    ensemble's status, and lets the call end rather than cancelling it."""
    from v2bgm_client import aio

    log: list[str] = []
    client = FakeAioClient(log)
    monkeypatch.setattr(aio, "open_client", lambda module, url, tls: client)
    monkeypatch.setattr(
        client,
        "stream_infer",
        lambda requests, stream_timeout: FakeAioStream(
            [event_result(EVENTS[0]), event_result(ERROR)], log
        ),
    )

    async def consume() -> None:
        async for _ in aio.stream_events("h:1", {}):
            pass

    with pytest.raises(ServerError, match=r"^the server rejected the request: CANDIDATES must"):
        asyncio.run(consume())
    assert log == ["ended", "closed"]
