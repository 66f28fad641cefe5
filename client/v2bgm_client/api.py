"""Score a video: sample its frames, ask the Triton ensemble for music, mux the music in.

`build_request` and `parse_response` are pure (numpy in, numpy out), so the wire format is
testable without a server; `infer` is the only function that talks to one.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from . import metrics
from .connection import TlsOptions, failure_hint, open_client
from .cuts import AUTO, resolve_cuts
from .errors import ServerError
from .mux import MuxReport, check_output_path, mux_audio
from .video import probe, sample_frames

if TYPE_CHECKING:
    from tritonclient.grpc import InferInput

DEFAULT_URL = "localhost:8001"
# How long a call waits by default: captioning, a wait for a slot and composing take minutes, and
# a composition's cost grows with its music (20 minutes of music: ~10 minutes of an H200's stage 1
# alone, more with every slot busy), so DEFAULT_TIMEOUT_S, or TIMEOUT_PER_MUSIC_S per second of
# music of all the soundtracks asked for (composed one after the other) when that is longer.
DEFAULT_TIMEOUT_S = 900.0
TIMEOUT_PER_MUSIC_S = 3.0
_MAX_SAMPLE_RATE = 384_000
# How gRPC words a connection failure (as opposed to a server that answered UNAVAILABLE).
_UNREACHABLE = ("failed to connect", "connection refused", "errors resolving", "dns", "socket")
_CONNECT_FAILED = "failed to connect"
# How gRPC words a connection that dropped while a call was in flight (the server crashed or
# restarted): the call was sent, so this is not "cannot reach".
_CONNECTION_LOST = ("stream removed", "socket closed", "connection reset")
# Overload: a full or timed-out Triton queue answers UNAVAILABLE at once (model_configs'
# QueuePolicy), as does a model still loading; `infer` retries those with jittered exponential
# backoff until its deadline. A server that cannot be reached is reported at once instead.
RETRY_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
RETRY_BASE_S = 0.5  # the first retry waits up to this long
RETRY_MAX_DELAY_S = 30.0  # no single wait is longer, however many retries came before


def backoff_delay(
    attempt: int,
    rng: random.Random,
    base_s: float = RETRY_BASE_S,
    cap_s: float = RETRY_MAX_DELAY_S,
) -> float:
    """Seconds to wait before retry number `attempt` (0-based): uniform in [0, min(cap, base *
    2**attempt)] ("full jitter"), so a burst of rejected clients does not come back in step."""
    return rng.uniform(0.0, min(cap_s, base_s * 2.0 ** min(attempt, 62)))


def is_retryable(status: str | None, message: str | None) -> bool:
    """Did the server answer "busy, try later" (as opposed to gRPC failing to connect)?"""
    code = (status or "").rsplit(".", 1)[-1]
    unreachable = any(marker in (message or "").lower() for marker in _UNREACHABLE)
    return code in RETRY_CODES and not unreachable


@dataclass(frozen=True)
class Response:
    """The ensemble's outputs, decoded."""

    caption: str
    tags: str
    lyrics: str  # empty: instrumental
    audio: np.ndarray  # float32 [N], mono, in [-1, 1]
    sample_rate: int
    sections: list[dict] = field(default_factory=list)  # the plan the music follows


@dataclass(frozen=True)
class ScoreResult:
    caption: str
    tags: str
    lyrics: str
    output_path: Path
    audio_s: float  # length of the music the server returned
    sample_rate: int  # the server's sample rate (the output track may be resampled)
    seed: int
    frames_sent: int
    mux: MuxReport
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, and "total"
    cuts_s: tuple[float, ...] = ()  # the picture's cuts sent with the request
    cuts_source: str = "none"  # "auto" (found in the video), "given" or "none": cuts.SOURCES
    sections: list[dict] = field(default_factory=list)  # the plan the music follows


def default_timeout_s(music_s: float, candidates: int = 1) -> float:
    """Seconds a call for `candidates` soundtracks of `music_s` seconds waits by default."""
    return max(DEFAULT_TIMEOUT_S, TIMEOUT_PER_MUSIC_S * music_s * candidates)


