"""The Python-backend side of the captioner and the composer: tensors from requests, errors with
Triton codes, metrics. Two kinds of model, one per kind of handler (`v2bgm.triton.handlers`):

- `BatchModel`: `execute` answers the batch Triton's dynamic batcher hands over, in one call;
- `ConcurrentModel`: `execute` hands each request to the handler and returns None; the handler
  answers each through its response sender when it is done (Triton 2.51 takes that from a
  non-decoupled model, and calls `execute` again meanwhile: requests join the running batch).

Imported only inside Triton's Python-backend stub, where `triton_python_backend_utils` exists.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import triton_python_backend_utils as pb_utils
from v2bgm_contract import events
from v2bgm_contract.interface import InvalidInput, ModelSpec

from v2bgm import checkpoints
from v2bgm.composer import Busy, Cancelled, Lap, Meter, Progress, StageStats
from v2bgm.devices import triton_device
from v2bgm.triton import coldstart, metrics, model_configs
from v2bgm.triton.progress_channel import request_progress

Tensors = dict[str, np.ndarray]
Result = Tensors | Exception


class Handler(Protocol):
    spec: ModelSpec
    stages: tuple[str, ...]  # the stages it reports costs for (metrics' `stage` label)
    token_stages: tuple[str, ...]
    slots: int  # requests computed at once
    cache_bytes: int  # KV cache its requests take from by need (0: none of that kind)

    def close(self) -> None: ...


class BatchHandler(Handler, Protocol):
    def batch(self, requests: list[Tensors]) -> list[tuple[Result, dict[str, StageStats]]]:
        """One result or one error per request, each with its stages' costs."""
        ...


class ConcurrentHandler(Handler, Protocol):
    def instrument(self, meter: Meter) -> None:
        """Report the line for a slot and the requests computed to `meter`."""
        ...

    def submit(
        self,
        inputs: Tensors,
        progress: Progress | None,
        answer: Any,  # (result, costs) -> None, called once, from any thread
    ) -> None: ...


class BackendModel:
    """Loads its handler in `initialize` (`load`, set by the model.py adapter), and logs where
    the cold start went (`v2bgm.triton.coldstart`)."""

    @staticmethod
    def load(weights: Path, device: str, params: dict[str, str], lap: Lap | None = None) -> Handler:
        """The handler, loaded and warmed up; `lap(phase)` as each phase ends."""
        raise NotImplementedError

    def initialize(self, args: dict[str, Any]) -> None:
        params = model_configs.parameters(args["model_config"])
        device = triton_device(args["model_instance_kind"], int(args["model_instance_device_id"]))
        cold = coldstart.ColdStart(args["model_name"], device)
        weights = checkpoints.weights_root(params.get("weights") or None)
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{args['model_name']}: loading {weights} on {device}")
        self.handler = self.load(weights, device, params, cold.lap)
        self.metrics = metrics.ModelMetrics(
            pb_utils,
            args["model_name"],
            args["model_version"],
            self.handler.stages,
            self.handler.token_stages,
            role=metrics.LINE if isinstance(self, ConcurrentModel) else metrics.BATCH,
            warn=self.logger.log_warn,
        )
        self.started()
        self.metrics.ready(True, self.handler.slots, self.handler.cache_bytes)
        cold.lap("metrics")
        self.logger.log_info(cold.line())

    def started(self) -> None:
        """The handler is loaded and the metrics exist (before the first request)."""

    def _inputs(self, request: Any) -> Tensors:
        inputs = {}
        for spec in self.handler.spec.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is not None:
                inputs[spec.name] = tensor.as_numpy()
        return inputs

    def _record(self, inputs: Tensors, result: Result, cost: dict[str, StageStats]) -> None:
        try:  # metrics must never cost a request its answer
            self.metrics.answered(metrics.outcome(inputs, result, cost))
        except Exception:
            self.logger.log_warn(f"metrics not recorded: {traceback.format_exc()}")

    def _response(self, result: Result, requested: list[str]) -> Any:
        """The response; of the outputs, only those the caller asked for cross to the server."""
        if isinstance(result, InvalidInput):
            return error_response(str(result), pb_utils.TritonError.INVALID_ARG)
        if isinstance(result, Cancelled):  # the caller's choice: nothing to log
            return error_response(str(result), pb_utils.TritonError.CANCELLED)
        if isinstance(result, Busy):  # at capacity: the client retries with backoff
            message = events.with_status("UNAVAILABLE", str(result))  # for BLS callers too
            return error_response(message, pb_utils.TritonError.UNAVAILABLE)
        if isinstance(result, Exception):
            if result.__traceback__ is not None:
                self.logger.log_error("".join(traceback.format_exception(result)))
            return error_response(f"internal error: {type(result).__name__}: {result}")
        wanted = set(requested) or set(result)
        tensors = [pb_utils.Tensor(name, value) for name, value in result.items() if name in wanted]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.handler.close()
        self.metrics.ready(False)
        self.metrics.close()


class BatchModel(BackendModel):
    handler: BatchHandler

    def execute(self, requests: list) -> list:
        inputs = [self._inputs(request) for request in requests]
        self.metrics.in_generation(len(requests))
        try:
            answers = self.handler.batch(inputs)
        except Exception as exc:  # the whole batch failed: answer each request, stay up
            answers = [(exc, {})] * len(requests)
        finally:
            self.metrics.in_generation(-len(requests))
        responses = []
        for request, tensors, (result, cost) in zip(requests, inputs, answers, strict=True):
            self._record(tensors, result, cost)
            responses.append(self._response(result, request.requested_output_names()))
        return responses


class ConcurrentModel(BackendModel):
    handler: ConcurrentHandler

    def started(self) -> None:
        self.handler.instrument(self.metrics)

    def execute(self, requests: list) -> None:
        for request in requests:
            self._submit(request)
        return None  # each request is answered through its response sender

    def _submit(self, request: Any) -> None:
        sender = request.get_response_sender()
        requested = request.requested_output_names()
        inputs = self._inputs(request)

        def answer(result: Result, cost: dict[str, StageStats]) -> None:
            self._record(inputs, result, cost)
            sender.send(
                self._response(result, requested),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

        self.handler.submit(inputs, request_progress(request), answer)


def error_response(message: str, code: int | None = None) -> Any:
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
