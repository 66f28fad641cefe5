"""Session fixtures: the chart rendered with the default values and with the CPU demo's."""

from __future__ import annotations

import pytest

from tests.deploy.chart import CPU_DEMO_VALUES, Manifest, by_kind, load_values, manifests


@pytest.fixture(scope="session")
def default_docs() -> dict[str, Manifest]:
    return by_kind(manifests())


@pytest.fixture(scope="session")
def cpu_demo_docs() -> dict[str, Manifest]:
    return by_kind(manifests(load_values(CPU_DEMO_VALUES)))
