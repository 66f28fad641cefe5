"""A real tritonserver over real gRPC, called as a backend service would: plain tritonclient."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_contract import interface as contract

from v2bgm.tags import FAMILIES, INSTRUMENTAL_FAMILIES, vocabulary

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(grpc_url: str) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(grpc_url)


def tensor(name: str, value: np.ndarray, datatype: str | None = None) -> grpcclient.InferInput:
    """One item as a request tensor: every model batches, so a batch of one."""
    spec_type = datatype or next(
        t.datatype for m in contract.MODELS.values() for t in m.inputs if t.name == name
    )
    value = value[None]
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
    return client.infer(contract.COMPOSER_MODEL, inputs)


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
    for model in contract.MODELS:
        assert client.is_model_ready(model), model


def test_composer_makes_exactly_the_requested_duration_deterministically(client):
    first = compose(client, 2.5, seed=7)
    rate = int(first.as_numpy("SAMPLE_RATE")[0, 0])
    audio = first.as_numpy("AUDIO")
    assert audio.dtype == np.float32 and audio.shape == (1, round(2.5 * rate))
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0
    np.testing.assert_array_equal(compose(client, 2.5, seed=7).as_numpy("AUDIO"), audio)
    assert not np.array_equal(compose(client, 2.5, seed=8).as_numpy("AUDIO"), audio)


def test_captioner_answers_with_valid_yue_tags(client):
    result = client.infer(
        contract.CAPTIONER_MODEL,
        [tensor("FRAMES", frames()), tensor("FPS", np.array([1.0], np.float32))],
    )
    caption = result.as_numpy("CAPTION")[0, 0].decode()
    assert caption.strip()
    assert split_tags(result.as_numpy("TAGS")[0, 0].decode(), INSTRUMENTAL_FAMILIES)
    assert result.as_numpy("LYRICS")[0, 0] == b""


def split_tags(line: str, families: tuple[str, ...]) -> list[str]:
    """A tag line -> its tags, one per family in order (a tag may hold spaces); fails if invalid."""
    vocab, rest, tags = vocabulary(), line, []
    for family in families:
        match = max((t for t in vocab[family] if rest == t or rest.startswith(t + " ")), key=len)
        tags.append(match)
        rest = rest[len(match) :].lstrip()
    assert rest == "", line
    return tags


def test_captioner_steering_fixed_tags_and_vocals(client):
    fixed = np.array([b"jazz", b"female"], dtype=np.object_)
    result = client.infer(
        contract.CAPTIONER_MODEL,
        [
            tensor("FRAMES", frames()),
            tensor("FPS", np.array([1.0], np.float32)),
            tensor("VOCALS", np.array([True])),
            tensor("DURATION_S", np.array([45.0], np.float32)),
            tensor("HINT", np.array([b"upbeat, no drums"], dtype=np.object_)),
            tensor("FIXED_TAGS", fixed),
        ],
    )
    tags = split_tags(result.as_numpy("TAGS")[0, 0].decode(), FAMILIES)
    assert tags[0] == "jazz" and tags[3] == "female"
    lyrics = result.as_numpy("LYRICS")[0, 0].decode()
    assert [line for line in lyrics.splitlines() if line.startswith("[")] == ["[verse]", "[chorus]"]


def test_unknown_tag_is_rejected_with_near_matches(client):
    inputs = [
        tensor("FRAMES", frames()),
        tensor("FPS", np.array([1.0], np.float32)),
        tensor("FIXED_TAGS", np.array([b"jaz"], dtype=np.object_)),
    ]
    assert_invalid(client, contract.CAPTIONER_MODEL, inputs, "jaz", "near", "'jazz'")


def test_ensemble_chains_captioner_and_composer(client):
    inputs = [
        tensor("FRAMES", frames(4)),
        tensor("FPS", np.array([1.0], np.float32)),
        tensor("DURATION_S", np.array([1.5], np.float32)),
        tensor("SEED", np.array([1], np.int64)),
    ]
    result = client.infer(contract.PIPELINE_MODEL, inputs)
    rate = int(result.as_numpy("SAMPLE_RATE")[0, 0])
    assert result.as_numpy("AUDIO").shape == (1, round(1.5 * rate))
    assert result.as_numpy("TAGS")[0, 0].decode().strip()
    assert result.as_numpy("CAPTION")[0, 0].decode().strip()


def test_ensemble_follows_the_cuts_a_service_sends(client):
    # A backend service that knows its edit points sends them: the music's sections change
    # there (cuts too close to carry a section are merged) and the plan comes back.
    inputs = [
        tensor("FRAMES", frames(4)),
        tensor("FPS", np.array([1.0], np.float32)),
        tensor("DURATION_S", np.array([12.0], np.float32)),
        tensor("SEED", np.array([1], np.int64)),
        tensor("CUTS_S", np.array([4.5, 6.0], np.float32)),
    ]
    result = client.infer(contract.PIPELINE_MODEL, inputs)
    sections = json.loads(result.as_numpy("SECTIONS")[0, 0])
    assert sections == [
        {"label": "[verse]", "start_s": 0.0, "end_s": 4.5},
        {"label": "[outro]", "start_s": 4.5, "end_s": 12.0},
    ]
    rate = int(result.as_numpy("SAMPLE_RATE")[0, 0])
    assert result.as_numpy("AUDIO").shape == (1, 12 * rate)


@pytest.mark.parametrize(
    ("cuts", "needle"),
    [
        ([3.0, 2.0], "sorted"),
        ([-1.0], "strictly between 0 and the duration 5 s"),
        ([6.0], "strictly between 0 and the duration 5 s"),
        ([float("nan")], "NaN"),
        (list(np.linspace(0.05, 4.9, contract.MAX_CUTS + 1)), "more than 64"),
    ],
    ids=["unsorted", "negative", "past-the-end", "nan", "too-many"],
)
def test_bad_cuts_are_rejected_naming_the_tensor_and_the_rule(client, cuts, needle):
    inputs = [
        tensor("TAGS", text("pop")),
        tensor("DURATION_S", np.array([5.0], np.float32)),
        tensor("CUTS_S", np.array(cuts, np.float32)),
    ]
    assert_invalid(client, contract.COMPOSER_MODEL, inputs, "CUTS_S", needle)


def test_wrong_dtype_is_rejected_naming_the_tensor(client):
    bad = frames().astype(np.float32)
    assert_invalid(
        client,
        contract.CAPTIONER_MODEL,
        [tensor("FRAMES", bad, "FP32"), tensor("FPS", np.array([1.0], np.float32))],
        "FRAMES",
    )


@pytest.mark.parametrize("shape", [(3, 64, 96), (3, 64, 96, 4)])
def test_wrong_shape_is_rejected_naming_the_tensor(client, shape):
    bad = np.zeros(shape, np.uint8)
    assert_invalid(
        client,
        contract.CAPTIONER_MODEL,
        [tensor("FRAMES", bad), tensor("FPS", np.array([1.0], np.float32))],
        "FRAMES",
    )


@pytest.mark.parametrize(
    ("video", "needle"),
    [
        (np.zeros((0, 64, 64, 3), np.uint8), "zero frames"),
        (np.zeros((contract.MAX_FRAMES + 1, 16, 16, 3), np.uint8), str(contract.MAX_FRAMES)),
        (np.zeros((1, 2000, 64, 3), np.uint8), str(contract.MAX_FRAME_SIDE)),
    ],
)
def test_frames_out_of_limits_are_rejected(client, video, needle):
    assert_invalid(
        client,
        contract.PIPELINE_MODEL,
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
        ("pop", contract.MAX_DURATION_S + 1, "DURATION_S"),
        ("pop", 601.0, "the operator's setting"),  # above the default cap, within the interface
        ("pop", float("nan"), "DURATION_S"),
        ("", 2.0, "TAGS"),
        ("x" * (contract.MAX_TAGS_BYTES + 1), 2.0, "TAGS"),
    ],
)
def test_composer_inputs_out_of_limits_are_rejected(client, tags, duration, needle):
    inputs = [tensor("TAGS", text(tags)), tensor("DURATION_S", np.array([duration], np.float32))]
    assert_invalid(client, contract.COMPOSER_MODEL, inputs, needle)


def test_the_ensemble_refuses_music_above_the_cap_before_captioning(client, server):
    """10 minutes is this server's cap (the configs' default): 601 s is within the interface, so
    the captioner, first in the ensemble, refuses it with the cap's message and captions nothing."""
    from tests.reliability.probes import metric

    before = metric(server.metrics_port, "v2bgm_frames_captioned_total", contract.CAPTIONER_MODEL)
    inputs = [
        tensor("FRAMES", frames()),
        tensor("FPS", np.array([0.005], np.float32)),  # 3 frames over 10 minutes
        tensor("DURATION_S", np.array([601.0], np.float32)),
    ]
    assert_invalid(client, contract.PIPELINE_MODEL, inputs, "DURATION_S is 601 s", "600 s")
    after = metric(server.metrics_port, "v2bgm_frames_captioned_total", contract.CAPTIONER_MODEL)
    assert after == before


