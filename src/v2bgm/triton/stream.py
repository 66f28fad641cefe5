"""The streaming pipeline `video_to_music_stream`: a decoupled BLS model that drives the
captioner and the composer and streams typed events (v2bgm_contract.events) on one gRPC stream.

One instance serves every stream at once (`async execute`); the captioner and the composer
queue the work. Progress leaves the composer through a `ProgressChannel`, and so does
cancellation: when the client cancels or disconnects, the composer is told at its next token and
stops (see progress_channel.py for why BLS itself cannot carry either in Triton 2.51).

Imported only inside Triton's Python-backend stub, where `triton_python_backend_utils` exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from v2bgm.composer import Cancelled
from v2bgm.triton import limits, metrics, model_configs, stream_job
from v2bgm.triton.eta import Eta
from v2bgm.triton.progress_channel import CHANNEL_PARAMETER, ProgressChannel

POLL_S = 0.1  # how often a composing stream forwards progress and checks for cancellation
# Triton 2.51's gRPC stream handler leaks a stream (its request, and with it the streaming model,
# which then never unloads: shutdown waits out the exit timeout) when the caller cancels while the
# response carrying the final flag is still being written (fixed in Triton 24.12, server PR #7840;
# docs/reliability.md). So a stream's last event goes out as an ordinary response and the final
# flag follows alone, once that write is likely done: a cancel meanwhile meets an open request, a
# path Triton's cancellation handles. The wait grows with the audio queued ahead of the last event
# (a slow reader), at an assumed rate.
FINAL_FLAG_DELAY_S = 0.1
FINAL_FLAG_BYTES_PER_S = 200e6
CAPTIONING = "captioning"  # the timing key of the captioner's stage (its handler's stage name)


class StepFailed(Exception):
    """A BLS call answered with an error: passed on to the client with its code."""

    def __init__(self, model: str, code: int, message: str) -> None:
        super().__init__(f"{model}: {message}")
        self.code = code


class Stream:
    """One request's response sender: events out, cancellation in; the times to its first
    event and first audio go to `meter`."""

    def __init__(self, request: Any, meter: metrics.ModelMetrics | None = None) -> None:
        self.sender = request.get_response_sender()
        self.started = time.monotonic()
        self.meter = meter
        self.sent_event = self.sent_audio = False
        self.audio_bytes = 0  # sent so far: the writes the final flag waits behind

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def cancelled(self) -> bool:
        return self.sender.is_cancelled()

    def send(self, event: events.Event) -> None:
        tensors = [
            pb_utils.Tensor(contract.EVENT.name, np.array([[events.encode(event)]], np.object_))
        ]
        if isinstance(event, events.Composed) and event.audio is not None:
            audio = event.audio.astype(np.float32)[None]
            self.audio_bytes += audio.nbytes
            tensors += [
                pb_utils.Tensor(contract.AUDIO.name, audio),
                pb_utils.Tensor(
                    contract.SAMPLE_RATE.name, np.array([[event.sample_rate]], np.int32)
                ),
            ]
        self.sender.send(pb_utils.InferenceResponse(output_tensors=tensors))
        self._measure(isinstance(event, events.Composed))

    async def end(self, event: events.Event) -> None:
        """The stream's last event, then the final flag (FINAL_FLAG_DELAY_S says why apart)."""
        self.send(event)
        await self._final_flag()

    def _measure(self, audio: bool) -> None:
        if self.meter is None:
            return
        if not self.sent_event:
            self.sent_event = True
            self.meter.first_event(self.elapsed_s())
        if audio and not self.sent_audio:
            self.sent_audio = True
            self.meter.first_audio(self.elapsed_s())

    async def fail(self, message: str, code: int) -> None:
        """End the stream: a typed `error` event (the status a caller acts on), then Triton's
        error response, its message opening with the same status name for raw callers, then
        the final flag."""
        status = status_name(code)
        with contextlib.suppress(Exception):  # a cancelled stream may take nothing more
            self.send(events.Error(status, message))
        error = pb_utils.TritonError(f"{status}: {message}", code)
        self.sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error))
        await self._final_flag()

    async def _final_flag(self) -> None:
        await asyncio.sleep(FINAL_FLAG_DELAY_S + self.audio_bytes / FINAL_FLAG_BYTES_PER_S)
        self.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


FAILURE_OF_CODE = {  # a step's status -> the stream's failure reason (metrics)
    "INVALID_ARGUMENT": metrics.INVALID_ARGUMENT,
    "CANCELLED": metrics.CANCELLED,
    "UNAVAILABLE": metrics.UNAVAILABLE,
}


