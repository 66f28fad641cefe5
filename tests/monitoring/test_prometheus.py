"""A real Prometheus scrapes the real tritonserver and evaluates the rules file: after a few
requests, the recording rules read back through its HTTP API agree with what was sent.

Rates over 5m: Prometheus extrapolates an increase towards the ends of its window by up to about
one scrape interval at each end, so a rate x 300 s lies between what was sent and that plus
2.2 scrape intervals' worth (`rate_bounds`). Raw counters read back through Prometheus must
match exactly.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from v2bgm_client import api, stream
from v2bgm_client import metrics as client_metrics
from v2bgm_client.errors import ServerError
from v2bgm_client.options import SoundtrackOptions
from v2bgm_contract import interface as spec

from tests.conftest import free_port
from tests.monitoring import grafana
from tests.monitoring.promserver import JOB, SCRAPE_INTERVAL_S, Prometheus
from v2bgm.serve import TritonServer
from v2bgm.triton import metrics
from v2bgm.triton.handlers import CAPTIONING
from v2bgm.triton.model_configs import PYTHON_MODELS
from v2bgm.yue import composer as yue
from v2bgm.yue import tokens

# the served models' stages: the captioner's, then the composer's own (YuE v1)
STAGES = (CAPTIONING, *yue.STAGES)
TOKEN_STAGES = (CAPTIONING, *yue.TOKEN_STAGES)

pytestmark = pytest.mark.server

DURATIONS_S = (1.0, 1.25)  # music asked for, one request each (kept short: CPU time)
FRAME_COUNTS = (3, 4)
# The first through the ensemble, the second through the streaming model: both reach the
# captioner and the composer once, so the server-side counts are the same either way.
STREAMED = (False, True)
WINDOW_S = 300.0  # the rules' rate window, [5m]
IDLE_TIMEOUT_S = 300.0
SAMPLE_ENV = "V2BGM_MONITORING_SAMPLE"  # a path: a table of rule values, as in docs/monitoring.md
# Requests each model computes at once on this CPU server: the composer's slots (its CPU config),
# the captioner's largest batch.
CPU_SLOTS = {
    spec.COMPOSER_MODEL: next(m.slots for m in PYTHON_MODELS if m.slots)["KIND_CPU"],
    spec.CAPTIONER_MODEL: spec.CAPTIONER_MAX_BATCH,
}
# Gauges read straight from Triton's /metrics while a request runs.
POLLED = (metrics.IN_GENERATION, metrics.WAITING, metrics.SLOTS)
POLL_SLACK_S = 0.5  # the test's own time around a call: a poll of /metrics and a 50-ms sleep

# Raw counters summed over the server, read before and after the requests.
RAW = {
    "audio_s": f"sum({metrics.AUDIO_SECONDS})",
    "frames": f"sum({metrics.FRAMES})",
    "invalid": f'sum({metrics.FAILURES}{{reason="{metrics.INVALID_ARGUMENT}"}})',
    "internal": f'sum({metrics.FAILURES}{{reason="{metrics.INTERNAL}"}})',
    # answered with music (Triton's nv_inference_request_success counts the composer's requests
    # when they are admitted, before their music exists)
    "composer_music": f'sum({metrics.REQUESTS}{{model="{spec.COMPOSER_MODEL}"}})'
    f' - sum({metrics.FAILURES}{{model="{spec.COMPOSER_MODEL}"}})',
    "slot_waits": f"sum({metrics.QUEUE_SECONDS}_count)",
    **{
        f"requests:{m}": f'sum({metrics.REQUESTS}{{model="{m}"}})'
        for m in (spec.CAPTIONER_MODEL, spec.COMPOSER_MODEL)
    },
    **{
        f"failures:{m}": f'sum({metrics.FAILURES}{{model="{m}"}})'
        for m in (spec.CAPTIONER_MODEL, spec.COMPOSER_MODEL)
    },
    **{f"tokens:{s}": f'sum({metrics.TOKENS}{{stage="{s}"}})' for s in TOKEN_STAGES},
    **{f"count:{s}": f'sum({metrics.STAGE_SECONDS}_count{{stage="{s}"}})' for s in STAGES},
}


@dataclass
class Run:
    prom: Prometheus
    at: float  # the rule evaluation every value is read at (Unix seconds)
    sampled_s: float  # lower bound of the time Prometheus has sampled the server for
    delta: dict[str, float]  # RAW after - before
    client_max_s: float  # slowest request as the client saw it
    unary_s: list[float]  # each ensemble call as timed around it (the client's metrics time them)
    seen: dict[tuple[str, str], float]  # (gauge, model) -> highest value seen on /metrics
    client_registry: prometheus_client.CollectorRegistry
    rule_errors: list = field(default_factory=list)

    def value(self, expr: str, **labels: str) -> float:
        return self.prom.value(expr, self.at, **labels)

    def rate_bounds(self, sent: float) -> tuple[float, float]:
        """What a 5m rate recorded at `at` may read for `sent` increments in the window."""
        slack = 2.2 * SCRAPE_INTERVAL_S / self.sampled_s
        return sent / WINDOW_S, sent * (1 + slack) / WINDOW_S


def scrape_triton(server: TritonServer) -> dict[tuple[str, str], float]:
    """Triton's /metrics, directly: (metric name, model) -> value, for our gauges."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, s.labels.get(metrics.MODEL_LABEL, "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in POLLED
    }


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def latest_evaluation(prom: Prometheus) -> float:
    """Timestamp of the last complete evaluation of the recording group (its last rule's)."""
    found = prom.query("timestamp(v2bgm:failures:ratio_rate5m)")
    return max((s.value for s in found), default=0.0)


