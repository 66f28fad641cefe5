"""The section plan (v2bgm.plan) and the cuts' checks (v2bgm_contract.interface.check_cuts)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from v2bgm_contract import interface as contract

from v2bgm.plan import (
    BRIDGE,
    CHORUS,
    MAX_SECTION_S,
    MIN_SECTION_S,
    OUTRO,
    VERSE,
    kept_cuts,
    plan_sections,
)

RATE = 50


def spans(sections) -> list[tuple[str, float, float]]:
    return [(s.label, s.start_s, s.end_s) for s in sections]


def test_close_cuts_merge_and_the_outro_starts_on_the_last_kept_cut():
    # 2.0: too close to the start; 11.0: 1.5 s after 9.5; 28.0: 2 s before the end
    sections = plan_sections(30.0, [2.0, 9.5, 11.0, 20.0, 28.0], RATE)
    assert spans(sections) == [(VERSE, 0, 9.5), (CHORUS, 9.5, 20.0), (OUTRO, 20.0, 30.0)]


def test_without_cuts_the_outro_is_cut_out_of_the_music():
    assert spans(plan_sections(10.0, [], RATE)) == [(VERSE, 0, 6.0), (OUTRO, 6.0, 10.0)]
    assert spans(plan_sections(7.0, [], RATE)) == [(VERSE, 0, 7.0)]  # no room for two sections


def test_long_spans_split_evenly_and_a_bridge_precedes_the_outro():
    sections = plan_sections(120.0, [10, 20, 30, 40, 80], RATE)
    assert [s.label for s in sections] == [
        VERSE, CHORUS, VERSE, CHORUS, VERSE, CHORUS, BRIDGE, OUTRO
    ]  # fmt: skip
    assert (sections[4].start_s, sections[4].end_s, sections[5].end_s) == (40.0, 60.0, 80.0)


@pytest.mark.parametrize("seed", range(40))
def test_any_plan_tiles_the_music_and_keeps_the_rules(seed):
    rng = np.random.default_rng(seed)
    duration = float(rng.uniform(contract.MIN_DURATION_S, contract.MAX_DURATION_S))
    cuts = sorted(set(np.round(rng.uniform(0.1, duration - 0.1, rng.integers(0, 40)), 2)))
    sections = plan_sections(duration, cuts, RATE)
    assert sections[0].start_s == 0 and sections[-1].end_s == np.ceil(duration * RATE) / RATE
    for a, b in itertools.pairwise(sections):
        assert a.end_s == b.start_s
    assert all(s.seconds <= MAX_SECTION_S + 1e-9 for s in sections)
    assert all(round(s.seconds * RATE, 6).is_integer() for s in sections)  # whole frames
    if len(sections) > 1:
        assert sections[-1].label == OUTRO
        assert all(s.seconds >= MIN_SECTION_S - 1 / RATE for s in sections)
    boundaries = {s.start_s for s in sections}
    for cut in kept_cuts(duration, cuts):
        assert min(abs(cut - b) for b in boundaries) <= 0.5 / RATE + 1e-9  # on the cut
    for cut in cuts:  # every cut dropped was too close to a kept boundary or to an end
        if cut not in kept_cuts(duration, cuts):
            nearest = min([0.0, duration, *kept_cuts(duration, cuts)], key=lambda b: abs(b - cut))
            assert abs(nearest - cut) < MIN_SECTION_S + 1e-9


@pytest.mark.parametrize(
    ("cuts", "message"),
    [
        ([3.0, 2.0], "sorted in increasing order"),
        ([2.0, 2.0], "without repeats"),
        ([-1.0], "strictly between 0 and the duration 10 s"),
        ([0.0], "strictly between 0"),
        ([10.0], "strictly between 0 and the duration"),
        ([12.5], "got 12.5"),
        ([float("nan")], "NaN or infinite"),
        ([float("inf")], "NaN or infinite"),
        (list(np.linspace(0.1, 9.9, contract.MAX_CUTS + 1)), "65 cuts, more than 64"),
    ],
)
def test_bad_cuts_name_the_tensor_and_the_rule(cuts, message):
    with pytest.raises(contract.InvalidInput, match="CUTS_S") as err:
        contract.check_cuts(np.array(cuts, np.float32), 10.0)
    assert message in str(err.value)


def test_good_cuts_pass_as_floats():
    assert contract.check_cuts(np.array([1.5, 4.0], np.float32), 10.0) == [1.5, 4.0]
    assert contract.check_cuts([], 10.0) == []
