"""Request building and response parsing (pure), and the failure paths without a server."""

from __future__ import annotations

import numpy as np
import pytest
from v2bgm_client.api import (
    build_request,
    infer,
    infer_inputs,
    parse_response,
    request_duration,
    score_video,
    server_error,
)
from v2bgm_client.errors import ServerError, VideoError
from v2bgm_client.video import sample_frames
from v2bgm_contract import interface as contract

FRAMES = np.zeros((3, 182, 322, 3), np.uint8)
SECTIONS_JSON = b'[{"label": "[verse]", "start_s": 0.0, "end_s": 0.6}]'


def _response(**overrides: object) -> dict[str, object]:
    """A batch-of-one PIPELINE response; overrides give one item (the batch dim is added)."""
    outputs = {
        contract.CAPTION.name: np.array([b"A cat chases a laser dot."], dtype=np.object_),
        contract.TAGS.name: np.array([b"playful piano upbeat"], dtype=np.object_),
        contract.LYRICS.name: np.array([b""], dtype=np.object_),
        contract.AUDIO.name: np.linspace(-1, 1, 44_100, dtype=np.float32),
        contract.SAMPLE_RATE.name: np.array([44_100], np.int32),
        contract.SECTIONS.name: np.array([SECTIONS_JSON], dtype=np.object_),
    }
    outputs.update(overrides)
    return {k: None if v is None else np.asarray(v)[None] for k, v in outputs.items()}


def test_request_follows_the_interface():
    request = build_request(FRAMES, 1.0, 3.0, 42)
    assert list(request) == ["FRAMES", "FPS", "DURATION_S", "SEED", "VOCALS"]
    for spec in contract.PIPELINE.inputs:
        if spec.name not in request:
            assert spec.optional
            continue
        array = request[spec.name]
        assert array.dtype == spec.numpy_dtype and array.flags.c_contiguous
        assert array.shape[0] == 1 and array.ndim == len(spec.shape) + 1  # a batch of one
        assert all(want in (-1, got) for want, got in zip(spec.shape, array.shape[1:], strict=True))
    assert np.array_equal(request[contract.FRAMES.name][0], FRAMES)
    assert request[contract.FPS.name].tolist() == [[1.0]]
    assert request[contract.DURATION_S.name].tolist() == [[3.0]]
    assert request[contract.SEED.name].tolist() == [[42]]
    assert request[contract.VOCALS.name].tolist() == [[False]]


def test_request_carries_steering():
    request = build_request(
        FRAMES, 1.0, 3.0, 42, vocals=True, hint="upbeat, no drums", fixed_tags=("jazz", "piano")
    )
    assert request[contract.VOCALS.name].tolist() == [[True]]
    assert request[contract.HINT.name].tolist() == [[b"upbeat, no drums"]]
    assert request[contract.FIXED_TAGS.name].tolist() == [[b"jazz", b"piano"]]
    with pytest.raises(contract.InvalidInput, match="FIXED_TAGS"):
        build_request(FRAMES, 1.0, 3.0, 42, fixed_tags=("pop",) * (contract.MAX_FIXED_TAGS + 1))
    with pytest.raises(contract.InvalidInput, match="HINT"):
        build_request(FRAMES, 1.0, 3.0, 42, hint="x" * (contract.MAX_HINT_BYTES + 1))


def test_request_from_a_real_video(make_video):
    sampled = sample_frames(make_video("c.mp4", seconds=3, width=322, height=182))
    request = build_request(sampled.frames, sampled.fps, request_duration(sampled.duration_s), 7)
    assert request[contract.FRAMES.name].shape == (1, 3, 182, 322, 3)


def test_infer_inputs_carry_names_shapes_and_types():
    inputs = infer_inputs(build_request(FRAMES, 1.0, 3.0, 42))
    got = [(i.name(), i.shape(), i.datatype()) for i in inputs]
    assert got == [
        ("FRAMES", [1, 3, 182, 322, 3], "UINT8"),
        ("FPS", [1, 1], "FP32"),
        ("DURATION_S", [1, 1], "FP32"),
        ("SEED", [1, 1], "INT64"),
        ("VOCALS", [1, 1], "BOOL"),
    ]