def test_invalid_utf8_text_is_rejected(client):
    inputs = [
        tensor("TAGS", np.array([b"\xff\xfe pop"], dtype=np.object_)),
        tensor("DURATION_S", np.array([2.0], np.float32)),
    ]
    assert_invalid(client, contract.COMPOSER_MODEL, inputs, "TAGS", "UTF-8")


def test_composer_rejects_a_batch_of_two(client):
    inputs = []
    for name, value in [
        ("TAGS", np.array([[b"pop"], [b"rock"]], dtype=np.object_)),
        ("DURATION_S", np.array([[2.0], [2.0]], np.float32)),
    ]:
        t = grpcclient.InferInput(name, list(value.shape), "BYTES" if name == "TAGS" else "FP32")
        t.set_data_from_numpy(value)
        inputs.append(t)
    assert_invalid(client, contract.COMPOSER_MODEL, inputs, "one composition per request")


def test_captioner_batches_videos_of_different_sizes(client):
    """Concurrent requests meet in the dynamic batcher; each answer equals its answer alone."""
    videos = [frames(2, 64, 96), frames(5, 48, 48), frames(3, 80, 120)]

    def request(video):
        return [tensor("FRAMES", video), tensor("FPS", np.array([1.0], np.float32))]

    alone = [
        client.infer(contract.CAPTIONER_MODEL, request(v)).as_numpy("TAGS")[0, 0] for v in videos
    ]
    results: list = [None] * len(videos)
    for i, video in enumerate(videos):
        client.async_infer(
            contract.CAPTIONER_MODEL,
            request(video),
            callback=lambda result, error, i=i: results.__setitem__(i, (result, error)),
        )
    deadline = time.monotonic() + 120
    while any(r is None for r in results) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(r is not None and r[1] is None for r in results), results
    assert [r[0].as_numpy("TAGS")[0, 0] for r in results] == alone