def frames(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(n, 64, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def prom(
    prometheus: Path, server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    instance = Prometheus(
        prometheus, tmp_path_factory.mktemp("prometheus"), free_port(), server.metrics_port
    )
    try:
        instance.wait_ready()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def run(prom: Prometheus, server: TritonServer, grpc_url: str) -> Iterator[Run]:
    """Baseline, two ensemble requests and one invalid one, then one evaluation after them."""
    wait_for(lambda: prom.query(f'up{{job="{JOB}"}} == 1'), 30, "the first scrape")
    started = time.time()
    idle = (
        f"sum({metrics.IN_GENERATION}) + sum({metrics.WAITING})"
        " + sum(nv_inference_pending_request_count) == 0"
        # ...for the last 3 scrapes: requests of earlier tests are done
        f" and sum(max_over_time({metrics.IN_GENERATION}[{3 * SCRAPE_INTERVAL_S}s])) == 0"
    )
    wait_for(lambda: prom.query(idle), IDLE_TIMEOUT_S, "an idle server")
    before = {key: prom.value(expr) for key, expr in RAW.items()}

    registry = prometheus_client.CollectorRegistry()
    client_metrics.enable(registry)
    seen: dict[tuple[str, str], float] = {}
    client_seconds = []
    try:
        for duration, count, streamed in zip(DURATIONS_S, FRAME_COUNTS, STREAMED, strict=True):
            if streamed:
                options = SoundtrackOptions(seed=count, duration_s=duration)
                request = stream.build_stream_request(frames(count), 1.0, options)
                call = lambda request=request: list(stream.stream_events(grpc_url, request))  # noqa: E731
            else:
                request = api.build_request(frames(count), 1.0, duration, seed=count)
                call = lambda request=request: api.infer(grpc_url, request)  # noqa: E731
            clock = time.perf_counter()
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(call)
                while not answer.done():  # the gauges, straight from Triton, while it computes
                    for key, value in scrape_triton(server).items():
                        seen[key] = max(seen.get(key, 0.0), value)
                    time.sleep(0.05)
                answer.result()  # raises what the request raised
            client_seconds.append(time.perf_counter() - clock)
        invalid = api.build_request(frames(2), 1.0, 1.0, seed=0)
        invalid[spec.DURATION_S.name] = np.full_like(invalid[spec.DURATION_S.name], 0.5)
        clock = time.perf_counter()
        with pytest.raises(ServerError, match="rejected"):
            api.infer(grpc_url, invalid)
        invalid_s = time.perf_counter() - clock
    finally:
        client_metrics.disable()
    done = time.time()
    # One scrape after the last request, and one evaluation after that scrape.
    target = done + 2.5 * SCRAPE_INTERVAL_S
    wait_for(lambda: latest_evaluation(prom) >= target, 30, "an evaluation after the requests")
    at = latest_evaluation(prom)
    assert at - started < WINDOW_S - 10, "the run outlasted the rules' 5m window: too slow here"
    after = {key: prom.value(expr, at) for key, expr in RAW.items()}
    result = Run(
        prom=prom,
        at=at,
        sampled_s=at - started - 2 * SCRAPE_INTERVAL_S,
        delta={key: after[key] - before[key] for key in RAW},
        client_max_s=max(client_seconds),
        unary_s=[t for t, s in zip(client_seconds, STREAMED, strict=True) if not s] + [invalid_s],
        seen=seen,
        client_registry=registry,
        rule_errors=prom.rules_health(),
    )
    yield result
    if os.environ.get(SAMPLE_ENV):
        Path(os.environ[SAMPLE_ENV]).write_text(sample_table(result))


def upper_bucket(seconds: float) -> float:
    """The histogram bucket bound at or above `seconds` (a quantile cannot exceed it)."""
    return next((b for b in metrics.STAGE_BUCKETS_S if b >= seconds), math.inf)


def test_every_rule_evaluates_without_error(run: Run) -> None:
    assert run.rule_errors == []


def test_raw_counters_are_exactly_what_was_sent(run: Run) -> None:
    n = len(DURATIONS_S)
    assert run.delta["audio_s"] == sum(DURATIONS_S)
    assert run.delta["frames"] == sum(FRAME_COUNTS)
    assert run.delta["composer_music"] == n
    assert run.delta["slot_waits"] == n  # each composition took a slot once
    for stage in STAGES:
        assert run.delta[f"count:{stage}"] == n, stage
    # the invalid request is rejected by one model, whichever checks DURATION_S first
    assert run.delta["invalid"] == 1 and run.delta["internal"] == 0
    assert (
        run.delta[f"requests:{spec.COMPOSER_MODEL}"]
        == n + run.delta[f"failures:{spec.COMPOSER_MODEL}"]
    )
    assert run.delta[f"requests:{spec.CAPTIONER_MODEL}"] == n + 1
    # stage 2 writes 7 codebooks for each 50 Hz frame of the (instrumental) track
    frames_50hz = sum(math.ceil(d * tokens.FRAME_RATE) for d in DURATIONS_S)
    assert run.delta["tokens:stage2"] == frames_50hz * (tokens.STAGE2_CODEBOOKS - 1)
    assert run.delta["tokens:stage1"] >= frames_50hz
    assert run.delta["tokens:captioning"] > 0


def test_throughput_rules(run: Run) -> None:
    low, high = run.rate_bounds(sum(DURATIONS_S))
    audio_rate = run.value("v2bgm:audio_seconds_produced:rate5m")
    assert low <= audio_rate <= high
    # on this CPU server the server is the one device
    assert run.value("v2bgm:devices:count", device="cpu") == 1
    per_device = run.value("v2bgm:audio_seconds_per_gpu_second:rate5m", device="cpu")
    assert per_device == pytest.approx(audio_rate, rel=1e-12)
    assert 0 <= run.value("v2bgm:gpu_busy:ratio_avg5m", device="cpu") <= 1
    low, high = run.rate_bounds(sum(FRAME_COUNTS))
    assert low <= run.value("v2bgm:frames_captioned:rate5m") <= high
    low, high = run.rate_bounds(run.delta["tokens:stage2"])
    assert low <= run.value("v2bgm:tokens_generated:rate5m", stage="stage2") <= high


def test_latency_rules(run: Run) -> None:
    ceiling = upper_bucket(run.client_max_s)
    p95s = {}
    for stage in STAGES:
        p50 = run.value("v2bgm:stage_duration_seconds:p50_5m", stage=stage)
        p95s[stage] = run.value("v2bgm:stage_duration_seconds:p95_5m", stage=stage)
        assert 0 < p50 <= p95s[stage] <= ceiling, (stage, p50, p95s[stage], ceiling)
    service = run.value("v2bgm:request_service_seconds:p95_5m")
    assert service == pytest.approx(sum(p95s.values()), rel=1e-9)


def test_capacity_and_headroom_rules(run: Run) -> None:
    # one device (this CPU server), each model computing up to its slots at once
    per_model = {}
    for model, slots in CPU_SLOTS.items():
        assert run.value("v2bgm:slots:sum", model=model) == slots, model
        per_model[model] = run.value("v2bgm:model_service_seconds:p95_5m", model=model)
    service = run.value("v2bgm:request_service_seconds:p95_5m")
    assert service == pytest.approx(sum(per_model.values()), rel=1e-9)
    device_s = run.value("v2bgm:request_device_seconds:p95_5m")
    expected = sum(s / CPU_SLOTS[m] for m, s in per_model.items())
    assert device_s == pytest.approx(expected, rel=1e-9)
    assert device_s < service
    capacity = run.value("v2bgm:capacity_requests_per_minute")
    assert capacity == pytest.approx(60 * 1 / device_s, rel=1e-9)
    load = run.value("v2bgm:requests_per_minute:rate5m")
    low, high = run.rate_bounds(len(DURATIONS_S))
    assert 60 * low <= load <= 60 * high
    headroom = run.value("v2bgm:headroom_requests_per_minute")
    assert headroom == pytest.approx(capacity - load, rel=1e-9)
    assert run.value("v2bgm:headroom:ratio") == pytest.approx(headroom / capacity, rel=1e-9)
    needed = run.value("v2bgm:gpus_needed:headroom20")
    assert needed == math.ceil(load * device_s / 60 / 0.8)


def test_queue_and_in_generation(run: Run) -> None:
    for model in (spec.CAPTIONER_MODEL, spec.COMPOSER_MODEL):
        queued = run.value("v2bgm:queue_seconds_per_request:rate5m", model=model)
        assert 0 <= queued <= run.client_max_s, model
        assert run.value("v2bgm:pending_requests:sum", model=model) == 0
        assert 0 <= run.value("v2bgm:requests_in_generation:avg5m", model=model) < 1
    # Polled every 50 ms while a request ran: one request at a time in the composer (composing
    # takes seconds; captioning can be too short to be seen, so it is only bounded), which took
    # a free slot without waiting; the slots are on /metrics as the CPU config says.
    seen = run.seen
    assert seen.get((metrics.IN_GENERATION, spec.COMPOSER_MODEL)) == 1, seen
    assert seen.get((metrics.IN_GENERATION, spec.CAPTIONER_MODEL), 0) <= 1, seen
    assert seen.get((metrics.WAITING, spec.COMPOSER_MODEL)) == 0, seen
    assert (metrics.WAITING, spec.CAPTIONER_MODEL) not in seen  # it waits in Triton's queue
    for model, slots in CPU_SLOTS.items():
        assert seen.get((metrics.SLOTS, model)) == slots, seen


def test_failure_ratio_rule(run: Run) -> None:
    model = next(
        m for m in (spec.CAPTIONER_MODEL, spec.COMPOSER_MODEL) if run.delta[f"failures:{m}"]
    )
    # numerator and denominator are extrapolated alike but for their zero-based starts
    expected = run.delta[f"failures:{model}"] / run.delta[f"requests:{model}"]
    ratio = run.value("v2bgm:failures:ratio_rate5m", model=model, reason=metrics.INVALID_ARGUMENT)
    slack = 2.2 * SCRAPE_INTERVAL_S / run.sampled_s
    assert expected / (1 + slack) <= ratio <= expected * (1 + slack)
    assert run.value("v2bgm:failures:ratio_rate5m", model=model, reason=metrics.INTERNAL) == 0


def test_stream_rules(run: Run) -> None:
    """The streamed request: its first event came at once, its first audio within its call."""
    model = spec.STREAM_MODEL
    first_event = run.value("v2bgm:stream_first_event_seconds:p95_5m", model=model)
    first_audio = run.value("v2bgm:stream_first_audio_seconds:p95_5m", model=model)
    assert 0 < first_event < first_audio <= upper_bucket(run.client_max_s)


def test_every_dashboard_panel_has_data(run: Run) -> None:
    for title, expr in grafana.exprs():
        if "ALERTS" in expr:
            continue  # nothing fires in this run
        assert run.prom.query(expr, run.at), f"panel {title!r} shows no data: {expr}"


def test_client_metrics_saw_the_same_requests(run: Run) -> None:
    labels = {client_metrics.MODEL_LABEL: spec.PIPELINE_MODEL}

    def get(name: str, **extra: str) -> float:
        return run.client_registry.get_sample_value(name, labels | extra) or 0.0

    unary = STREAMED.count(False)  # the client's metrics count its ensemble calls
    assert get(client_metrics.REQUESTS, code=client_metrics.OK) == unary
    assert get(client_metrics.REQUESTS, code="INVALID_ARGUMENT") == 1
    assert get(f"{client_metrics.REQUEST_SECONDS}_count") == unary + 1
    # the client times each call inside what the test timed around it (polling the gauges meanwhile)
    timed = get(f"{client_metrics.REQUEST_SECONDS}_sum")
    assert sum(run.unary_s) - POLL_SLACK_S * len(run.unary_s) <= timed <= sum(run.unary_s)


def legend(template: str, labels: dict[str, str]) -> str:
    """A Grafana legend ("{{stage}} p95") filled in with a series' labels."""
    return re.sub(r"\{\{ *(\w+) *\}\}", lambda m: labels.get(m[1], ""), template)


def sample_table(run: Run) -> str:
    """The dashboard's numbers at `run.at`, panel by panel, as a Markdown table (as in
    docs/monitoring.md)."""
    lines = ["| panel | series | value |", "| --- | --- | ---: |"]
    for panel in grafana.panels():
        for target in panel["targets"]:
            for s in run.prom.query(target["expr"], run.at):
                name = legend(target["legendFormat"], s.labels)
                lines.append(f"| {panel['title']} | {name} | {s.value:.4g} |")
    return "\n".join(lines) + "\n"
