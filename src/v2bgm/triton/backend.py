"""The Python-backend side of every served model: tensors from requests, errors with Triton codes.

Imported only inside Triton's Python-backend stub, where `triton_python_backend_utils` exists.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import triton_python_backend_utils as pb_utils
from v2bgm_contract.interface import InvalidInput, ModelSpec

from v2bgm import checkpoints
from v2bgm.composer import Busy, Cancelled, Progress, StageStats
from v2bgm.devices import triton_device
from v2bgm.triton import metrics
from v2bgm.triton.progress_channel import request_progress


class Handler(Protocol):
    spec: ModelSpec
    batch_stats: list[dict[str, StageStats]]  # set by `batch`: each request's stage costs
    concurrent: bool  # True: `submit` answers each request from the handler's own threads

    def batch(
        self, requests: list[dict[str, np.ndarray]], progress: list[Progress] | None = None
    ) -> list[dict[str, np.ndarray] | Exception]:
        """One result or one error per request; `progress[i]` may raise Cancelled."""
        ...


class BackendModel:
    """Loads a handler in `initialize`; answers each request with its outputs or a typed error."""

    def __init__(self, load: Callable[[Path, str, dict[str, str]], Handler]) -> None:
        self.load = load
        self.handler: Handler | None = None
        self.metrics: metrics.ModelMetrics | None = None
        self.logger = pb_utils.Logger

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        device = triton_device(args["model_instance_kind"], int(args["model_instance_device_id"]))
        weights = checkpoints.weights_root(params.get("weights") or None)
        self.logger.log_info(f"{args['model_name']}: loading {weights} on {device}")
        self.metrics = metrics.ModelMetrics(
            pb_utils, args["model_name"], args["model_version"], self.logger.log_warn
        )
        self.handler = self.load(weights, device, params)
        instrument = getattr(self.handler, "instrument", None)
        if instrument is not None:  # its line and the requests it computes: told by the handler
            instrument(self.metrics)
        # requests computed at once: the handler's slots, else a batch of the dynamic batcher
        slots = getattr(self.handler, "slots", 0) or int(config.get("max_batch_size") or 1)
        self.metrics.ready(True, slots)

    def execute(self, requests: list) -> list | None:
        assert self.handler is not None and self.metrics is not None
        if getattr(self.handler, "concurrent", False):
            for request in requests:
                self._submit(request)
            return None  # each request is answered through its response sender
        inputs = [self._inputs(request) for request in requests]
        self.handler.batch_stats = []
        self.metrics.in_generation(len(requests))
        try:
            results = self.handler.batch(inputs, [request_progress(r) for r in requests])
        except Exception as exc:  # the whole batch failed: answer each request, stay up
            results = [exc] * len(requests)
        finally:
            self.metrics.in_generation(-len(requests))
        stages = self.handler.batch_stats
        if len(stages) != len(results):  # the batch failed before it was done
            stages = [{}] * len(results)
        try:  # metrics must never cost a request its answer
            for request, result, cost in zip(inputs, results, stages, strict=True):
                self.metrics.answered(metrics.outcome(request, result, cost))
        except Exception:
            self.logger.log_warn(f"metrics not recorded: {traceback.format_exc()}")
        return [
            self._response(result, request.requested_output_names())
            for request, result in zip(requests, results, strict=True)
        ]

    def _submit(self, request: Any) -> None:
        """Hand one request to a concurrent handler; its answer goes out through the request's
        response sender (Triton 2.51 takes that from a non-decoupled model whose `execute`
        returned None, and calls `execute` again meanwhile: requests join the running batch)."""
        assert self.handler is not None and self.metrics is not None
        sender = request.get_response_sender()
        requested = request.requested_output_names()
        inputs = self._inputs(request)
        metrics_ = self.metrics  # waiting and in generation: reported by the handler (`instrument`)

        def answer(result: dict[str, np.ndarray] | Exception, cost: dict[str, StageStats]) -> None:
            try:
                metrics_.answered(metrics.outcome(inputs, result, cost))
            except Exception:
                self.logger.log_warn(f"metrics not recorded: {traceback.format_exc()}")
            sender.send(
                self._response(result, requested),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

        self.handler.submit(inputs, request_progress(request), answer)

    def _inputs(self, request: Any) -> dict[str, np.ndarray]:
        assert self.handler is not None
        inputs = {}
        for spec in self.handler.spec.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is not None:
                inputs[spec.name] = tensor.as_numpy()
        return inputs

    def _response(self, result: dict[str, np.ndarray] | Exception, requested: list[str]) -> Any:
        """The response; of the outputs, only those the caller asked for cross to the server."""
        if isinstance(result, InvalidInput):
            return error_response(str(result), pb_utils.TritonError.INVALID_ARG)
        if isinstance(result, Cancelled):  # the caller's choice: nothing to log
            return error_response(str(result), pb_utils.TritonError.CANCELLED)
        if isinstance(result, Busy):  # at capacity: the client retries with backoff
            return error_response(str(result), pb_utils.TritonError.UNAVAILABLE)
        if isinstance(result, Exception):
            if result.__traceback__ is not None:
                self.logger.log_error("".join(traceback.format_exception(result)))
            return error_response(f"internal error: {type(result).__name__}: {result}")
        wanted = set(requested) or set(result)
        tensors = [pb_utils.Tensor(name, value) for name, value in result.items() if name in wanted]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        close = getattr(self.handler, "close", None)
        if close is not None:
            close()
        if self.metrics is not None:
            self.metrics.ready(False)
            self.metrics.close()
        self.handler = None


def error_response(message: str, code: int | None = None) -> Any:
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