def test_captioner_serves_its_largest_batch_in_one_request(client):
    """CAPTIONER_MAX_BATCH videos in one request (the rendered max_batch_size) are captioned,
    each as alone; one video more is refused before the model sees it."""
    batch = contract.CAPTIONER_MAX_BATCH
    videos = np.random.default_rng(0).integers(0, 256, (batch + 1, 2, 48, 64, 3), dtype=np.uint8)

    def tags(rows: np.ndarray) -> np.ndarray:
        inputs = []
        for name, value in [("FRAMES", rows), ("FPS", np.ones((len(rows), 1), np.float32))]:
            t = grpcclient.InferInput(
                name, list(value.shape), contract.CAPTIONER.input(name).datatype
            )
            t.set_data_from_numpy(value)
            inputs.append(t)
        return client.infer(contract.CAPTIONER_MODEL, inputs).as_numpy("TAGS")[:, 0]

    together = tags(videos[:batch])
    assert len(together) == batch
    assert [tags(videos[i : i + 1])[0] for i in (0, batch - 1)] == [together[0], together[-1]]
    with pytest.raises(InferenceServerException, match=f"<= {batch}"):
        tags(videos)
    assert client.is_model_ready(contract.CAPTIONER_MODEL)


def test_composer_stems_on_request(client):
    def ask(lyrics: str, outputs: list[str]):
        inputs = [
            tensor("TAGS", text("pop piano")),
            tensor("LYRICS", text(lyrics)),
            tensor("DURATION_S", np.array([1.5], np.float32)),
        ]
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        return client.infer(contract.COMPOSER_MODEL, inputs, outputs=requested)

    plain = ask("", ["AUDIO", "SAMPLE_RATE"])
    assert plain.as_numpy("STEMS") is None  # not asked for, not sent
    rate = int(plain.as_numpy("SAMPLE_RATE")[0, 0])
    instrumental = ask("", ["AUDIO", "STEMS"]).as_numpy("STEMS")
    assert instrumental.shape == (1, 2, round(1.5 * rate))
    assert np.abs(instrumental[0, 0]).max() > 0 and not instrumental[0, 1].any()
    sung = ask("[verse]\nla la la\n", ["STEMS"]).as_numpy("STEMS")
    assert np.abs(sung[0, 1]).max() > 0  # the vocal track
