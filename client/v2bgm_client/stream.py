"""The streaming model's wire format, and the blocking call (v2bgm_client.aio has the asyncio one).

`build_stream_request` and `parse_stream_result` are pure, so the wire format is tested without a
server. `stream_events` yields the events as they come; leaving it early (an exception, Ctrl-C,
`break`) cancels the request on the server, which stops composing within a token.
"""

from __future__ import annotations

import contextlib
import queue
import random
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from .api import request_timeout_s, server_error
from .connection import TlsOptions, open_client
from .errors import ServerError
from .options import SoundtrackOptions
from .retry import Retrying, StreamRetry

STREAM_ERROR_WAIT_S = 5.0  # for the reason a failed stream gives its callback


def build_stream_request(
    frames: np.ndarray, fps: float, options: SoundtrackOptions, duration_s: float | None = None
) -> dict[str, np.ndarray]:
    """The STREAM model's inputs by tensor name, each a batch of one. `duration_s` is the
    video's (the music's unless `options.duration_s` says otherwise). Cuts "auto" need the video
    (`soundtrack.prepare` resolves them first): from frames alone, none are sent."""
    options.check()
    contract.check_frames(frames)
    contract.check_fps(fps)
    duration = options.duration_s if options.duration_s is not None else duration_s
    values: dict[str, object] = {
        contract.FRAMES.name: frames,
        contract.FPS.name: [fps],
        contract.VOCALS.name: [options.vocals],
        contract.CANDIDATES.name: [options.candidates],
    }
    if duration is not None:
        duration = max(contract.MIN_DURATION_S, float(duration))
        contract.check_duration(duration)
        values[contract.TARGET_DURATION_S.name] = [duration]
    if options.seed is not None:
        values[contract.SEED.name] = [options.seed]
    if options.hint:
        values[contract.HINT.name] = [options.hint.encode("utf-8")]
    if options.tags:
        values[contract.FIXED_TAGS.name] = [t.encode("utf-8") for t in options.tags]
    if options.given_cuts:
        music_s = duration if duration is not None else contract.MAX_DURATION_S
        values[contract.CUTS_S.name] = contract.check_cuts(list(options.given_cuts), music_s)
    return {
        spec.name: np.ascontiguousarray(values[spec.name], dtype=spec.numpy_dtype)[None]
        for spec in contract.STREAM.inputs
        if spec.name in values
    }


def parse_stream_result(result: Any) -> events.Event:
    """A tritonclient result (or anything with `as_numpy(name)`) -> its event."""
    data = result.as_numpy(contract.EVENT.name)
    if data is None or data.size != 1:
        raise ServerError("malformed server response: no EVENT in a stream response")
    audio = result.as_numpy(contract.AUDIO.name)
    try:
        event = events.decode(data.reshape(-1)[0], None if audio is None else audio[0])
    except ValueError as exc:
        raise ServerError(f"malformed server response: {exc}") from None
    if isinstance(event, events.Composed) and not _valid_audio(event.audio):
        raise ServerError("malformed server response: an audio event without valid AUDIO")
    return event


def _valid_audio(audio: np.ndarray | None) -> bool:
    return audio is not None and audio.ndim == 1 and bool(np.all(np.isfinite(audio)))


def stream_inputs(module: Any, request: Mapping[str, np.ndarray]) -> list:
    """InferInputs of `module` (tritonclient.grpc or tritonclient.grpc.aio) for a request."""
    inputs = []
    for spec in contract.STREAM.inputs:
        if spec.name in request:
            tensor = module.InferInput(spec.name, list(request[spec.name].shape), spec.datatype)
            tensor.set_data_from_numpy(request[spec.name])
            inputs.append(tensor)
    return inputs


