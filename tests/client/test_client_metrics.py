"""Client metrics (v2bgm_client.metrics): off by default, then latency and gRPC codes.

The success and INVALID_ARGUMENT paths against the real server are in
tests/monitoring/test_prometheus.py; here the server is down or absent.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import prometheus_client
import pytest
from tritonclient.utils import InferenceServerException
from v2bgm_client import api, metrics
from v2bgm_client.errors import ServerError
from v2bgm_contract import interface as spec


@pytest.fixture
def registry() -> Iterator[prometheus_client.CollectorRegistry]:
    registry = prometheus_client.CollectorRegistry()
    metrics.enable(registry)
    yield registry
    metrics.disable()


def request() -> dict[str, np.ndarray]:
    return api.build_request(np.zeros((2, 32, 32, 3), np.uint8), 1.0, 1.0, 0)


def sample(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_off_by_default_and_prometheus_client_not_imported() -> None:
    code = (
        "import sys; from v2bgm_client import api, metrics; "
        "assert metrics._enabled is None; assert 'prometheus_client' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_disabled_records_nothing(unused_url: str) -> None:
    registry = prometheus_client.CollectorRegistry()
    metrics.enable(registry)
    metrics.disable()
    with pytest.raises(ServerError):
        api.infer(unused_url, request(), timeout_s=10)
    assert sample(registry, metrics.REQUESTS, model=spec.PIPELINE_MODEL, code="UNAVAILABLE") == 0


def test_server_down_counts_as_unavailable_with_its_latency(
    registry: prometheus_client.CollectorRegistry, unused_url: str
) -> None:
    for _ in range(2):
        with pytest.raises(ServerError, match="cannot reach"):
            api.infer(unused_url, request(), timeout_s=10)
    labels = {"model": spec.PIPELINE_MODEL}
    assert sample(registry, metrics.REQUESTS, **labels, code="UNAVAILABLE") == 2
    assert sample(registry, metrics.REQUESTS, **labels, code=metrics.OK) == 0
    assert sample(registry, f"{metrics.REQUEST_SECONDS}_count", **labels) == 2
    assert 0 < sample(registry, f"{metrics.REQUEST_SECONDS}_sum", **labels) < 20


def test_enable_is_idempotent_per_registry(registry: prometheus_client.CollectorRegistry) -> None:
    assert metrics.enable(registry) is metrics.enable(registry)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            InferenceServerException("late", status="StatusCode.DEADLINE_EXCEEDED"),
            "DEADLINE_EXCEEDED",
        ),
        (InferenceServerException("no status"), metrics.UNKNOWN),
        (ValueError("not gRPC"), metrics.UNKNOWN),
    ],
)
def test_grpc_code(exc: BaseException, code: str) -> None:
    assert metrics.grpc_code(exc) == code
