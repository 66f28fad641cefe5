"""YuE's tag vocabulary: the five families of its `top_200_tags.json`, cleaned, as package data."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

# YuE's README: "genre, instrument, mood, gender, and timbre", in that order.
FAMILIES = ("genre", "instrument", "mood", "gender", "timbre")
VOCAL_FAMILIES = ("gender", "timbre")  # only when the music has vocals
INSTRUMENTAL_FAMILIES = tuple(f for f in FAMILIES if f not in VOCAL_FAMILIES)


@cache
def vocabulary() -> dict[str, tuple[str, ...]]:
    """Family -> tags, most frequent first."""
    data = json.loads(resources.files("v2bgm.yue").joinpath("tags.json").read_text("utf-8"))
    return {family: tuple(data["families"][family]) for family in FAMILIES}


def families_for(vocals: bool) -> tuple[str, ...]:
    return FAMILIES if vocals else INSTRUMENTAL_FAMILIES