def request_timeout_s(request: Mapping[str, np.ndarray]) -> float:
    """`default_timeout_s` of a built request, the ensemble's or the stream's: its DURATION_S
    (the stream's default, the video's: frames / FPS) and CANDIDATES."""

    def first(name: str) -> float | None:
        value = request.get(name)
        return None if value is None else float(np.asarray(value).reshape(-1)[0])

    music_s = first(contract.DURATION_S.name)
    if music_s is None:
        frames, fps = request.get(contract.FRAMES.name), first(contract.FPS.name)
        known = frames is not None and fps
        music_s = min(frames.shape[1] / fps, contract.MAX_DURATION_S) if known else 0.0
    candidates = first(contract.CANDIDATES.name)
    return default_timeout_s(music_s, 1 if candidates is None else int(candidates))


def request_duration(video_duration_s: float) -> float:
    """DURATION_S for a video: its duration, but at least MIN_DURATION_S.

    Music for a shorter video is cut to the video when muxed. Longer than MAX_DURATION_S is
    rejected earlier, by `probe`; longer than a server's own cap (an operator's setting, at most
    MAX_DURATION_S), by that server.
    """
    return max(contract.MIN_DURATION_S, float(video_duration_s))


def random_seed() -> int:
    return random.SystemRandom().randint(contract.SEED_MIN, contract.SEED_MAX)


def build_request(
    frames: np.ndarray,
    fps: float,
    duration_s: float,
    seed: int,
    vocals: bool = False,
    hint: str = "",
    fixed_tags: tuple[str, ...] = (),
    cuts_s: tuple[float, ...] = (),
) -> dict[str, np.ndarray]:
    """The PIPELINE model's inputs, by tensor name, with the interface's dtypes and shapes (a
    batch of one: every model batches, so each tensor has a leading dimension of 1). `cuts_s`:
    the picture's cuts in seconds, inside the music (none: the music's own form).

    Raises `interface.InvalidInput` for anything the server would reject (tags outside YuE's
    vocabulary are the server's to check: the vocabulary ships with the models).
    """
    contract.check_frames(frames)
    contract.check_fps(fps)
    contract.check_duration(duration_s)
    contract.check_seed(seed)
    contract.check_fixed_tags(list(fixed_tags))
    values: dict[str, object] = {
        contract.FRAMES.name: frames,
        contract.FPS.name: [fps],
        contract.DURATION_S.name: [duration_s],
        contract.SEED.name: [seed],
        contract.VOCALS.name: [vocals],
    }
    if hint:
        contract.check_text(contract.HINT, hint.encode("utf-8"), contract.MAX_HINT_BYTES)
        values[contract.HINT.name] = [hint.encode("utf-8")]
    if fixed_tags:
        values[contract.FIXED_TAGS.name] = [t.encode("utf-8") for t in fixed_tags]
    if cuts_s:
        values[contract.CUTS_S.name] = contract.check_cuts(list(cuts_s), duration_s)
    request = {}
    for spec in contract.PIPELINE.inputs:
        if spec.name not in values:
            continue
        array = np.ascontiguousarray(values[spec.name], dtype=spec.numpy_dtype)
        _check_shape(spec, array, contract.InvalidInput)
        request[spec.name] = array[None]
    return request


def _check_shape(spec: contract.TensorSpec, array: np.ndarray, error: type[Exception]) -> None:
    ok = array.ndim == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
    )
    if not ok:
        raise error(f"{spec.name} must have shape {list(spec.shape)}, got {list(array.shape)}")


