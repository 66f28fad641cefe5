"""A second composer served end to end by changing one config value.

The composer's model config names `tests.composers.sine_sweep:load` instead of `yue-v1`
(v2bgm.composers); nothing else changes. The ensemble and the streaming model then answer with
its sine sweep, its own stage names reach the stream's events and the metrics, and its line for a
slot is metered like YuE's: the served model knows composers only through the port.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from v2bgm_contract import interface as contract

from tests.composers import sine_sweep
from tests.reliability.servers import render_repository, start_server
from tests.stream.test_stream_server import Stream, request
from tests.stream.test_stream_server import tensor as stream_tensor
from v2bgm.serve import TritonServer
from v2bgm.triton import metrics

pytestmark = pytest.mark.server

TOY = "tests.composers.sine_sweep:load"
MODELS = (
    contract.CAPTIONER_MODEL,
    contract.COMPOSER_MODEL,
    contract.PIPELINE_MODEL,
    contract.STREAM_MODEL,
)
MUSIC_S = 2.0
SIX_MINUTES_S = 360.0  # above the interface's old 300 s, within the default cap


@pytest.fixture(scope="module")
def server(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("second-composer")
    repository = render_repository(
        root / "repo", MODELS, {contract.COMPOSER_MODEL: {"composer": TOY}}
    )
    config = (repository / contract.COMPOSER_MODEL / "configs" / "cpu.pbtxt").read_text()
    assert f'key: "composer" value: {{ string_value: "{TOY}" }}' in config  # the one change
    triton = start_server(repository, weights, root / "tritonserver.log")
    yield triton
    assert triton.stop() == 0


def expected(duration_s: float, seed: int) -> np.ndarray:
    audio = sine_sweep.sweep(duration_s, seed)
    fade = sine_sweep.SAMPLE_RATE // 100
    audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return audio


def rising_pitch(audio: np.ndarray) -> tuple[float, float]:
    """Zero crossings per second in the first and the last fifth: the sweep's pitch."""
    fifth = len(audio) // 5
    rate = sine_sweep.SAMPLE_RATE

    def crossings(part: np.ndarray) -> float:
        return np.count_nonzero(np.diff(np.signbit(part))) / 2 / (len(part) / rate)

    return crossings(audio[:fifth]), crossings(audio[-fifth:])


def pipeline_inputs(
    video: np.ndarray, fps: float, duration_s: float, seed: int
) -> list[grpcclient.InferInput]:
    """The ensemble's inputs for `video` [1, T, H, W, 3]."""
    inputs = []
    for name, value in (
        ("FRAMES", video),
        ("FPS", np.array([[fps]], np.float32)),
        ("DURATION_S", np.array([[duration_s]], np.float32)),
        ("SEED", np.array([[seed]], np.int64)),
    ):
        spec = next(t for t in contract.PIPELINE.inputs if t.name == name)
        tensor = grpcclient.InferInput(name, list(value.shape), spec.datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def test_the_ensemble_answers_with_the_second_composers_music(server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    video = np.random.default_rng(0).integers(0, 256, (1, 2, 64, 96, 3), dtype=np.uint8)
    result = client.infer(
        contract.PIPELINE_MODEL, pipeline_inputs(video, 1.0, MUSIC_S, 7), client_timeout=300
    )
    audio = result.as_numpy("AUDIO")[0]
    assert int(result.as_numpy("SAMPLE_RATE")[0, 0]) == sine_sweep.SAMPLE_RATE
    np.testing.assert_allclose(audio, expected(MUSIC_S, 7), atol=1e-6)
    low, high = rising_pitch(audio)  # 220-352 Hz in the first fifth, 748-880 Hz in the last
    assert 220 < low < 352 and 748 < high < 880
    assert result.as_numpy("TAGS")[0, 0]  # the captioner ran as usual
    client.close()


def test_the_stream_shows_the_second_composers_own_stages(server: TritonServer) -> None:
    stream = Stream(f"127.0.0.1:{server.grpc_port}")
    stream.send(request(2, DURATION_S=[MUSIC_S], SEED=[3]))
    events = list(stream.events())
    stream.client.stop_stream()
    kinds = [event["type"] for event, _ in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "audio" in kinds
    composed, audio = next((e, a) for e, a in events if e["type"] == "audio")
    np.testing.assert_allclose(audio[0], expected(MUSIC_S, 3), atol=1e-6)
    assert set(composed["timings"]) == set(sine_sweep.SineSweep.stages)  # from TIMINGS
    done = events[-1][0]
    assert set(sine_sweep.SineSweep.stages) <= set(done["timings"])


def test_six_minutes_of_music_through_the_ensemble_and_the_stream(server: TritonServer) -> None:
    """A 6-minute video's music, within the default cap of 10 minutes: exactly as long, through
    the served path a long YuE composition takes (the handler's checks, the ensemble, the stream).
    The sine sweep stands in for YuE, whose tiny models take minutes of this CPU for 6 minutes of
    music; YuE's own long path is tests/engine/test_long_music.py."""
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    video = np.random.default_rng(1).integers(0, 256, (1, 3, 64, 96, 3), dtype=np.uint8)
    fps = 3 / SIX_MINUTES_S  # 3 frames, one every 2 minutes
    inputs = pipeline_inputs(video, fps, SIX_MINUTES_S, 5)
    result = client.infer(contract.PIPELINE_MODEL, inputs, client_timeout=300)
    audio = result.as_numpy("AUDIO")[0]
    assert len(audio) == SIX_MINUTES_S * sine_sweep.SAMPLE_RATE
    np.testing.assert_allclose(audio, expected(SIX_MINUTES_S, 5), atol=1e-6)
    client.close()

    stream = Stream(f"127.0.0.1:{server.grpc_port}")
    stream.send(  # no DURATION_S: the video's, 3 frames at one every 2 minutes
        [
            stream_tensor(n, v)
            for n, v in (("FRAMES", video[0]), ("FPS", [3 / SIX_MINUTES_S]), ("SEED", [5]))
        ]
    )
    events = list(stream.events())
    stream.client.stop_stream()
    started = events[0][0]
    assert started["type"] == "started" and started["duration_s"] == pytest.approx(SIX_MINUTES_S)
    composed, audio = next((e, a) for e, a in events if e["type"] == "audio")
    assert composed["audio_s"] == pytest.approx(SIX_MINUTES_S)
    assert audio.shape == (1, SIX_MINUTES_S * sine_sweep.SAMPLE_RATE)
    for event, _ in events:
        if event["type"] == "progress":
            assert event["music_s"] == pytest.approx(event["fraction"] * SIX_MINUTES_S)


def test_metrics_follow_the_second_composers_stages(server: TritonServer) -> None:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    composer = f'model="{contract.COMPOSER_MODEL}"'
    stages = {
        json.loads('"' + line.split('stage="', 1)[1].split('"', 1)[0] + '"')
        for line in text.splitlines()
        if line.startswith(metrics.STAGE_SECONDS + "_count") and composer in line
    }
    assert stages == set(sine_sweep.SineSweep.stages)
    for line in text.splitlines():
        if line.startswith(metrics.SLOTS + "{") and composer in line:
            assert float(line.rsplit(" ", 1)[1]) == 4  # the config's CPU slots
