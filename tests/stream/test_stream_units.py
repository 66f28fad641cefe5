"""The streaming model's parts that need no server: request checks, ETA, the progress channel,
and a composition that stops within a token when its caller cancels."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from v2bgm_contract import interface as contract

from v2bgm.composer import Cancelled, MusicRequest
from v2bgm.triton import stream_job
from v2bgm.triton.eta import Eta
from v2bgm.triton.progress_channel import (
    CANCEL_CHECK_INTERVAL_S,
    ComposerReport,
    ProgressChannel,
)

FRAMES = np.zeros((1, 4, 32, 48, 3), np.uint8)  # a batch of one: 4 s at 1 frame/s


def inputs(**extra: np.ndarray) -> dict[str, np.ndarray]:
    return {"FRAMES": FRAMES, "FPS": np.array([[1.0]], np.float32), **extra}


def test_defaults_duration_from_the_video_seed_drawn_one_candidate():
    job = stream_job.parse(inputs(), seed_source=lambda: 77)
    assert (job.duration_s, job.seed, job.candidates, job.vocals) == (4.0, 77, 1, False)
    half_rate = stream_job.parse(inputs(FPS=np.array([[0.5]], np.float32)))
    assert half_rate.duration_s == 8.0  # 4 frames, one every 2 s


def test_cuts_within_the_music_are_kept():
    job = stream_job.parse(inputs(CUTS_S=np.array([[1.5, 2.5]], np.float32)))
    assert job.cuts_s == (1.5, 2.5)
    assert stream_job.parse(inputs()).cuts_s == ()


def test_candidate_seeds_follow_and_wrap():
    job = stream_job.parse(inputs(SEED=np.array([[contract.SEED_MAX]], np.int64)))
    assert [job.seed_of(i) for i in range(3)] == [
        contract.SEED_MAX,
        contract.SEED_MIN,
        contract.SEED_MIN + 1,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"CANDIDATES": np.array([[9]], np.int32)}, "CANDIDATES must be in [1, 4], got 9"),
        ({"CANDIDATES": np.array([[0]], np.int32)}, "CANDIDATES must be in [1, 4], got 0"),
        ({"DURATION_S": np.array([[0.5]], np.float32)}, "DURATION_S must be in [1.0, 1200.0]"),
        ({"DURATION_S": np.array([[601.0]], np.float32)}, "more than this server composes: 600"),
        ({"SEED": np.array([[-3]], np.int64)}, "SEED must be in"),
        ({"HINT": np.array([[b"x" * 513]], np.object_)}, "HINT is 513 bytes"),
        ({"FIXED_TAGS": np.array([[b"jaz"]], np.object_)}, "jazz"),  # near matches
        ({"FPS": np.array([[0.0]], np.float32)}, "FPS must be in"),
        ({"FRAMES": np.zeros((2, 4, 32, 48, 3), np.uint8)}, "batch dimension of 1"),
        ({"CUTS_S": np.array([[4.0]], np.float32)}, "CUTS_S must lie strictly between 0 and"),
        ({"CUTS_S": np.array([[2.0, 1.0]], np.float32)}, "CUTS_S must be sorted"),
    ],
)
def test_bad_requests_are_named(extra, message):
    with pytest.raises(contract.InvalidInput) as err:
        stream_job.parse(inputs(**extra))
    assert message in str(err.value)


def test_eta_learns_stage_costs_per_second_of_music():
    eta = Eta()
    # Before any composition has finished the later stages are unknown: no estimate.
    assert eta.remaining_s("stage1", 0.5, 10.0, 10.0, 0) is None
    assert eta.remaining_s(None, 0.0, 0.0, 10.0, 0) is None
    eta.learn({"stage1": 20.0, "stage2": 10.0, "decode": 2.0}, music_s=10.0)
    assert eta.composition_s(5.0) == pytest.approx(16.0)
    # Half of stage 1 left (10 s at its pace), then stage 2 and decode (12 s), then 1 more.
    assert eta.remaining_s("stage1", 0.5, 10.0, 10.0, 1) == pytest.approx(10 + 12 + 32)
    assert eta.remaining_s(None, 0.0, 0.0, 10.0, 0) == pytest.approx(32.0)  # queued: all of it
    eta.learn({"stage1": 40.0, "stage2": 10.0, "decode": 2.0}, music_s=10.0)
    assert eta.cost_per_music_s["stage1"] == pytest.approx(3.0)  # averaged


def test_channel_carries_progress_and_cancellation(tmp_path: Path):
    channel = ProgressChannel.create(tmp_path)
    seen_by_composer = ProgressChannel(channel.token, tmp_path)
    now = [100.0]
    report = ComposerReport(seen_by_composer, clock=lambda: now[0])
    report("stage1", 0.0)
    now[0] += 1.5
    report("stage1", 0.25)
    state = channel.read()
    assert state["stage"] == "stage1" and state["fraction"] == 0.25
    assert state["time"] - state["stage_started"] == pytest.approx(1.5)
    now[0] += 0.01
    report("stage1", 0.26)  # within PUBLISH_INTERVAL_S: not published
    assert channel.read()["fraction"] == 0.25
    now[0] += 2.0
    report("stage2", 0.1)  # a new stage is published at once, and live progress only
    assert set(channel.read()) == {"stage", "fraction", "stage_started", "time"}
    assert channel.read()["stage"] == "stage2"
    channel.cancel()
    now[0] += 1.0
    with pytest.raises(Cancelled):
        report("stage2", 0.2)
    channel.close()
    assert list(tmp_path.iterdir()) == []


def test_a_triton_cancellation_stops_a_composition_without_a_channel():
    cancelled, now = [False], [0.0]
    report = ComposerReport(None, is_cancelled=lambda: cancelled[0], clock=lambda: now[0])
    report("stage1", 0.1)
    cancelled[0] = True
    report("stage1", 0.15)  # asked at most every CANCEL_CHECK_INTERVAL_S: an IPC round trip
    now[0] += CANCEL_CHECK_INTERVAL_S
    with pytest.raises(Cancelled):
        report("stage1", 0.2)


@pytest.mark.parametrize("token", ["../../etc/passwd", "ABC", "0" * 31, ""])
def test_channel_tokens_never_become_paths(token):
    with pytest.raises(ValueError, match="bad progress channel token"):
        ProgressChannel(token)


def test_composer_stops_within_a_token_of_a_cancel(weights: Path, tmp_path: Path):
    from v2bgm.yue.composer import YuEComposer

    composer = YuEComposer.from_pretrained(weights, "cpu")
    channel = ProgressChannel.create(tmp_path)
    report = ComposerReport(ProgressChannel(channel.token, tmp_path))
    calls: list[tuple[str, float]] = []
    cancelled_at: list[float] = []

    def progress(stage: str, fraction: float) -> None:
        calls.append((stage, fraction))
        if fraction > 0 and not cancelled_at:  # mid-stage-1: the caller goes away
            cancelled_at.append(time.perf_counter())
            threading.Thread(target=channel.cancel).start()
        report(stage, fraction)

    with pytest.raises(Cancelled):
        composer.compose(MusicRequest("pop piano calm", duration_s=60.0, seed=1), progress)
    stopped_s = time.perf_counter() - cancelled_at[0]
    assert {stage for stage, _ in calls} == {"stage1"}
    assert max(f for _, f in calls) < 0.1  # a long way from the end of stage 1
    assert stopped_s < 1.0


def test_eta_grows_linearly_with_the_music():
    """Costs are learned per second of music, so 6 minutes of music are estimated at 12 times 30
    seconds', queued or mid-stage, and the rest of a stage follows its own pace."""
    eta = Eta()
    eta.learn({"stage1": 15.0, "stage2": 3.0, "decode": 0.6}, music_s=30.0)
    short, long = 30.0, 360.0
    assert eta.composition_s(long) == pytest.approx(12 * eta.composition_s(short))
    assert eta.remaining_s(None, 0.0, 0.0, long, 0) == pytest.approx(
        12 * eta.remaining_s(None, 0.0, 0.0, short, 0)
    )
    # just started stage 1 (below MIN_FRACTION: its pace is noise), then halfway at its own pace
    assert eta.remaining_s("stage1", 0.0, 0.1, long, 0) == pytest.approx(12 * 18.6)
    assert eta.remaining_s("stage1", 0.5, 90.0, long, 0) == pytest.approx(90 + 12 * 3.6)
    # two more candidates of 6 minutes after this one
    assert eta.remaining_s("decode", 0.5, 3.6, long, 2) == pytest.approx(3.6 + 2 * 12 * 18.6)