def code_of_status(name: str) -> int:
    """The Python backend's code of a status a step's message names (read at call time:
    pb_utils has no TritonError while the stub only imports the model)."""
    codes = {
        "INVALID_ARGUMENT": pb_utils.TritonError.INVALID_ARG,
        "UNAVAILABLE": pb_utils.TritonError.UNAVAILABLE,
        "CANCELLED": pb_utils.TritonError.CANCELLED,
    }
    return codes.get(name, pb_utils.TritonError.INTERNAL)


def status_name(code: int) -> str:
    """The gRPC status name (`events.STATUS_CODES`) of a Triton error code."""
    names = {
        pb_utils.TritonError.INVALID_ARG: "INVALID_ARGUMENT",
        pb_utils.TritonError.UNAVAILABLE: "UNAVAILABLE",
        pb_utils.TritonError.CANCELLED: "CANCELLED",
    }
    return names.get(code, "INTERNAL")


def _tensor(spec: contract.TensorSpec, value: object) -> Any:
    """One item as a BLS input tensor: a batch of one."""
    return pb_utils.Tensor(spec.name, np.asarray([value], dtype=spec.numpy_dtype))


def _text(tensor: Any) -> str:
    return bytes(tensor.as_numpy().reshape(-1)[0]).decode("utf-8", errors="replace")


class StreamModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.logger = pb_utils.Logger
        params = model_configs.parameters(args["model_config"])
        self.max_duration_s = limits.max_duration_s(params)  # the composer's cap, checked first
        self.eta = Eta()
        self.metrics = metrics.ModelMetrics(  # its own: streams, failures, first event/audio
            pb_utils, args["model_name"], args["model_version"], role=metrics.STREAM,
            warn=self.logger.log_warn,
        )  # fmt: skip
        self.metrics.ready(True)

    async def execute(self, requests: list) -> None:
        await asyncio.gather(*(self.serve(request) for request in requests))

    def finalize(self) -> None:
        self.metrics.ready(False)
        self.metrics.close()

    async def serve(self, request: Any) -> None:
        stream = Stream(request, self.metrics)
        self.metrics.in_generation(1)
        failure: str | None = None
        try:
            await self.run(request, stream)
        except contract.InvalidInput as exc:
            failure = metrics.INVALID_ARGUMENT
            await stream.fail(str(exc), pb_utils.TritonError.INVALID_ARG)
        except Cancelled as exc:
            failure = metrics.CANCELLED
            await stream.fail(str(exc), pb_utils.TritonError.CANCELLED)
        except StepFailed as exc:
            failure = FAILURE_OF_CODE.get(status_name(exc.code), metrics.INTERNAL)
            await stream.fail(str(exc), exc.code)
        except Exception as exc:
            failure = metrics.INTERNAL
            self.logger.log_error(traceback.format_exc())
            await stream.fail(
                f"internal error: {type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL
            )
        finally:
            with contextlib.suppress(Exception):  # a metric never costs a stream its end
                self.metrics.in_generation(-1)
                self.metrics.answered(metrics.Outcome(failure))

    async def run(self, request: Any, stream: Stream) -> None:
        inputs = {}
        for spec in contract.STREAM.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is not None:
                inputs[spec.name] = tensor.as_numpy()
        job = stream_job.parse(inputs, max_duration_s=self.max_duration_s)
        stream.send(events.Started(job.seed, job.candidates, job.duration_s, list(job.cuts_s)))
        clock = time.monotonic()
        caption, tags, lyrics = await self.caption(job, stream)
        timings = {CAPTIONING: time.monotonic() - clock}
        if stream.cancelled():
            raise Cancelled("the caller cancelled the request")
        stream.send(events.Captioned(caption, tags, lyrics, timings[CAPTIONING]))
        for candidate in range(job.candidates):
            audio, rate, stages_s, sections = await self.compose(
                job, candidate, tags, lyrics, stream
            )
            for stage, seconds in stages_s.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
            seed = job.seed_of(candidate)
            composed = events.Composed(
                candidate, seed, rate, len(audio) / rate, stages_s, audio, sections
            )
            stream.send(composed)
        await stream.end(events.Done({**timings, "total": stream.elapsed_s()}))

    async def caption(self, job: stream_job.StreamJob, stream: Stream) -> tuple[str, str, str]:
        """The captioner's answer; a cancel stops the wait at once (the captioner cannot be
        stopped mid-forward: its late answer is dropped)."""
        inputs = [
            _tensor(contract.FRAMES, job.frames),
            _tensor(contract.FPS, [job.fps]),
            _tensor(contract.VOCALS, [job.vocals]),
            _tensor(contract.MUSIC_DURATION_S, [job.duration_s]),
        ]
        if job.hint:
            inputs.append(_tensor(contract.HINT, [job.hint.encode("utf-8")]))
        if job.fixed_tags:
            inputs.append(_tensor(contract.FIXED_TAGS, [t.encode("utf-8") for t in job.fixed_tags]))
        outputs = [spec.name for spec in contract.CAPTIONER.outputs]
        bls = pb_utils.InferenceRequest(
            model_name=contract.CAPTIONER_MODEL, requested_output_names=outputs, inputs=inputs
        )
        pending = asyncio.ensure_future(bls.async_exec())
        while not (await asyncio.wait({pending}, timeout=POLL_S))[0]:
            if stream.cancelled():
                pending.add_done_callback(_dropped)
                raise Cancelled("the caller cancelled the request")
        response = _checked(contract.CAPTIONER_MODEL, pending.result())
        caption, tags, lyrics = (
            _text(pb_utils.get_output_tensor_by_name(response, name)) for name in outputs
        )
        return caption, tags, lyrics

    async def compose(
        self, job: stream_job.StreamJob, candidate: int, tags: str, lyrics: str, stream: Stream
    ) -> tuple[np.ndarray, int, dict[str, float], list[dict[str, Any]]]:
        """One candidate (audio, rate, seconds per stage, sections); progress forwarded every
        POLL_S until the composer answers."""
        channel = ProgressChannel.create()
        inputs = [
            _tensor(contract.TAGS, [tags.encode("utf-8")]),
            _tensor(contract.LYRICS, [lyrics.encode("utf-8")]),
            _tensor(contract.DURATION_S, [job.duration_s]),
            _tensor(contract.SEED, [job.seed_of(candidate)]),
        ]
        if job.cuts_s:
            inputs.append(_tensor(contract.CUTS_S, list(job.cuts_s)))
        bls = pb_utils.InferenceRequest(
            model_name=contract.COMPOSER_MODEL,
            requested_output_names=[
                contract.AUDIO.name,
                contract.SAMPLE_RATE.name,
                contract.TIMINGS.name,
                contract.SECTIONS.name,
            ],
            inputs=inputs,
            parameters={CHANNEL_PARAMETER: channel.token},
        )
        later = job.candidates - candidate - 1
        try:
            pending = asyncio.ensure_future(bls.async_exec())
            shown: tuple[str, float] | None = None
            cancelled = False
            while True:
                done, _ = await asyncio.wait({pending}, timeout=POLL_S)
                state = channel.read()
                if done:
                    break
                if not cancelled and stream.cancelled():
                    channel.cancel()  # the composer stops at its next token, then answers
                    cancelled = True
                if not cancelled:
                    shown = self.forward(state, shown, job, candidate, later, stream)
            response = pending.result()
        finally:
            channel.close()
        if cancelled:
            raise Cancelled("the caller cancelled the request")
        response = _checked(contract.COMPOSER_MODEL, response)
        audio = pb_utils.get_output_tensor_by_name(response, contract.AUDIO.name).as_numpy()[0]
        rate = pb_utils.get_output_tensor_by_name(response, contract.SAMPLE_RATE.name).as_numpy()
        timings = json.loads(
            _text(pb_utils.get_output_tensor_by_name(response, contract.TIMINGS.name))
        )
        stages_s = {str(stage): float(seconds) for stage, seconds in timings.items()}
        sections = json.loads(
            _text(pb_utils.get_output_tensor_by_name(response, contract.SECTIONS.name))
        )
        self.eta.learn(stages_s, job.duration_s)
        return audio, int(rate.reshape(-1)[0]), stages_s, sections

    def forward(
        self,
        state: dict[str, Any] | None,
        shown: tuple[str, float] | None,
        job: stream_job.StreamJob,
        candidate: int,
        later: int,
        stream: Stream,
    ) -> tuple[str, float] | None:
        """Send a progress event when the composer's stage or fraction moved; return what the
        client has now seen."""
        if state is None:
            stage, fraction, stage_elapsed = None, 0.0, 0.0
        else:
            stage, fraction = str(state["stage"]), float(state["fraction"])
            stage_elapsed = max(0.0, float(state["time"]) - float(state["stage_started"]))
        now = (stage or events.QUEUED_STAGE, round(fraction, 3))
        if now == shown:
            return shown
        eta = self.eta.remaining_s(stage, fraction, stage_elapsed, job.duration_s, later)
        stream.send(
            events.Progress(
                candidate=candidate,
                stage=now[0],
                fraction=fraction,
                music_s=fraction * job.duration_s,
                elapsed_s=stream.elapsed_s(),
                eta_s=eta,
            )
        )
        return now


def _dropped(answer: asyncio.Future) -> None:
    """A BLS answer nobody waits for any more: retrieved, so asyncio does not report it."""
    if not answer.cancelled():
        answer.exception()


def _checked(model: str, response: Any) -> Any:
    if response.has_error():
        error = response.error()
        code, message = error.code(), error.message()
        named, rest = events.split_status(message)
        if named is not None:  # the step's own status (BLS errors arrive without their code)
            code, message = code_of_status(named), rest
        raise StepFailed(model, code, message)
    return response
