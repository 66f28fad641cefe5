"""The one reader of request rows (v2bgm.triton.rows) and the composer registry
(v2bgm.composers), without a server."""

from __future__ import annotations

import numpy as np
import pytest
from v2bgm_contract import interface as contract

from tests.composers import sine_sweep
from v2bgm import composers
from v2bgm.composer import ComposerOptions
from v2bgm.triton import rows


def test_rows_split_and_a_single_row_is_enforced():
    batch = {"A": np.zeros((2, 1)), "B": np.ones((2, 3))}
    assert [r["B"].shape for r in rows.split_rows(batch)] == [(3,), (3,)]
    with pytest.raises(contract.InvalidInput, match="one batch size"):
        rows.split_rows({"A": np.zeros((2, 1)), "B": np.zeros((3, 1))})
    with pytest.raises(contract.InvalidInput, match=r"A must have a batch dimension of 1 \(one x"):
        rows.single_row(batch, "one x")


def test_scalars_texts_and_their_errors_name_the_tensor():
    row = {
        contract.TAGS.name: np.array([b"pop"], np.object_),
        contract.FIXED_TAGS.name: np.array([b"jazz", b"", "piano"], np.object_),
        contract.DURATION_S.name: np.array([1.0, 2.0], np.float32),
    }
    assert rows.text(row, contract.TAGS, 10) == "pop"
    assert rows.text(row, contract.LYRICS, 10) == ""  # optional, absent
    assert rows.texts(row, contract.FIXED_TAGS, 10) == ["jazz", "piano"]  # padding dropped
    with pytest.raises(contract.InvalidInput, match="TAGS is 3 bytes, more than the limit 2"):
        rows.text(row, contract.TAGS, 2)
    with pytest.raises(contract.InvalidInput, match="DURATION_S must hold one element"):
        rows.scalar(row, contract.DURATION_S)
    with pytest.raises(contract.InvalidInput, match="missing input FPS"):
        rows.required(row, contract.FPS)
    bad = {contract.TAGS.name: np.array([b"\xff"], np.object_)}
    with pytest.raises(contract.InvalidInput, match="TAGS is not valid UTF-8"):
        rows.text(bad, contract.TAGS, 10)


def test_the_registry_names_yue_and_takes_a_loader_by_its_path():
    assert composers.DEFAULT in composers.BUILT_IN
    assert composers.loader("tests.composers.sine_sweep:load") is sine_sweep.load
    toy = composers.load("tests.composers.sine_sweep:load", None, "cpu", ComposerOptions(2, 1))
    try:
        assert (toy.slots, toy.stages) == (2, (sine_sweep.SWEEP, sine_sweep.SHAPE))
    finally:
        toy.close()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("yue-v9", "unknown composer 'yue-v9'"),
        ("no.such.module:load", "cannot load no.such.module:load"),
        ("tests.composers.sine_sweep:nothing", "cannot load"),
        ("tests.composers.sine_sweep:SAMPLE_RATE", "is not callable"),
    ],
)
def test_a_wrong_composer_name_says_what_is_wrong(name, why):
    with pytest.raises(composers.UnknownComposer, match=why):
        composers.loader(name)
