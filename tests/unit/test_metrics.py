"""The served models' metrics recorder (v2bgm.triton.metrics.ModelMetrics) on a stand-in for the
Python backend's MetricFamily: which series each model gets, and what the composer's scheduler
reports (its line for a slot, the requests composing, the slots)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from v2bgm_contract import interface as contract

from v2bgm.composer import StageStats
from v2bgm.triton import metrics
from v2bgm.triton.handlers import CaptionerHandler
from v2bgm.yue import composer as yue

# what each served model declares: the captioner's handler, the composer's own stages
DECLARED = {
    contract.COMPOSER_MODEL: (yue.STAGES, yue.TOKEN_STAGES, metrics.LINE),
    contract.CAPTIONER_MODEL: (
        CaptionerHandler.stages,
        CaptionerHandler.token_stages,
        metrics.BATCH,
    ),
    contract.STREAM_MODEL: ((), (), metrics.STREAM),
}


class FakeMetric:
    def __init__(self, labels: dict[str, str], buckets: list[float] | None = None) -> None:
        self.labels, self.buckets = labels, buckets
        self.value = 0.0
        self.observed: list[float] = []

    def increment(self, amount: float) -> None:
        self.value += amount

    def observe(self, value: float) -> None:
        self.observed.append(value)


def fake_pb_utils() -> tuple[SimpleNamespace, dict[str, list[FakeMetric]]]:
    series: dict[str, list[FakeMetric]] = {}

    class MetricFamily:
        COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

        def __init__(self, name: str, description: str, kind: str) -> None:
            assert name not in series, f"{name} created twice"
            self.name = name
            series[name] = []

        def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> FakeMetric:
            metric = FakeMetric(labels, buckets)
            series[self.name].append(metric)
            return metric

    return SimpleNamespace(MetricFamily=MetricFamily), series


def recorder(model: str) -> tuple[metrics.ModelMetrics, dict[str, list[FakeMetric]]]:
    pb_utils, series = fake_pb_utils()
    stages, token_stages, role = DECLARED[model]
    return metrics.ModelMetrics(pb_utils, model, "1", stages, token_stages, role), series


def value(series: dict[str, list[FakeMetric]], name: str) -> float:
    (metric,) = series[name]
    return metric.value


def test_only_the_composer_has_a_line_of_its_own() -> None:
    _, composer = recorder(contract.COMPOSER_MODEL)
    _, captioner = recorder(contract.CAPTIONER_MODEL)
    line = {metrics.WAITING, metrics.QUEUE_SECONDS, metrics.CACHE_BYTES, metrics.CACHE_USED_BYTES}
    stream = {metrics.FIRST_EVENT_SECONDS, metrics.FIRST_AUDIO_SECONDS}
    assert set(composer) == set(metrics.NAMES) - stream
    assert set(captioner) == set(metrics.NAMES) - line - stream  # it waits in Triton's queue
    (wait,) = composer[metrics.QUEUE_SECONDS]
    assert wait.labels == {metrics.MODEL_LABEL: contract.COMPOSER_MODEL, metrics.VERSION_LABEL: "1"}
    assert wait.buckets == list(metrics.STAGE_BUCKETS_S)


def test_slots_are_counted_while_the_instance_is_ready() -> None:
    recorded, series = recorder(contract.COMPOSER_MODEL)
    recorded.ready(True, 16)
    assert (value(series, metrics.READY), value(series, metrics.SLOTS)) == (1, 16)
    recorded.ready(False)
    assert (value(series, metrics.READY), value(series, metrics.SLOTS)) == (0, 0)


def test_the_cache_is_counted_while_ready_and_its_use_as_reported() -> None:
    recorded, series = recorder(contract.COMPOSER_MODEL)
    recorded.ready(True, 32, cache_bytes=16 * 2**30)
    assert value(series, metrics.CACHE_BYTES) == 16 * 2**30
    recorded.cache_used(3 * 2**20)
    recorded.cache_used(2**20)
    recorded.cache_used(-3 * 2**20)
    assert value(series, metrics.CACHE_USED_BYTES) == 2**20
    recorded.ready(False)
    assert (value(series, metrics.CACHE_BYTES), value(series, metrics.SLOTS)) == (0, 0)


def test_the_line_then_the_slot_then_the_answer() -> None:
    recorded, series = recorder(contract.COMPOSER_MODEL)
    for _ in range(3):
        recorded.queued()
    assert value(series, metrics.WAITING) == 3
    assert value(series, metrics.IN_GENERATION) == 0  # waiting is not being computed
    recorded.started(0.0)
    recorded.started(2.5)
    assert (value(series, metrics.WAITING), value(series, metrics.IN_GENERATION)) == (1, 2)
    (wait,) = series[metrics.QUEUE_SECONDS]
    assert wait.observed == [0.0, 2.5]
    recorded.ended()
    assert (value(series, metrics.WAITING), value(series, metrics.IN_GENERATION)) == (1, 1)


def test_answers_count_outcomes_for_the_rules() -> None:
    """The rules count music made as answered minus failed (Triton's success counter counts the
    composer's requests when it takes them)."""
    recorded, series = recorder(contract.COMPOSER_MODEL)
    recorded.answered(metrics.Outcome(stages={"stage1": StageStats(3.0, 150)}, audio_s=3.0))
    recorded.answered(metrics.Outcome(metrics.UNAVAILABLE))
    failures = {m.labels[metrics.REASON_LABEL]: m.value for m in series[metrics.FAILURES]}
    assert value(series, metrics.REQUESTS) - sum(failures.values()) == 1
    assert failures[metrics.UNAVAILABLE] == 1
    assert value(series, metrics.AUDIO_SECONDS) == pytest.approx(3.0)


def test_stage_series_follow_the_declared_stages() -> None:
    """A second composer's own stage names get their series; nothing else does."""
    pb_utils, series = fake_pb_utils()
    warned: list[str] = []
    recorded = metrics.ModelMetrics(
        pb_utils,
        "music_composer",
        "1",
        ("sketch", "render"),
        ("sketch",),
        metrics.LINE,
        warned.append,
    )
    stages = {m.labels[metrics.STAGE_LABEL] for m in series[metrics.STAGE_SECONDS]}
    assert stages == {"sketch", "render"}
    assert {m.labels[metrics.STAGE_LABEL] for m in series[metrics.TOKENS]} == {"sketch"}
    recorded.answered(
        metrics.Outcome(stages={"sketch": StageStats(1.0, 7), "other": StageStats(1)})
    )
    (sketch,) = [m for m in series[metrics.TOKENS] if m.labels[metrics.STAGE_LABEL] == "sketch"]
    assert sketch.value == 7
    assert warned == ["metrics: stage 'other' was not declared; not recorded"]


def test_the_stream_counts_requests_and_its_waits_but_no_music_of_its_own() -> None:
    """Audio, frames and tokens are counted where they are made; the stream's own series are
    its answers, failures (cancellations among them), streams in flight and two waits."""
    recorded, series = recorder(contract.STREAM_MODEL)
    assert set(series) == {
        metrics.REQUESTS, metrics.FAILURES, metrics.IN_GENERATION, metrics.READY,
        metrics.FIRST_EVENT_SECONDS, metrics.FIRST_AUDIO_SECONDS,
    }  # fmt: skip
    recorded.first_event(0.01)
    recorded.first_audio(12.5)
    recorded.answered(metrics.Outcome(metrics.CANCELLED))
    (audio,) = series[metrics.FIRST_AUDIO_SECONDS]
    assert audio.observed == [12.5]
    failures = {m.labels[metrics.REASON_LABEL]: m.value for m in series[metrics.FAILURES]}
    assert failures[metrics.CANCELLED] == 1 and value(series, metrics.REQUESTS) == 1


def test_the_buckets_reach_the_longest_music_with_room() -> None:
    """20 minutes of music: ~620 s of an H200's stage 1 alone (194 tokens/s, 100 tokens a second
    of music), ~1.3x that with every slot busy; a stream's first audio and the wait for a slot
    come on top. The top finite bucket holds four times the music's length."""
    buckets = metrics.STAGE_BUCKETS_S
    assert list(buckets) == sorted(set(buckets))
    assert buckets[-1] >= 4 * contract.MAX_DURATION_S
    stage1_busy_s = 1.3 * contract.MAX_DURATION_S * 100 / 194
    assert sum(1 for b in buckets if stage1_busy_s / 2 <= b <= 2 * stage1_busy_s) >= 4
