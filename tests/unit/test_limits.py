"""The operator's cap on DURATION_S: the model configs' value, overridden by the environment,
the same in every model that reads DURATION_S, and a refusal that says whose limit it is."""

from __future__ import annotations

import numpy as np
import pytest
from v2bgm_contract import interface as contract

from v2bgm.triton import limits, model_configs, stream_job
from v2bgm.triton.handlers import CaptionerHandler, ComposerHandler


def test_the_interface_allows_twenty_minutes_and_servers_ten_by_default():
    assert contract.MAX_DURATION_S == 1200.0
    assert limits.DEFAULT_MAX_DURATION_S == model_configs.MAX_DURATION_S == 600.0
    contract.check_duration(1200.0)
    with pytest.raises(contract.InvalidInput, match=r"must be in \[1.0, 1200.0\] seconds"):
        contract.check_duration(1200.5)


def test_the_cap_comes_from_the_environment_then_the_config_then_the_default():
    assert limits.max_duration_s({}, {}) == 600.0
    assert limits.max_duration_s({"max_duration_s": "900"}, {}) == 900.0
    assert limits.max_duration_s({"max_duration_s": "900"}, {limits.ENV: "1200"}) == 1200.0
    assert limits.max_duration_s({"max_duration_s": "900"}, {limits.ENV: " "}) == 900.0
    assert limits.max_duration_s({"max_duration_s": ""}, {}) == 600.0


@pytest.mark.parametrize(
    ("params", "environ", "needle"),
    [
        ({}, {limits.ENV: "ten minutes"}, f"${limits.ENV} must be a number of seconds"),
        ({}, {limits.ENV: "1500"}, f"${limits.ENV} must be in [1, 1200] seconds"),
        ({}, {limits.ENV: "0.5"}, f"${limits.ENV} must be in [1, 1200] seconds"),
        ({}, {limits.ENV: "nan"}, f"${limits.ENV} must be in [1, 1200] seconds"),
        ({"max_duration_s": "1201"}, {}, "the model config's max_duration_s must be in"),
    ],
)
def test_a_bad_cap_stops_the_model_naming_where_it_came_from(params, environ, needle):
    with pytest.raises(ValueError) as err:
        limits.max_duration_s(params, environ)
    assert needle in str(err.value)


def test_above_the_cap_is_invalid_naming_the_tensor_the_cap_and_the_operator():
    limits.check_duration(600.0, 600.0)
    with pytest.raises(contract.InvalidInput) as err:
        limits.check_duration(601.0, 600.0)
    message = str(err.value)
    for needle in ("DURATION_S is 601 s", "600 s", "operator", "max_duration_s", limits.ENV):
        assert needle in message
    with pytest.raises(contract.InvalidInput, match=r"\[1.0, 1200.0\]"):  # the interface first
        limits.check_duration(1300.0, 600.0)


def test_every_model_that_reads_duration_carries_the_same_cap():
    rendered = model_configs.render()
    line = 'parameters { key: "max_duration_s" value: { string_value: "600" } }'
    readers = [
        "video_captioner/config.pbtxt",
        "video_captioner/configs/cpu.pbtxt",
        "music_composer/config.pbtxt",
        "music_composer/configs/cpu.pbtxt",
        "video_to_music_stream/config.pbtxt",
    ]
    for path in readers:
        assert line in rendered[path], path
    assert "max_duration_s" not in rendered["video_to_music/config.pbtxt"]  # the ensemble: none


def _row(**tensors: object) -> dict[str, np.ndarray]:
    """One item of a request (the batch dimension removed), as the handlers parse it."""
    specs = {s.name: s for s in (*contract.COMPOSER.inputs, *contract.CAPTIONER.inputs)}
    return {k: np.asarray(v, dtype=specs[k].numpy_dtype) for k, v in tensors.items()}


def test_the_composer_and_the_captioner_refuse_above_their_cap():
    six_minutes = _row(TAGS=[b"pop piano"], DURATION_S=[360.0])
    assert ComposerHandler.parse(six_minutes).duration_s == 360.0  # the default cap: 600 s
    with pytest.raises(contract.InvalidInput, match="more than this server composes: 300 s"):
        ComposerHandler.parse(six_minutes, max_duration_s=300.0)
    video = _row(FRAMES=np.zeros((2, 32, 32, 3), np.uint8), FPS=[1.0], DURATION_S=[700.0])
    with pytest.raises(contract.InvalidInput, match="more than this server composes: 600 s"):
        CaptionerHandler.parse(video)
    assert CaptionerHandler.parse(video, max_duration_s=1200.0).duration_s == 700.0


def test_the_stream_refuses_above_its_cap_and_defaults_within_it():
    frames = np.zeros((1, 90, 32, 32, 3), np.uint8)  # 90 frames, one every 8 s: a 12-min video
    inputs = {"FRAMES": frames, "FPS": np.array([[0.125]], np.float32)}
    assert stream_job.parse(inputs).duration_s == 600.0  # the video's length, within the cap
    assert stream_job.parse(inputs, max_duration_s=1200.0).duration_s == 720.0
    asked = {**inputs, "DURATION_S": np.array([[720.0]], np.float32)}
    with pytest.raises(contract.InvalidInput, match="more than this server composes: 600 s"):
        stream_job.parse(asked)
    assert stream_job.parse(asked, max_duration_s=720.0).duration_s == 720.0
