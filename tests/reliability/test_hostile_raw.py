"""Hostile requests sent raw over gRPC (a caller that skips the client): byte sizes that do not
match the declared shape, BYTES tensors with broken serialization, huge element counts, random
bytes for every input of every model. Each gets a clear error, the server stays ready, and
nothing lands in the model repository or the weights."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_contract import interface as contract

from tests.conftest import ROOT

pytestmark = pytest.mark.server

REJECTED = {"StatusCode.INVALID_ARGUMENT"}


@pytest.fixture(scope="module")
def client(grpc_url: str) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(grpc_url)


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def untouched(server) -> object:
    """The model repository and the weights, unchanged by the module's requests."""
    roots = (ROOT / "model_repository", server.weights)
    before = snapshot(*roots)
    yield
    assert snapshot(*roots) == before


def raw_input(name: str, shape: list[int], datatype: str, content: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, shape, datatype)
    tensor._raw_content = content  # what a hand-written caller could send: no client checks
    return tensor


def assert_rejected(client, model: str, inputs: list) -> str:
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, inputs, client_timeout=120)
    assert err.value.status() in REJECTED, err.value
    message = err.value.message()
    assert message.strip() and "Traceback" not in message, message
    assert client.is_server_ready()
    assert client.is_model_ready(model)
    return message


def fps() -> grpcclient.InferInput:
    value = np.array([[1.0]], np.float32)
    return raw_input("FPS", [1, 1], "FP32", value.tobytes())


def test_byte_size_not_matching_the_declared_shape(client, untouched):
    declared = [
        1,
        contract.MAX_FRAMES,
        contract.MAX_FRAME_SIDE,
        contract.MAX_FRAME_SIDE,
        3,
    ]  # 108 MB declared
    frames = raw_input("FRAMES", declared, "UINT8", bytes(1000))  # 1 kB sent
    assert_rejected(client, contract.CAPTIONER_MODEL, [frames, fps()])


def test_bytes_tensor_with_broken_serialization(client, untouched):
    # BYTES elements are 4-byte little-endian lengths, then the bytes: this length overruns.
    garbage = (10**9).to_bytes(4, "little") + b"pop"
    inputs = [
        raw_input("TAGS", [1, 1], "BYTES", garbage),
        raw_input("DURATION_S", [1, 1], "FP32", np.float32(2.0).tobytes()),
    ]
    assert_rejected(client, contract.COMPOSER_MODEL, inputs)


def test_a_hundred_thousand_fixed_tags(client, untouched):
    tags = np.array([[b"jazz"] * 100_000], np.object_)
    fixed = grpcclient.InferInput("FIXED_TAGS", list(tags.shape), "BYTES")
    fixed.set_data_from_numpy(tags)
    frames = grpcclient.InferInput("FRAMES", [1, 1, 16, 16, 3], "UINT8")
    frames.set_data_from_numpy(np.zeros((1, 1, 16, 16, 3), np.uint8))
    message = assert_rejected(client, contract.CAPTIONER_MODEL, [frames, fps(), fixed])
    assert "FIXED_TAGS" in message


@pytest.mark.parametrize("model", sorted(m for m in contract.MODELS if m != contract.STREAM_MODEL))
def test_random_bytes_for_every_input(client, untouched, model):
    """Every input of the model, shaped as declared (1 for each free dim) but filled with random
    bytes: BYTES tensors get random serializations, numbers get random bit patterns."""
    rng = random.Random(model)
    inputs = []
    for spec in contract.MODELS[model].inputs:
        shape = [1, *(d if d > 0 else 1 for d in spec.shape)]
        count = int(np.prod(shape))
        size = count * (4 if spec.datatype == "BYTES" else np.dtype(spec.numpy_dtype).itemsize)
        inputs.append(raw_input(spec.name, shape, spec.datatype, rng.randbytes(size)))
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, inputs, client_timeout=120)
    assert err.value.message().strip(), err.value
    assert err.value.status() != "StatusCode.UNAVAILABLE", err.value
    assert client.is_server_ready() and client.is_model_ready(model)