def parse_response(outputs: Mapping[str, np.ndarray | None]) -> Response:
    """Check and decode the PIPELINE model's outputs; ServerError if they break the interface."""
    arrays = {}
    for spec in contract.PIPELINE.outputs:
        array = outputs.get(spec.name)
        if array is None:
            raise ServerError(f"malformed server response: no {spec.name} output")
        array = np.asarray(array)
        if array.ndim == 0 or array.shape[0] != 1:
            raise ServerError(
                f"malformed server response: {spec.name} has shape {list(array.shape)}, "
                "expected a batch of one"
            )
        array = array[0]
        if spec.datatype != "BYTES" and array.dtype != spec.numpy_dtype:
            raise ServerError(
                f"malformed server response: {spec.name} is {array.dtype}, "
                f"expected {np.dtype(spec.numpy_dtype)}"
            )
        _check_shape(spec, array, ServerError)
        arrays[spec.name] = array
    audio = arrays[contract.AUDIO.name]
    if not np.all(np.isfinite(audio)):
        raise ServerError(f"malformed server response: {contract.AUDIO.name} holds NaN or infinity")
    rate = int(arrays[contract.SAMPLE_RATE.name][0])
    if not 0 < rate <= _MAX_SAMPLE_RATE:
        raise ServerError(f"malformed server response: {contract.SAMPLE_RATE.name} is {rate}")
    try:
        sections = json.loads(_text(arrays[contract.SECTIONS.name][0]))
    except ValueError:
        raise ServerError(
            f"malformed server response: {contract.SECTIONS.name} is not JSON"
        ) from None
    return Response(
        sections=sections,
        caption=_text(arrays[contract.CAPTION.name][0]),
        tags=_text(arrays[contract.TAGS.name][0]),
        lyrics=_text(arrays[contract.LYRICS.name][0]),
        audio=audio,
        sample_rate=rate,
    )


def _text(element: object) -> str:
    """A BYTES element as text; tritonclient gives bytes, a test may give str."""
    if isinstance(element, str):
        return element
    if isinstance(element, (bytes, np.bytes_)):
        return bytes(element).decode("utf-8", errors="replace")
    raise ServerError(f"malformed server response: text output holds {type(element).__name__}")


