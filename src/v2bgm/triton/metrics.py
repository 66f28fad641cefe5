"""The server's own Prometheus metrics, defined once: names, kinds, labels and buckets.

The Python-backend models record them through `triton_python_backend_utils.MetricFamily`, and
Triton serves them on its metrics port next to its own `nv_*` metrics. The Prometheus rules
(helm/v2bgm/files/prometheus-rules.yml), the Grafana dashboard and the tests use these names.

Every metric is labelled with the model's name and version; a few add one label whose values come
from a closed set (`reason` below; `stage`: the stage names its handler declares, the composer's
own for the composer). Never a request id or anything a caller sent: each label value is a new
time series in Prometheus.

The composer answers through response senders after `execute` has returned (continuous
batching, v2bgm.triton.backend.ConcurrentModel), so Triton's own `nv_inference_*` series count
its requests at admission and leave out the composition; its request-level metrics are these:
answers and failures, the line for a slot (`WAITING`, `QUEUE_SECONDS`), the requests composing,
and the slots.

This module does not import `triton_python_backend_utils` (it exists only inside the stub): the
recorder takes it as an argument, so the names are importable anywhere.

Threads: the composer's scheduler records from its stage-1 and stage-2 threads while `execute`
records on the model's own thread. Triton 2.51's Python backend does not allow one `Metric` to be
used by two threads at once: `Metric.increment` and `observe` release the GIL, then rewrite the
object's own shared-memory message (`Metric::SaveToSharedMemory`) before the send is serialised,
so a second thread frees the block the first one's message points to and tritonserver itself
dies reading it (SIGSEGV in libtriton_python.so; tests/reliability/test_metric_threads.py). Every
call on a backend metric therefore goes through `ModelMetrics._record`, under one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from v2bgm_contract import interface as contract

from v2bgm.composer import Busy, Cancelled, StageStats

# --- metric names (Prometheus conventions: base units, counters end in _total) -----------------
STAGE_SECONDS = "v2bgm_stage_duration_seconds"  # histogram {model, version, stage}
AUDIO_SECONDS = "v2bgm_audio_seconds_produced_total"  # counter {model, version}
TOKENS = "v2bgm_tokens_generated_total"  # counter {model, version, stage}
FRAMES = "v2bgm_frames_captioned_total"  # counter {model, version}
REQUESTS = "v2bgm_requests_total"  # counter {model, version}: answered, success or failure
FAILURES = "v2bgm_failures_total"  # counter {model, version, reason}
IN_GENERATION = "v2bgm_requests_in_generation"  # gauge {model, version}: being computed
READY = "v2bgm_model_ready"  # gauge {model, version}: instances loaded and serving
SLOTS = "v2bgm_slots"  # gauge {model, version}: requests the ready instances compute at once
# gauges {model, version}: the composer's KV cache (requests take from it what their length
# needs, so how many fit depends on their lengths as well as the slots)
CACHE_BYTES = "v2bgm_cache_bytes"  # held by the ready instances
CACHE_USED_BYTES = "v2bgm_cache_used_bytes"  # taken by the requests being computed
WAITING = "v2bgm_requests_waiting"  # gauge {model, version}: in the composer's line for a slot
QUEUE_SECONDS = "v2bgm_queue_duration_seconds"  # histogram {model, version}: line to slot
FIRST_EVENT_SECONDS = "v2bgm_stream_first_event_seconds"  # histogram: request to first event
FIRST_AUDIO_SECONDS = "v2bgm_stream_first_audio_seconds"  # histogram: request to first audio

# --- what kind of served model records them ----------------------------------------------------
BATCH = "batch"  # answers a batch in `execute` (the captioner)
LINE = "line"  # keeps its own line for a slot and answers later (the composer)
STREAM = "stream"  # drives the others and streams events (video_to_music_stream): it produces
# no audio, tokens or frames of its own (they are counted where they are made)
COMPUTING = (BATCH, LINE)
ROLES = (BATCH, LINE, STREAM)

# --- labels and their closed sets of values ----------------------------------------------------
MODEL_LABEL = "model"  # the same label names as Triton's nv_* metrics, so rules can join them
VERSION_LABEL = "version"
STAGE_LABEL = "stage"
REASON_LABEL = "reason"

INVALID_ARGUMENT = "invalid_argument"  # the caller's fault (Triton answers INVALID_ARGUMENT)
INTERNAL = "internal"  # ours
CANCELLED = "cancelled"  # the caller cancelled or went away (not an error of ours)
UNAVAILABLE = "unavailable"  # refused at capacity (the composer's slots and line are full)
FAILURE_REASONS = (INVALID_ARGUMENT, INTERNAL, CANCELLED, UNAVAILABLE)

# From tiny models on a CPU (milliseconds) to a real stage 1 on long videos: 20 minutes of music
# (the interface's most) take ~10 minutes of an H200's stage 1 alone, more with every slot busy,
# and a stream's first audio adds captioning and the wait for a slot; hence 750 and 1,500 s,
# where such requests land, and the top 5,000 s. The same buckets for the wait for a slot.
STAGE_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
    100.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2500.0, 5000.0,
)  # fmt: skip


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # the MetricFamily kind: COUNTER, GAUGE or HISTOGRAM
    description: str
    extra_label: str | None = None  # STAGE_LABEL or REASON_LABEL
    roles: tuple[str, ...] = ROLES  # the kinds of model that record it


DEFINITIONS = (
    MetricDef(
        STAGE_SECONDS, "HISTOGRAM", "Seconds one request spent in a stage", STAGE_LABEL, COMPUTING
    ),
    MetricDef(AUDIO_SECONDS, "COUNTER", "Seconds of music produced", roles=COMPUTING),
    MetricDef(TOKENS, "COUNTER", "Tokens generated, per stage", STAGE_LABEL, COMPUTING),
    MetricDef(FRAMES, "COUNTER", "Video frames captioned", roles=COMPUTING),
    MetricDef(REQUESTS, "COUNTER", "Requests answered, successful or not"),
    MetricDef(FAILURES, "COUNTER", "Requests answered with an error, by reason", REASON_LABEL),
    MetricDef(IN_GENERATION, "GAUGE", "Requests being computed right now (not waiting)"),
    MetricDef(READY, "GAUGE", "Model instances loaded and serving"),
    MetricDef(
        SLOTS, "GAUGE", "Requests the ready instances compute at once, at most", roles=COMPUTING
    ),
    MetricDef(CACHE_BYTES, "GAUGE", "Bytes of KV cache the ready instances hold", roles=(LINE,)),
    MetricDef(
        CACHE_USED_BYTES, "GAUGE", "Bytes of KV cache taken by requests computed", roles=(LINE,)
    ),
    # The composer's own line (its scheduler's; Triton's queue stays empty for it)
    MetricDef(WAITING, "GAUGE", "Requests waiting for a slot", roles=(LINE,)),
    MetricDef(QUEUE_SECONDS, "HISTOGRAM", "Seconds waited for a slot", roles=(LINE,)),
    # What a streaming caller waits for: the first event (the options settled) and first audio
    MetricDef(
        FIRST_EVENT_SECONDS,
        "HISTOGRAM",
        "Seconds from a stream's request to its first event",
        roles=(STREAM,),
    ),
    MetricDef(
        FIRST_AUDIO_SECONDS,
        "HISTOGRAM",
        "Seconds from a stream's request to its first audio",
        roles=(STREAM,),
    ),
)
NAMES = tuple(d.name for d in DEFINITIONS)


@dataclass(frozen=True)
class Outcome:
    """What one answered request produced and cost."""

    failure: str | None = None  # one of FAILURE_REASONS; None: success
    stages: dict[str, StageStats] = field(default_factory=dict)  # stage name -> cost
    audio_s: float = 0.0
    frames: int = 0


def outcome(
    inputs: dict[str, np.ndarray],
    result: dict[str, np.ndarray] | Exception,
    stages: dict[str, StageStats],
) -> Outcome:
    """A request's outcome, from its tensors (by the interface's names) and its stages' costs."""
    if isinstance(result, contract.InvalidInput):
        return Outcome(INVALID_ARGUMENT)
    if isinstance(result, Cancelled):
        return Outcome(CANCELLED)
    if isinstance(result, Busy):
        return Outcome(UNAVAILABLE)
    if isinstance(result, Exception):
        return Outcome(INTERNAL)
    frames = inputs.get(contract.FRAMES.name)
    audio, rate = result.get(contract.AUDIO.name), result.get(contract.SAMPLE_RATE.name)
    return Outcome(
        stages=stages,
        # [B, N] samples at [B, 1] rates; a model without AUDIO produced none
        audio_s=0.0 if audio is None or rate is None else audio.size / float(rate.flat[0]),
        frames=0 if frames is None else int(np.prod(frames.shape[:2])),  # [B, T, H, W, 3]
    )


