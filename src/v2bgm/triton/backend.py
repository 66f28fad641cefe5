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
from v2bgm_client.interface import InvalidInput, ModelSpec

from v2bgm import checkpoints
from v2bgm.devices import triton_device


class Handler(Protocol):
    spec: ModelSpec

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class BackendModel:
    """Loads a handler in `initialize`; answers each request with its outputs or a typed error."""

    def __init__(self, load: Callable[[Path, str], Handler]) -> None:
        self.load = load
        self.handler: Handler | None = None
        self.logger = pb_utils.Logger

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        device = triton_device(args["model_instance_kind"], int(args["model_instance_device_id"]))
        weights = checkpoints.weights_root(params.get("weights") or None)
        self.logger.log_info(f"{args['model_name']}: loading {weights} on {device}")
        self.handler = self.load(weights, device)

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Any) -> Any:
        assert self.handler is not None
        try:
            inputs = {}
            for spec in self.handler.spec.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is not None:
                    inputs[spec.name] = tensor.as_numpy()
            outputs = self.handler(inputs)
            tensors = [pb_utils.Tensor(name, value) for name, value in outputs.items()]
            return pb_utils.InferenceResponse(output_tensors=tensors)
        except InvalidInput as exc:
            return error_response(str(exc), pb_utils.TritonError.INVALID_ARG)
        except Exception as exc:  # one bad request must not take the model down
            self.logger.log_error(traceback.format_exc())
            return error_response(f"internal error: {type(exc).__name__}: {exc}")

    def finalize(self) -> None:
        self.handler = None


def error_response(message: str, code: int | None = None) -> Any:
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
