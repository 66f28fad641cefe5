"""Reading a request's tensors, the one way every served model does.

Every model batches: a request's tensors carry a leading batch dimension, one row per item. These
helpers split the rows and read scalars and texts from a row by their `contract` specs, raising
`InvalidInput` that names the tensor and the rule; each model then checks its own values with the
contract's checks. Pure numpy, unit-tested without a server.
"""

from __future__ import annotations

import numpy as np
from v2bgm_contract import interface as contract

Tensors = dict[str, np.ndarray]


def split_rows(inputs: Tensors) -> list[Tensors]:
    """A request's batched tensors -> one dict per item (batch dimension removed)."""
    sizes = {value.shape[0] if value.ndim else 0 for value in inputs.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise contract.InvalidInput(f"inputs must share one batch size >= 1, got {sorted(sizes)}")
    (size,) = sizes
    return [{name: value[i] for name, value in inputs.items()} for i in range(size)]


def single_row(inputs: Tensors, what: str) -> Tensors:
    """The one row of a request that must hold exactly one item (`what` says which)."""
    for name, value in inputs.items():
        if value.ndim == 0 or value.shape[0] != 1:
            raise contract.InvalidInput(
                f"{name} must have a batch dimension of 1 ({what}), got shape {list(value.shape)}"
            )
    return {name: value[0] for name, value in inputs.items()}


def scalar(row: Tensors, spec: contract.TensorSpec) -> np.generic | bytes | None:
    """The single element of a [1] tensor, or None when an optional input is absent."""
    if spec.name not in row:
        if spec.optional:
            return None
        raise contract.InvalidInput(f"missing input {spec.name}")
    value = row[spec.name]
    if value.size != 1:
        raise contract.InvalidInput(
            f"{spec.name} must hold one element, got shape {list(value.shape)}"
        )
    return value.reshape(-1)[0]


def required(row: Tensors, spec: contract.TensorSpec) -> np.generic | bytes:
    """Like `scalar`, for an input that this model needs even where the contract lets it out."""
    value = scalar(row, spec)
    if value is None:
        raise contract.InvalidInput(f"missing input {spec.name}")
    return value


def decode_text(spec: contract.TensorSpec, value: object, limit: int) -> str:
    """A BYTES element as UTF-8 text of at most `limit` bytes."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
    return contract.check_text(spec, data, limit)


def text(row: Tensors, spec: contract.TensorSpec, limit: int) -> str:
    """A [1] BYTES input as text; "" when it is optional and absent."""
    value = scalar(row, spec)
    return "" if value is None else decode_text(spec, value, limit)


def texts(row: Tensors, spec: contract.TensorSpec, limit: int) -> list[str]:
    """A [K] BYTES input as texts, empty ones dropped (they pad ragged rows)."""
    if spec.name not in row:
        return []
    values = [decode_text(spec, v, limit) for v in row[spec.name].reshape(-1)]
    return [v for v in values if v.strip()]


def vector(row: Tensors, spec: contract.TensorSpec) -> np.ndarray | None:
    """A [K] input as a 1-D array, or None when an optional input is absent."""
    if spec.name not in row:
        if spec.optional:
            return None
        raise contract.InvalidInput(f"missing input {spec.name}")
    return np.asarray(row[spec.name]).reshape(-1)


def bytes_column(values: list[str]) -> np.ndarray:
    """Strings -> a BYTES tensor [B, 1]."""
    return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)