def infer_inputs(request: Mapping[str, np.ndarray]) -> list[InferInput]:
    """tritonclient InferInputs for a `build_request` result, in the interface's order."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for spec in contract.PIPELINE.inputs:
        if spec.name not in request:
            continue  # an optional input left out
        tensor = grpcclient.InferInput(spec.name, list(request[spec.name].shape), spec.datatype)
        tensor.set_data_from_numpy(request[spec.name])
        inputs.append(tensor)
    return inputs


def infer(
    url: str,
    request: Mapping[str, np.ndarray],
    timeout_s: float | None = None,
    rng: random.Random | None = None,
    tls: TlsOptions | None = None,
) -> dict[str, np.ndarray | None]:
    """Send `request` to the PIPELINE model at `url` (gRPC; over TLS when `tls` is given);
    return its outputs by name.

    Retries an overloaded server (RETRY_CODES) with `backoff_delay` waits; every attempt and wait
    fits in `timeout_s` altogether (None: `request_timeout_s`, from the music asked for).
    """
    if timeout_s is None:
        timeout_s = request_timeout_s(request)
    # Imported here so probing, sampling and muxing work without the gRPC stack loaded.
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    inputs = infer_inputs(request)
    outputs = [grpcclient.InferRequestedOutput(spec.name) for spec in contract.PIPELINE.outputs]
    client = open_client(grpcclient, url, tls)
    rng = rng or random.Random()
    deadline = time.monotonic() + timeout_s
    try:
        for attempt in itertools.count():
            try:  # metrics.track is a no-op unless metrics.enable() was called
                with metrics.track(contract.PIPELINE_MODEL):
                    result = client.infer(
                        contract.PIPELINE_MODEL,
                        inputs,
                        outputs=outputs,
                        client_timeout=max(deadline - time.monotonic(), 1e-3),
                    )
                break
            except InferenceServerException as exc:
                delay = backoff_delay(attempt, rng)
                if not is_retryable(exc.status(), exc.message()) or (
                    time.monotonic() + delay >= deadline
                ):
                    raise server_error(url, exc.status(), exc.message(), timeout_s, tls) from None
                time.sleep(delay)
    finally:
        client.close()
    return {spec.name: result.as_numpy(spec.name) for spec in contract.PIPELINE.outputs}


def server_error(
    url: str,
    status: str | None,
    message: str | None,
    timeout_s: float,
    tls: TlsOptions | None = None,
) -> ServerError:
    """One line for a failed call, by gRPC status ("StatusCode.UNAVAILABLE", ...); `tls` is
    how the client connected (None: plaintext), for the hint on a refused connection."""
    code = (status or "").rsplit(".", 1)[-1]
    message = " ".join((message or "no details").split())
    named, rest = events.split_status(message)
    if named == code:  # the status said twice (events.with_status): once is enough
        message = rest
    if code == "UNAVAILABLE":
        # Also Triton's answer for a model that is still loading: only say "cannot reach" when
        # gRPC itself failed to connect.
        lowered = message.lower()
        if _CONNECT_FAILED not in lowered and any(m in lowered for m in _CONNECTION_LOST):
            return ServerError(
                f"lost the connection to the server at {url} during the request ({message}); "
                "it may have restarted: try again",
                code,
                connection_lost=True,
            )
        if any(marker in lowered for marker in _UNREACHABLE):
            hint = failure_hint(tls, message)
            return ServerError(
                f"cannot reach the server at {url} ({message})" + (f"; {hint}" if hint else "")
            )  # no answer: no code
        return ServerError(f"the server at {url} is unavailable: {message}", code)
    if code == "DEADLINE_EXCEEDED":
        return ServerError(f"the server at {url} did not answer within {timeout_s:g} s", code)
    if code == "INVALID_ARGUMENT":
        return ServerError(f"the server rejected the request: {message}", code)
    return ServerError(
        f"server error from {url} ({code or 'unknown status'}): {message}", code or None
    )


def score_video(
    input_path: str | Path,
    output_path: str | Path,
    url: str = DEFAULT_URL,
    seed: int | None = None,
    timeout_s: float | None = None,
    fps: float = contract.SAMPLE_FPS,
    max_frames: int = contract.MAX_FRAMES,
    vocals: bool = False,
    hint: str = "",
    fixed_tags: tuple[str, ...] = (),
    tls: TlsOptions | None = None,
    cuts_s: tuple[float, ...] | str = AUTO,
) -> ScoreResult:
    """Write `output_path`: the video at `input_path` with music the service composed for it.

    `seed` None picks a random one (returned in the result). `vocals` asks for sung lyrics,
    `hint` steers the music in words ("upbeat, no drums"), `fixed_tags` are YuE tags to keep,
    `tls` connects over TLS (`connection.TlsOptions`; None: plaintext), `cuts_s` are where the
    music's sections may change: "auto" finds the cuts in the video, () sends none, or seconds;
    `timeout_s` None waits `default_timeout_s` of the video's duration.
    Raises VideoError (bad input), MuxError (cannot write the output), ServerError (server down,
    rejected or failed) or interface.InvalidInput (a bad argument such as a seed out of range).
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def lap(stage: str) -> None:
        timings[stage] = time.perf_counter() - start - sum(timings.values())

    check_output_path(output_path, input_path)  # fail before the slow part, not after
    if seed is None:
        seed = random_seed()
    contract.check_seed(seed)
    info = probe(input_path)
    lap("probe")
    duration = request_duration(info.duration_s)
    cuts, cuts_source, _ = resolve_cuts(cuts_s, input_path, info, duration)
    lap("detect_cuts")
    sampled = sample_frames(input_path, fps=fps, max_frames=max_frames, info=info)
    request = build_request(
        sampled.frames,
        sampled.fps,
        duration,
        seed,
        vocals=vocals,
        hint=hint,
        fixed_tags=fixed_tags,
        cuts_s=cuts,
    )
    lap("sample")
    response = parse_response(infer(url, request, timeout_s, tls=tls))
    lap("infer")
    report = mux_audio(input_path, response.audio, response.sample_rate, output_path, info=info)
    lap("mux")
    timings["total"] = time.perf_counter() - start
    return ScoreResult(
        caption=response.caption,
        tags=response.tags,
        lyrics=response.lyrics,
        output_path=Path(output_path),
        audio_s=response.audio.size / response.sample_rate,
        sample_rate=response.sample_rate,
        seed=seed,
        frames_sent=len(sampled.frames),
        mux=report,
        timings=timings,
        cuts_s=cuts,
        cuts_source=cuts_source,
        sections=response.sections,
    )
