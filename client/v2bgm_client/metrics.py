"""Client-side metrics for a backend service that embeds this client; off by default.

`enable()` registers them with `prometheus-client` (`pip install "v2bgm-client[metrics]"`), and
the service serves them on its own /metrics as it serves its other metrics
(`prometheus_client.start_http_server`, or its web framework's exporter). Until then `track`
costs nothing, and prometheus-client is not even imported.

They complement the server's metrics (src/v2bgm/triton/metrics.py): what the caller saw,
including the time on the network and the failures that never reached the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

REQUEST_SECONDS = "v2bgm_client_request_duration_seconds"  # histogram {model}
REQUESTS = "v2bgm_client_requests_total"  # counter {model, code}
MODEL_LABEL = "model"
CODE_LABEL = "code"  # the gRPC status code's name: OK, INVALID_ARGUMENT, UNAVAILABLE, ...
OK = "OK"
UNKNOWN = "UNKNOWN"  # an exception that carries no gRPC status
# A request takes seconds (tiny models) to many minutes (real YuE on long videos).
BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)


@dataclass(frozen=True)
class ClientMetrics:
    registry: Any
    seconds: Any  # prometheus_client.Histogram
    requests: Any  # prometheus_client.Counter

    def observe(self, model: str, code: str, seconds: float) -> None:
        self.seconds.labels(model).observe(seconds)
        self.requests.labels(model, code).inc()


_enabled: ClientMetrics | None = None


def enable(registry: Any = None) -> ClientMetrics:
    """Start recording into `registry` (default: prometheus_client's global REGISTRY).

    Calling it again with the same registry returns the same metrics.
    """
    global _enabled
    try:
        import prometheus_client
    except ImportError:
        raise ImportError(
            'v2bgm_client.metrics needs prometheus-client: pip install "v2bgm-client[metrics]"'
        ) from None
    registry = prometheus_client.REGISTRY if registry is None else registry
    if _enabled is not None and _enabled.registry is registry:
        return _enabled
    _enabled = ClientMetrics(
        registry,
        prometheus_client.Histogram(
            REQUEST_SECONDS,
            "Seconds from sending a request to the server's answer, as the client saw them",
            [MODEL_LABEL],
            buckets=BUCKETS_S,
            registry=registry,
        ),
        prometheus_client.Counter(
            REQUESTS,
            "Requests sent, by the gRPC status code they ended with (OK: success)",
            [MODEL_LABEL, CODE_LABEL],
            registry=registry,
        ),
    )
    return _enabled


def disable() -> None:
    """Stop recording (the metrics stay in their registry with the values they had)."""
    global _enabled
    _enabled = None


def grpc_code(exc: BaseException) -> str:
    """The gRPC status of a tritonclient error ("StatusCode.UNAVAILABLE" -> "UNAVAILABLE")."""
    status = getattr(exc, "status", None)
    text = status() if callable(status) else None
    return text.rsplit(".", 1)[-1] if text else UNKNOWN


@contextmanager
def track(model: str) -> Iterator[None]:
    """Time the call in the `with` block and count it by how it ended."""
    recorder = _enabled
    if recorder is None:
        yield
        return
    start = time.perf_counter()
    code = OK
    try:
        yield
    except BaseException as exc:
        code = grpc_code(exc)
        raise
    finally:
        recorder.observe(model, code, time.perf_counter() - start)
