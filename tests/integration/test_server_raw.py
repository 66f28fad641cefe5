"""A real tritonserver over real gRPC, called as a backend service would: plain tritonclient."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_client import interface as api

from v2bgm.yue.tags import INSTRUMENTAL_FAMILIES, vocabulary

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(grpc_url: str) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(grpc_url)


def tensor(name: str, value: np.ndarray, datatype: str | None = None) -> grpcclient.InferInput:
    spec_type = datatype or next(
        t.datatype for m in api.MODELS.values() for t in m.inputs if t.name == name
    )
    t = grpcclient.InferInput(name, list(value.shape), spec_type)
    t.set_data_from_numpy(value)
    return t


def text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=np.object_)


def frames(n: int = 3, h: int = 64, w: int = 96) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def compose(client, duration: float, seed: int, tags: str = "pop piano calm"):
    inputs = [
        tensor("TAGS", text(tags)),
        tensor("DURATION_S", np.array([duration], np.float32)),
        tensor("SEED", np.array([seed], np.int64)),
    ]
    return client.infer(api.COMPOSER_MODEL, inputs)


def assert_invalid(client, model: str, inputs, *needles: str) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, inputs)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value
    for needle in needles:
        assert needle in err.value.message(), err.value.message()
    assert client.is_server_ready()
    assert client.is_model_ready(model)


def test_all_models_ready(client):
    assert client.is_server_live() and client.is_server_ready()
    for model in api.MODELS:
        assert client.is_model_ready(model), model


def test_composer_makes_exactly_the_requested_duration_deterministically(client):
    first = compose(client, 2.5, seed=7)
    rate = int(first.as_numpy("SAMPLE_RATE")[0])
    audio = first.as_numpy("AUDIO")
    assert audio.dtype == np.float32 and audio.shape == (round(2.5 * rate),)
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0
    np.testing.assert_array_equal(compose(client, 2.5, seed=7).as_numpy("AUDIO"), audio)
    assert not np.array_equal(compose(client, 2.5, seed=8).as_numpy("AUDIO"), audio)


def test_captioner_answers_with_valid_yue_tags(client):
    result = client.infer(
        api.CAPTIONER_MODEL,
        [tensor("FRAMES", frames()), tensor("FPS", np.array([1.0], np.float32))],
    )
    caption = result.as_numpy("CAPTION")[0].decode()
    tags = result.as_numpy("TAGS")[0].decode()
    assert caption.strip()
    vocab = vocabulary()
    rest = tags
    for family in INSTRUMENTAL_FAMILIES:  # tags come in family order; a tag may hold spaces
        match = max((t for t in vocab[family] if rest == t or rest.startswith(t + " ")), key=len)
        rest = rest[len(match) :].lstrip()
    assert rest == ""


def test_ensemble_chains_captioner_and_composer(client):
    inputs = [
        tensor("FRAMES", frames(4)),
        tensor("FPS", np.array([1.0], np.float32)),
        tensor("DURATION_S", np.array([1.5], np.float32)),
        tensor("SEED", np.array([1], np.int64)),
    ]
    result = client.infer(api.PIPELINE_MODEL, inputs)
    rate = int(result.as_numpy("SAMPLE_RATE")[0])
    assert result.as_numpy("AUDIO").shape == (round(1.5 * rate),)
    assert result.as_numpy("TAGS")[0].decode().strip()
    assert result.as_numpy("CAPTION")[0].decode().strip()


def test_wrong_dtype_is_rejected_naming_the_tensor(client):
    bad = frames().astype(np.float32)
    assert_invalid(
        client,
        api.CAPTIONER_MODEL,
        [tensor("FRAMES", bad, "FP32"), tensor("FPS", np.array([1.0], np.float32))],
        "FRAMES",
    )


@pytest.mark.parametrize("shape", [(3, 64, 96), (3, 64, 96, 4)])
def test_wrong_shape_is_rejected_naming_the_tensor(client, shape):
    bad = np.zeros(shape, np.uint8)
    assert_invalid(
        client,
        api.CAPTIONER_MODEL,
        [tensor("FRAMES", bad), tensor("FPS", np.array([1.0], np.float32))],
        "FRAMES",
    )


@pytest.mark.parametrize(
    ("video", "needle"),
    [
        (np.zeros((0, 64, 64, 3), np.uint8), "zero frames"),
        (np.zeros((api.MAX_FRAMES + 1, 16, 16, 3), np.uint8), str(api.MAX_FRAMES)),
        (np.zeros((1, 2000, 64, 3), np.uint8), str(api.MAX_FRAME_SIDE)),
    ],
)
def test_frames_out_of_limits_are_rejected(client, video, needle):
    assert_invalid(
        client,
        api.PIPELINE_MODEL,
        [
            tensor("FRAMES", video),
            tensor("FPS", np.array([1.0], np.float32)),
            tensor("DURATION_S", np.array([2.0], np.float32)),
            tensor("SEED", np.array([1], np.int64)),
        ],
        "FRAMES",
        needle,
    )


@pytest.mark.parametrize(
    ("tags", "duration", "needle"),
    [
        ("pop", 0.0, "DURATION_S"),
        ("pop", api.MAX_DURATION_S + 1, "DURATION_S"),
        ("pop", float("nan"), "DURATION_S"),
        ("", 2.0, "TAGS"),
        ("x" * (api.MAX_TAGS_BYTES + 1), 2.0, "TAGS"),
    ],
)
def test_composer_inputs_out_of_limits_are_rejected(client, tags, duration, needle):
    inputs = [tensor("TAGS", text(tags)), tensor("DURATION_S", np.array([duration], np.float32))]
    assert_invalid(client, api.COMPOSER_MODEL, inputs, needle)


def test_invalid_utf8_text_is_rejected(client):
    inputs = [
        tensor("TAGS", np.array([b"\xff\xfe pop"], dtype=np.object_)),
        tensor("DURATION_S", np.array([2.0], np.float32)),
    ]
    assert_invalid(client, api.COMPOSER_MODEL, inputs, "TAGS", "UTF-8")
