"""The asyncio API (tritonclient.grpc.aio): one video, or many with bounded concurrency.

Reading videos and writing outputs run in worker threads, so the event loop keeps streaming.
Cancelling a task (or leaving `stream_events` early) cancels its request on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from .api import DEFAULT_URL, request_timeout_s
from .batch import is_done
from .connection import TlsOptions, open_client
from .errors import ClientError, ServerError
from .options import SoundtrackOptions
from .retry import Retrying, StreamRetry
from .soundtrack import Collected, OnEvent, SoundtrackResult, finish, output_paths, prepare
from .stream import parse_stream_result, stream_error, stream_inputs, typed_error

STREAM_END_WAIT_S = 5.0  # after Done, for the server's status (it comes within a millisecond)


async def stream_events(
    url: str,
    request: Mapping[str, np.ndarray],
    timeout_s: float | None = None,
    tls: TlsOptions | None = None,
    retry: bool = True,
    after_audio: bool = False,
    rng: random.Random | None = None,
) -> AsyncIterator[events.Event | Retrying]:
    """Send `request` to the STREAM model at `url` (over TLS when `tls` is given); yield its
    events until `Done`; retried as `stream.stream_events` is (`timeout_s` None: from the music
    asked for, `api.request_timeout_s`)."""
    if timeout_s is None:
        timeout_s = request_timeout_s(request)
    policy = StreamRetry(request, timeout_s, rng, after_audio, enabled=retry)
    while True:
        attempt = _stream_once(url, policy.request, policy.remaining_s(), tls)
        try:
            try:
                async for event in attempt:
                    policy.saw(event)
                    yield event
            finally:
                await attempt.aclose()  # left early: the attempt cancels its request
            return
        except ServerError as exc:
            notice = policy.after(exc)
            if notice is None:
                raise policy.final(exc) from None
        yield notice
        await asyncio.sleep(notice.delay_s)


async def _stream_once(
    url: str, request: Mapping[str, np.ndarray], timeout_s: float, tls: TlsOptions | None
) -> AsyncIterator[events.Event]:
    """One attempt: the stream's events until `Done`."""
    import grpc
    import tritonclient.grpc.aio as grpcclient

    client = open_client(grpcclient, url, tls)

    async def one_request():
        yield {"model_name": contract.STREAM_MODEL, "inputs": stream_inputs(grpcclient, request)}

    responses = None
    finished = False
    try:
        responses = client.stream_infer(one_request(), stream_timeout=timeout_s)
        async for result, error in responses:
            if error is not None:
                raise stream_error(url, error, timeout_s, tls)
            event = parse_stream_result(result)
            if isinstance(event, events.Error):  # the server ended the request
                finished = True  # Triton's error response follows: drained below
                raise typed_error(url, event, timeout_s, tls)
            finished = isinstance(event, events.Done)
            yield event
            if finished:
                return
        raise ServerError("malformed server response: the stream ended early")
    except grpc.RpcError as exc:  # the connection itself failed
        raise stream_error(url, _RpcFailure(exc), timeout_s, tls) from None
    finally:
        if responses is not None and not finished:
            responses.cancel()  # left early: the server stops the request (see stream.py)
        elif responses is not None:
            # Done comes before the call's OK status: closing the channel now would cancel the
            # finished request, which stream.py avoids. Let the server end the stream first.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_drain(responses), STREAM_END_WAIT_S)
        await client.close()


async def _drain(responses: AsyncIterator) -> None:
    async for _ in responses:
        pass  # nothing comes after Done; the iterator ends with the server's status


class _RpcFailure(Exception):
    """A grpc error with tritonclient's `status()` and `message()`."""

    def __init__(self, error: object) -> None:
        code = getattr(error, "code", lambda: None)()
        self._status = f"StatusCode.{code.name}" if code is not None else None
        self._message = getattr(error, "details", lambda: str(error))() or str(error)
        super().__init__(self._message)

    def status(self) -> str | None:
        return self._status

    def message(self) -> str:
        return self._message


async def make_soundtrack(
    input_path: str | Path,
    output: str | Path,
    url: str = DEFAULT_URL,
    options: SoundtrackOptions | None = None,
    on_event: OnEvent | None = None,
    timeout_s: float | None = None,
    tls: TlsOptions | None = None,
) -> SoundtrackResult:
    """`soundtrack.make_soundtrack`, without blocking the event loop."""
    options = options or SoundtrackOptions()
    prepared = await asyncio.to_thread(prepare, input_path, output, options)
    collected = Collected()
    async for event in stream_events(url, prepared.request, timeout_s, tls):
        collected.add(event)
        if on_event is not None:
            on_event(event)
    return await asyncio.to_thread(finish, prepared, collected, options)


@dataclass(frozen=True)
class BatchItem:
    input_path: Path
    output: Path
    result: SoundtrackResult | None = None  # None: skipped or failed
    skipped: bool = False  # every output existed already
    error: str | None = None  # one line


async def make_soundtracks(
    jobs: Sequence[tuple[Path, Path]],
    url: str = DEFAULT_URL,
    options: SoundtrackOptions | None = None,
    concurrency: int = 2,
    on_event: Callable[[Path, events.Event], None] | None = None,
    timeout_s: float | None = None,
    tls: TlsOptions | None = None,
) -> list[BatchItem]:
    """(input, output) pairs, at most `concurrency` in flight; one failure does not stop the
    others. Resumable: a job whose outputs all exist is skipped."""
    options = options or SoundtrackOptions()
    options.check()
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    slots = asyncio.Semaphore(concurrency)

    async def one(input_path: Path, output: Path) -> BatchItem:
        if is_done(output_paths(output, options.candidates)):
            return BatchItem(input_path, output, skipped=True)
        async with slots:
            watch = None if on_event is None else (lambda e: on_event(input_path, e))
            try:
                result = await make_soundtrack(
                    input_path, output, url, options, watch, timeout_s, tls
                )
            except (ClientError, contract.InvalidInput) as exc:
                return BatchItem(input_path, output, error=" ".join(str(exc).split()))
        return BatchItem(input_path, output, result)

    return list(await asyncio.gather(*(one(i, o) for i, o in jobs)))