@pytest.mark.parametrize(
    ("frames", "fps", "duration", "seed", "message"),
    [
        (FRAMES.astype(np.float32), 1.0, 3.0, 0, "uint8"),
        (FRAMES[..., :1], 1.0, 3.0, 0, "shape"),
        (FRAMES[:0], 1.0, 3.0, 0, "zero frames"),
        (np.zeros((2, 500, 100, 3), np.uint8), 1.0, 3.0, 0, "resize"),
        (np.zeros((contract.MAX_FRAMES + 1, 16, 16, 3), np.uint8), 1.0, 3.0, 0, "limit"),
        (FRAMES, 0.0, 3.0, 0, "FPS"),
        (FRAMES, 1.0, 0.5, 0, "DURATION_S"),
        (FRAMES, 1.0, contract.MAX_DURATION_S + 1, 0, "DURATION_S"),
        (FRAMES, 1.0, 3.0, -1, "SEED"),
        (FRAMES, 1.0, 3.0, contract.SEED_MAX + 1, "SEED"),
    ],
)
def test_request_rejects_what_the_server_would(frames, fps, duration, seed, message):
    with pytest.raises(contract.InvalidInput, match=message):
        build_request(frames, fps, duration, seed)


def test_request_duration_within_limits():
    assert request_duration(0.04) == contract.MIN_DURATION_S  # the music is cut to the video later
    assert request_duration(12.5) == 12.5


def test_parse_response():
    response = parse_response(_response())
    assert response.caption == "A cat chases a laser dot."
    assert response.tags == "playful piano upbeat"
    assert response.audio.dtype == np.float32 and response.audio.shape == (44_100,)
    assert response.sample_rate == 44_100
    assert response.sections == [{"label": "[verse]", "start_s": 0.0, "end_s": 0.6}]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({contract.AUDIO.name: None}, "no AUDIO"),
        ({contract.AUDIO.name: np.zeros(10, np.float64)}, "AUDIO is float64"),
        ({contract.AUDIO.name: np.zeros((2, 10), np.float32)}, "AUDIO must have shape"),
        ({contract.AUDIO.name: np.array([0.0, np.nan], np.float32)}, "NaN"),
        ({contract.SAMPLE_RATE.name: np.array([0], np.int32)}, "SAMPLE_RATE is 0"),
        ({contract.SECTIONS.name: np.array([b"[{"], dtype=np.object_)}, "SECTIONS is not"),
        ({contract.SAMPLE_RATE.name: np.array([44_100], np.int64)}, "SAMPLE_RATE is int64"),
        ({contract.TAGS.name: np.array([b"a", b"b"], np.object_)}, "TAGS must have shape"),
        ({contract.CAPTION.name: np.array([3], np.object_)}, "text output"),
    ],
)
def test_parse_response_rejects_malformed(override, message):
    with pytest.raises(ServerError, match=message):
        parse_response(_response(**override))


def test_parse_response_tolerates_bad_utf8():
    caption = parse_response(_response(CAPTION=np.array([b"caf\xe9"], np.object_))).caption
    assert caption.startswith("caf")


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (
            "StatusCode.UNAVAILABLE",
            "failed to connect to all addresses",
            "cannot reach the server at h:1",
        ),
        (
            "StatusCode.UNAVAILABLE",
            "Request for unknown model: 'x' has no available versions",
            "h:1 is unavailable",
        ),
        (
            "StatusCode.INVALID_ARGUMENT",
            "FRAMES holds 0 frames",
            "rejected the request: FRAMES holds 0",
        ),
        (
            "StatusCode.UNAVAILABLE",
            "Stream removed (Socket closed)",
            "lost the connection to the server at h:1 during the request",
        ),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", "did not answer within 5 s"),
        ("StatusCode.INTERNAL", "CUDA out of\nmemory", "(INTERNAL): CUDA out of memory"),
        (None, None, "unknown status"),
    ],
)
def test_server_errors_are_one_clear_line(status, message, expected):
    error = server_error("h:1", status, message, 5.0)
    assert expected in str(error) and "\n" not in str(error)


def test_infer_with_no_server(unused_url):
    with pytest.raises(ServerError, match=f"cannot reach the server at {unused_url}"):
        infer(unused_url, build_request(FRAMES, 1.0, 3.0, 42), timeout_s=5)


def test_score_video_with_no_server_writes_nothing(make_video, tmp_path, unused_url):
    src = make_video("c.mp4", seconds=3, width=322, height=182)
    with pytest.raises(ServerError, match=unused_url):
        score_video(src, tmp_path / "out.mp4", url=unused_url, timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def test_score_video_checks_input_before_calling(tmp_path, unused_url):
    with pytest.raises(VideoError, match="no such file"):
        score_video(tmp_path / "nope.mp4", tmp_path / "out.mp4", url=unused_url)
    with pytest.raises(contract.InvalidInput, match="SEED"):
        score_video(tmp_path / "nope.mp4", tmp_path / "out.mp4", url=unused_url, seed=-5)
