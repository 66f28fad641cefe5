"""A video in, N videos with soundtracks out, through the streaming model.

The steps around the call are shared by the blocking `make_soundtrack` here and the asyncio one
in `v2bgm_client.aio`: `prepare` (check the options and outputs, probe, sample, build the
request), `Collected` (what the event stream said) and `finish` (place the music over the
original sound, normalise, mux, keep the music). Outputs are written only after the stream is
complete, each atomically: a failure leaves none behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from v2bgm_contract import events

from . import audio
from .api import DEFAULT_URL, request_duration
from .connection import TlsOptions
from .cuts import resolve_cuts
from .errors import ServerError
from .mux import MuxReport, check_output_path, mux_audio, resample
from .options import SoundtrackOptions
from .retry import Retrying
from .stream import build_stream_request, stream_events
from .video import VideoInfo, probe, sample_frames

OnEvent = Callable[[events.Event | Retrying], None]


def output_paths(output: str | Path, candidates: int) -> list[Path]:
    """OUTPUT itself for one candidate; OUTPUT's stem with -1, -2, ... for several."""
    output = Path(output)
    if candidates == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, candidates + 1)]


def audio_path(output: Path, fmt: str) -> Path:
    return output.with_suffix(f".{fmt}")


@dataclass(frozen=True)
class Prepared:
    input_path: Path
    outputs: list[Path]
    info: VideoInfo
    request: dict[str, np.ndarray]
    frames_sent: int
    timings: dict[str, float]
    started: float  # time.perf_counter() when prepare began
    cuts_source: str = "none"  # where the request's cuts came from: cuts.SOURCES


def prepare(input_path: str | Path, output: str | Path, options: SoundtrackOptions) -> Prepared:
    """Everything before the server: raises VideoError, MuxError or InvalidInput early. Cuts
    "auto" are found in the video here (timings' detect_cuts)."""
    clock = time.perf_counter()
    options.check()
    outputs = output_paths(output, options.candidates)
    for path in outputs:
        check_output_path(path, input_path)  # fail before the slow part, not after
    info = probe(input_path)
    sampled = sample_frames(input_path, info=info)
    video_s = request_duration(info.duration_s)
    music_s = options.duration_s if options.duration_s is not None else video_s
    cuts, source, detect_s = resolve_cuts(options.cuts_s, input_path, info, music_s)
    request = build_stream_request(
        sampled.frames, sampled.fps, replace(options, cuts_s=cuts), video_s
    )
    read_s = time.perf_counter() - clock - detect_s
    return Prepared(
        Path(input_path),
        outputs,
        info,
        request,
        len(sampled.frames),
        {"read_video": read_s, "detect_cuts": detect_s},
        clock,
        source,
    )


@dataclass
class Collected:
    """The stream's events, gathered."""

    started: events.Started | None = None
    captioned: events.Captioned | None = None
    composed: list[events.Composed] = field(default_factory=list)
    done: events.Done | None = None

    def add(self, event: events.Event | Retrying) -> None:
        if isinstance(event, Retrying):  # the events start over
            self.started, self.captioned, self.composed, self.done = None, None, [], None
        elif isinstance(event, events.Started):
            self.started = event
        elif isinstance(event, events.Captioned):
            self.captioned = event
        elif isinstance(event, events.Composed):
            self.composed.append(event)
        elif isinstance(event, events.Done):
            self.done = event

    def check(self, candidates: int) -> None:
        if self.started is None or self.captioned is None or self.done is None:
            raise ServerError("malformed server response: the stream ended early")
        if sorted(c.candidate for c in self.composed) != list(range(candidates)):
            raise ServerError(
                f"malformed server response: {len(self.composed)} soundtracks, "
                f"{candidates} asked for"
            )


@dataclass(frozen=True)
class Output:
    candidate: int
    seed: int
    path: Path
    audio_path: Path | None  # the music alone (--keep-audio)
    loudness_lufs: float  # of the track as muxed (before the audio codec)
    mux: MuxReport
    sections: list[dict] = field(default_factory=list)  # the plan this music follows