def stream_error(
    url: str, error: Exception, timeout_s: float, tls: TlsOptions | None = None
) -> ServerError:
    """One line for an error that ended a stream (Triton sends stream errors without a code)."""
    status = getattr(error, "status", None)
    status = status() if callable(status) else None
    message = error.message() if hasattr(error, "message") else str(error)
    if status is None and not any(m in (message or "").lower() for m in ("connect", "dns")):
        return ServerError(f"the server failed the request: {' '.join(str(message).split())}")
    return server_error(url, status or "StatusCode.UNAVAILABLE", message, timeout_s, tls)


def typed_error(
    url: str, event: events.Error, timeout_s: float, tls: TlsOptions | None = None
) -> ServerError:
    """The error event that ended a stream, as the ensemble's same status reads."""
    return server_error(url, f"StatusCode.{event.code}", event.message, timeout_s, tls)


def stream_events(
    url: str,
    request: Mapping[str, np.ndarray],
    timeout_s: float | None = None,
    tls: TlsOptions | None = None,
    retry: bool = True,
    after_audio: bool = False,
    rng: random.Random | None = None,
) -> Iterator[events.Event | Retrying]:
    """Send `request` to the STREAM model at `url` (over TLS when `tls` is given); yield its
    events until `Done`. A stream that fails with a retryable status before its audio is sent
    again within `timeout_s` (`v2bgm_client.retry`; `retry=False`: never; `after_audio=True`:
    after audio too), announced by a `Retrying` event. `timeout_s` None: `api.request_timeout_s`,
    from the music asked for."""
    if timeout_s is None:
        timeout_s = request_timeout_s(request)
    policy = StreamRetry(request, timeout_s, rng, after_audio, enabled=retry)
    while True:
        attempt = _stream_once(url, policy.request, policy.remaining_s(), tls)
        try:
            with contextlib.closing(attempt):  # left early: the attempt cancels its request
                for event in attempt:
                    policy.saw(event)
                    yield event
            return
        except ServerError as exc:
            notice = policy.after(exc)
            if notice is None:
                raise policy.final(exc) from None
        yield notice
        time.sleep(notice.delay_s)


def _stream_once(
    url: str, request: Mapping[str, np.ndarray], timeout_s: float, tls: TlsOptions | None
) -> Iterator[events.Event]:
    """One attempt: the stream's events until `Done`."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = open_client(grpcclient, url, tls)
    answers: queue.Queue = queue.Queue()
    deadline = time.monotonic() + timeout_s
    finished = False
    try:
        client.start_stream(
            callback=lambda result, error: answers.put((result, error)), stream_timeout=timeout_s
        )
        try:
            client.async_stream_infer(contract.STREAM_MODEL, stream_inputs(grpcclient, request))
        except InferenceServerException as exc:  # the stream failed: its callback says why
            try:
                _, error = answers.get(timeout=STREAM_ERROR_WAIT_S)
            except queue.Empty:
                error = exc
            raise stream_error(url, error or exc, timeout_s, tls) from None
        while True:
            try:
                result, error = answers.get(timeout=max(deadline - time.monotonic(), 1e-3))
            except queue.Empty:
                raise ServerError(
                    f"the server at {url} did not answer within {timeout_s:g} s"
                ) from None
            if error is not None:
                raise stream_error(url, error, timeout_s, tls)
            event = parse_stream_result(result)
            if isinstance(event, events.Error):  # Triton's error response follows at once
                with contextlib.suppress(queue.Empty):
                    answers.get(timeout=STREAM_ERROR_WAIT_S)
                finished = True  # the server ended the request: nothing to cancel
                raise typed_error(url, event, timeout_s, tls)
            finished = isinstance(event, events.Done)
            yield event
            if finished:
                return
    finally:
        # Left early: cancel, and the server stops. Not once done: a finished stream needs no
        # cancel, and Triton 2.51 leaks a stream cancelled while its final flag is in flight
        # (the server now sends that flag apart from `done`; docs/reliability.md).
        client.stop_stream(cancel_requests=not finished)
        client.close()
