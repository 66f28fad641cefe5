"""The tag vocabulary: the contract between the captioner and the composer.

YuE v1's five families of its `top_200_tags.json`, cleaned, as package data: the captioner
writes only these (its grammar), a request's fixed tags are checked against them, and YuE reads
them. A second composer with its own vocabulary would map these, or bring its own here.
"""

from __future__ import annotations

import json
from difflib import get_close_matches
from functools import cache
from importlib import resources

# YuE's README: "genre, instrument, mood, gender, and timbre", in that order.
FAMILIES = ("genre", "instrument", "mood", "gender", "timbre")
VOCAL_FAMILIES = ("gender", "timbre")  # only when the music has vocals
INSTRUMENTAL_FAMILIES = tuple(f for f in FAMILIES if f not in VOCAL_FAMILIES)


@cache
def vocabulary() -> dict[str, tuple[str, ...]]:
    """Family -> tags, most frequent first."""
    data = json.loads(resources.files("v2bgm").joinpath("tags.json").read_text("utf-8"))
    return {family: tuple(data["families"][family]) for family in FAMILIES}


def families_for(vocals: bool) -> tuple[str, ...]:
    return FAMILIES if vocals else INSTRUMENTAL_FAMILIES


class UnknownTag(ValueError):
    """A requested tag is outside YuE's vocabulary or does not fit the request."""


def _canonical() -> dict[str, list[tuple[str, str]]]:
    """lower-cased tag -> [(family, spelling)], in family order."""
    index: dict[str, list[tuple[str, str]]] = {}
    for family, tags in vocabulary().items():
        for tag in tags:
            index.setdefault(tag.lower(), []).append((family, tag))
    return index


def resolve(requested: list[str], vocals: bool) -> dict[str, str]:
    """Requested tags -> {family: tag in YuE's spelling}; each family at most once.

    A tag listed in two families (e.g. "instrumental") fills the first one still free.
    """
    index = _canonical()
    allowed = families_for(vocals)
    fixed: dict[str, str] = {}
    for raw in requested:
        wanted = " ".join(raw.split())
        candidates = [(f, t) for f, t in index.get(wanted.lower(), []) if f in allowed]
        if not candidates:
            if wanted.lower() in index:
                raise UnknownTag(f"tag {wanted!r} is a vocal tag; it needs vocals on")
            near = get_close_matches(wanted.lower(), list(index), n=5, cutoff=0.6)
            hint = ", ".join(repr(index[n][0][1]) for n in near) or "none"
            raise UnknownTag(f"tag {wanted!r} is not in YuE's tag vocabulary (near: {hint})")
        free = [(f, t) for f, t in candidates if f not in fixed]
        if not free:
            family = candidates[0][0]
            raise UnknownTag(f"more than one {family} tag: {fixed[family]!r} and {wanted!r}")
        family, tag = free[0]
        fixed[family] = tag
    return fixed