@dataclass(frozen=True)
class SoundtrackResult:
    input_path: Path
    caption: str
    tags: str
    lyrics: str
    seed: int  # of the first candidate; candidate i used seed + i
    music_s: float
    sample_rate: int  # the server's
    frames_sent: int
    mode: str
    target_lufs: float
    outputs: list[Output]
    # seconds: read_video, detect_cuts, captioning, stage1, ..., server, write, total
    timings: dict[str, float]
    cuts_s: list[float] = field(default_factory=list)  # the picture's cuts the music follows
    cuts_source: str = "none"  # "auto" (found in the video), "given" or "none": cuts.SOURCES

    @property
    def output_path(self) -> Path:
        return self.outputs[0].path

    def report(self) -> dict:
        """JSON-ready: what `v2bgm --json` prints."""
        data = asdict(self)
        data["input_path"] = str(self.input_path)
        data["outputs"] = [
            {
                "candidate": o.candidate,
                "seed": o.seed,
                "path": str(o.path),
                "audio_path": None if o.audio_path is None else str(o.audio_path),
                "loudness_lufs": round(o.loudness_lufs, 2),
                "video_codec": o.mux.video_codec,
                "audio_codec": o.mux.audio_codec,
                "audio_sample_rate": o.mux.sample_rate,
                "audio_channels": o.mux.channels,
                "reencoded": o.mux.reencoded,
                "note": o.mux.note,
                "sections": o.sections,
            }
            for o in self.outputs
        ]
        data["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return data


def finish(
    prepared: Prepared, collected: Collected, options: SoundtrackOptions
) -> SoundtrackResult:
    """Write every output (music placed, normalised, muxed) and, if asked, the music alone."""
    collected.check(options.candidates)
    assert collected.started and collected.captioned and collected.done
    clock = time.perf_counter()
    info = prepared.info
    rate = options.sample_rate
    length = round(info.duration_s * rate)
    original = None
    if options.mode != "replace":
        original = audio.read_original(prepared.input_path, info, rate)
    outputs = []
    for composed, path in zip(
        sorted(collected.composed, key=lambda c: c.candidate), prepared.outputs, strict=True
    ):
        assert composed.audio is not None
        music = resample(composed.audio.astype(np.float32), composed.sample_rate, rate)
        track = audio.place(music, original, rate, options.mode, options.lufs, length)
        report = mux_audio(prepared.input_path, track, rate, path, info=info, out_rate=rate)
        kept = None
        if options.keep_audio:
            alone = audio.place(music, None, rate, "replace", options.lufs, length)
            kept = audio.write_audio(audio_path(path, options.keep_audio), alone, rate)
        outputs.append(
            Output(
                composed.candidate,
                composed.seed,
                path,
                kept,
                audio.loudness(track, rate),
                report,
                list(composed.sections),
            )
        )
    server = collected.done.timings
    timings = {
        **prepared.timings,
        **{k: v for k, v in server.items() if k != "total"},  # the server's stages
        "server": server.get("total", 0.0),
        "write": time.perf_counter() - clock,
        "total": time.perf_counter() - prepared.started,
    }
    first = collected.composed[0]
    return SoundtrackResult(
        input_path=prepared.input_path,
        caption=collected.captioned.caption,
        tags=collected.captioned.tags,
        lyrics=collected.captioned.lyrics,
        seed=collected.started.seed,
        music_s=first.audio_s,
        sample_rate=first.sample_rate,
        frames_sent=prepared.frames_sent,
        mode=options.mode,
        target_lufs=options.lufs,
        outputs=outputs,
        timings=timings,
        cuts_s=list(collected.started.cuts_s),
        cuts_source=prepared.cuts_source,
    )


def make_soundtrack(
    input_path: str | Path,
    output: str | Path,
    url: str = DEFAULT_URL,
    options: SoundtrackOptions | None = None,
    on_event: OnEvent | None = None,
    timeout_s: float | None = None,
    tls: TlsOptions | None = None,
) -> SoundtrackResult:
    """Blocking: the video at `input_path` with music, written to `output` (or, for several
    candidates, OUTPUT-1, OUTPUT-2, ...). `on_event` sees every stream event as it arrives
    (e.g. a progress bar); `tls` connects over TLS (None: plaintext); `timeout_s` None waits
    `api.default_timeout_s` of the music asked for. Raises VideoError,
    MuxError, ServerError (TlsError for an unusable certificate) or InvalidInput."""
    options = options or SoundtrackOptions()
    prepared = prepare(input_path, output, options)
    collected = Collected()
    for event in stream_events(url, prepared.request, timeout_s, tls):
        collected.add(event)
        if on_event is not None:
            on_event(event)
    return finish(prepared, collected, options)