class ModelMetrics:
    """One model instance's handles on the metric families.

    Every series a model can emit is created in `__init__` (value 0), so that Prometheus sees a
    counter start from zero, and `rate()` counts the first request. Model instances with the same
    labels share one series in Triton; gauges are therefore only incremented and decremented.
    Safe to call from any thread (see the module's docstring); after `close` it records nothing.
    """

    def __init__(
        self,
        pb_utils: ModuleType,
        model: str,
        version: str,
        stages: tuple[str, ...] = (),
        token_stages: tuple[str, ...] = (),
        role: str = BATCH,
        warn: Callable[[str], None] = print,
    ) -> None:
        """`stages`: the stage names the model reports costs for (its handler's, so the
        composer's own), `token_stages` those that generate tokens; `role`: BATCH, LINE (its
        own line for a slot) or STREAM."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self._families: dict[str, Any] = {}
        self._series: dict[tuple[str, str | None], Any] = {}
        self.stages = tuple(stages)
        self.token_stages = tuple(s for s in token_stages if s in self.stages)
        self._warn = warn
        self._undeclared: set[str] = set()
        self._slots = 0
        self._cache = 0
        self._lock = threading.Lock()  # held around every call on a backend metric
        self._closed = False
        base = {MODEL_LABEL: model, VERSION_LABEL: version}
        for d in DEFINITIONS:
            if role not in d.roles:
                continue
            family = pb_utils.MetricFamily(
                name=d.name, description=d.description, kind=getattr(pb_utils.MetricFamily, d.kind)
            )
            self._families[d.name] = family
            for value in self._label_values(d):
                labels = base if value is None else {**base, d.extra_label: value}
                extra = {"buckets": list(STAGE_BUCKETS_S)} if d.kind == "HISTOGRAM" else {}
                self._series[d.name, value] = family.Metric(labels=labels, **extra)

    def _label_values(self, d: MetricDef) -> Iterable[str | None]:
        if d.extra_label == STAGE_LABEL:
            return self.stages if d.name == STAGE_SECONDS else self.token_stages
        if d.extra_label == REASON_LABEL:
            return FAILURE_REASONS
        return (None,)

    def _record(self, name: str, label: str | None, value: float, observe: bool = False) -> None:
        """The one place that touches a backend metric: serialised, and never after `close`."""
        with self._lock:
            if self._closed:
                return
            series = self._series[name, label]
            if observe:
                series.observe(float(value))
            else:
                series.increment(float(value))

    def _add(self, name: str, amount: float, label: str | None = None) -> None:
        if amount:
            self._record(name, label, amount)

    def ready(self, up: bool, slots: int = 1, cache_bytes: int = 0) -> None:
        """The instance starts serving, computing up to `slots` requests at once with
        `cache_bytes` of KV cache, or stops."""
        if up:
            self._slots, self._cache = slots, cache_bytes
        self._add(READY, 1 if up else -1)
        if (SLOTS, None) in self._series:  # the streaming model computes nothing itself
            self._add(SLOTS, self._slots if up else -self._slots)
        if (CACHE_BYTES, None) in self._series:
            self._add(CACHE_BYTES, self._cache if up else -self._cache)

    def in_generation(self, requests: int) -> None:
        """`requests` (negative: fewer) start or stop being computed."""
        self._add(IN_GENERATION, requests)

    # A composer reports its line through these (it is its v2bgm.composer.Meter).
    def queued(self) -> None:
        """A request joined the line for a slot."""
        self._add(WAITING, 1)

    def started(self, waited_s: float) -> None:
        """A request left the line for a slot after `waited_s` seconds: it is computed now."""
        self._add(WAITING, -1)
        self._record(QUEUE_SECONDS, None, waited_s, observe=True)
        self._add(IN_GENERATION, 1)

    def ended(self) -> None:
        """A started request was answered (music or error)."""
        self._add(IN_GENERATION, -1)

    def cache_used(self, delta_bytes: float) -> None:
        """Requests took `delta_bytes` of the KV cache (negative: gave them back)."""
        self._add(CACHE_USED_BYTES, delta_bytes)

    # The streaming model reports through these.
    def first_event(self, seconds: float) -> None:
        self._record(FIRST_EVENT_SECONDS, None, seconds, observe=True)

    def first_audio(self, seconds: float) -> None:
        self._record(FIRST_AUDIO_SECONDS, None, seconds, observe=True)

    def answered(self, done: Outcome) -> None:
        self._add(REQUESTS, 1)
        if done.failure is not None:
            self._add(FAILURES, 1, done.failure)
            return
        self._add(AUDIO_SECONDS, done.audio_s)
        self._add(FRAMES, done.frames)
        for stage, cost in done.stages.items():
            if stage not in self.stages:  # no new series at run time; say so once
                if stage not in self._undeclared:
                    self._undeclared.add(stage)
                    self._warn(f"metrics: stage {stage!r} was not declared; not recorded")
                continue
            self._record(STAGE_SECONDS, stage, cost.seconds, observe=True)
            if (TOKENS, stage) in self._series:
                self._add(TOKENS, cost.tokens, stage)

    def close(self) -> None:
        """Drop the series before their families, as the Python backend requires; a thread
        that still reports afterwards (a composition outliving `finalize`) records nothing."""
        with self._lock:
            self._closed = True
            self._series.clear()
            self._families.clear()
