"""The client's retry policy for an overloaded server: pure functions, no server."""

from __future__ import annotations

import random
import statistics

import pytest
from v2bgm_client import api


def test_backoff_grows_exponentially_within_the_cap():
    rng = random.Random(0)
    for attempt in range(40):
        bound = min(api.RETRY_MAX_DELAY_S, api.RETRY_BASE_S * 2**attempt)
        delays = [api.backoff_delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        # full jitter: uniform over [0, bound], so the mean is about half the bound
        assert statistics.mean(delays) == pytest.approx(bound / 2, rel=0.2)


def test_backoff_is_jittered_and_repeatable_from_a_seed():
    first = [api.backoff_delay(3, random.Random(1)) for _ in range(3)]
    assert first == [api.backoff_delay(3, random.Random(1)) for _ in range(3)]
    rng = random.Random(2)
    assert len({api.backoff_delay(3, rng) for _ in range(20)}) == 20  # clients spread out


def test_backoff_survives_huge_attempt_numbers():
    assert 0 <= api.backoff_delay(10**6, random.Random(0)) <= api.RETRY_MAX_DELAY_S


@pytest.mark.parametrize(
    ("status", "message", "retry"),
    [
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", True),
        ("StatusCode.UNAVAILABLE", "Request timeout expired", True),
        ("StatusCode.RESOURCE_EXHAUSTED", "too many", True),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", False),
        ("StatusCode.UNAVAILABLE", "Connection refused", False),
        ("StatusCode.INVALID_ARGUMENT", "FRAMES", False),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", False),
        ("StatusCode.INTERNAL", "boom", False),
        (None, None, False),
    ],
)
def test_only_overload_is_retried(status, message, retry):
    assert api.is_retryable(status, message) is retry
