"""Prometheus and promtool from Debian's package, unpacked by `make prometheus` into .cache/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.monitoring.files import PROMETHEUS_BIN


def binary(name: str) -> Path:
    path = PROMETHEUS_BIN / name
    if not path.exists():  # a missing tool fails the run: these checks are never skipped
        pytest.fail(f"{path} is missing: run `make prometheus` (Debian's prometheus package)")
    return path


@pytest.fixture(scope="session")
def promtool() -> Path:
    return binary("promtool")


@pytest.fixture(scope="session")
def prometheus() -> Path:
    return binary("prometheus")
