"""values.schema.json (and the templates' own checks) reject bad values files.

Each file in bad-values/ is one mistake on top of the defaults; its first line says what the
error must mention (`# expect: ...`).
"""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest

from tests.deploy.chart import CHART, CPU_DEMO_VALUES, default_values, load_values, render

BAD_VALUES = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))
EXPECT_PREFIX = "# expect: "


def expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith(EXPECT_PREFIX), f"{path.name}: first line must be '{EXPECT_PREFIX}...'"
    return first.removeprefix(EXPECT_PREFIX)


@pytest.mark.parametrize("path", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_are_rejected(path: Path) -> None:
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as error:
        render(load_values(path))
    assert expected_error(path) in str(error.value)


def test_there_are_several_bad_values_files() -> None:
    assert len(BAD_VALUES) >= 10


@pytest.mark.parametrize("values_file", [CHART / "values.yaml", CPU_DEMO_VALUES])
def test_shipped_values_pass_the_schema(values_file: Path) -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(load_values(values_file))


def test_schema_covers_every_default_key() -> None:
    # additionalProperties is false at the top: a key in values.yaml missing from the schema
    # would make the defaults themselves invalid.
    with helm.Chart.load(CHART) as chart:
        properties = chart.schema["properties"]
    assert set(default_values()) == set(properties)
