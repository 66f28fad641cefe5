"""A composition's section plan: where the music changes, from its duration and the picture's cuts.

Film music changes with the picture, so a section boundary is put on a cut, when the cut leaves
room for a section on both sides (the rule below); the piece ends with an `[outro]` that ends
with the video. The plan belongs to no composer: YuE turns each section into one stage-1 segment
of exactly that length (`v2bgm.yue.composer`); another composer may read it its own way.

The rule, in order:
1. A cut is kept when it comes at least MIN_SECTION_S after the last kept boundary (the start or a
   kept cut) and at least MIN_SECTION_S before the end; closer cuts are merged into the section
   they fall in (a flurry of quick cuts is one section).
2. A span longer than MAX_SECTION_S (what one YuE segment can hold) is split into equal parts.
3. The last section is the `[outro]`. When only one section is left and the music is at least
   2 x MIN_SECTION_S long, its last OUTRO_SHARE (at least MIN_SECTION_S) becomes the outro.
4. The other sections alternate `[verse]` and `[chorus]`, with a `[bridge]` before the outro
   when there are at least four sections; a single section is a `[verse]`.
Times are on the codec's frame grid (1/FRAME_RATE s), so each section lasts a whole number of
frames and the sections add up to the music's length.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

MIN_SECTION_S = 4.0  # a section carries at least a phrase
MAX_SECTION_S = 30.0  # YuE's segment cap (3,000 stage-1 tokens: 30 s of music)
OUTRO_SHARE = 0.25  # of a single span, when the outro has to be cut out of it
VERSE, CHORUS, BRIDGE, OUTRO = "[verse]", "[chorus]", "[bridge]", "[outro]"


@dataclass(frozen=True)
class Section:
    label: str  # as YuE's lyrics write it: "[verse]", "[chorus]", "[bridge]", "[outro]"
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict[str, float | str]:
        """The JSON form (SECTIONS, events): times to the millisecond."""
        return {
            "label": self.label,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
        }


def kept_cuts(duration_s: float, cuts_s: list[float]) -> list[float]:
    """Rule 1: the cuts a section boundary goes on."""
    kept: list[float] = []
    last = 0.0
    for cut in sorted(cuts_s):
        if cut - last >= MIN_SECTION_S and duration_s - cut >= MIN_SECTION_S:
            kept.append(cut)
            last = cut
    return kept


def plan_sections(duration_s: float, cuts_s: list[float], frame_rate: int) -> list[Section]:
    """The sections of `duration_s` of music with these cuts (rules 1-4), on a grid of
    `frame_rate` frames per second."""
    total = math.ceil(duration_s * frame_rate)
    edges = [0, *(round(c * frame_rate) for c in kept_cuts(duration_s, cuts_s)), total]
    limit = int(MAX_SECTION_S * frame_rate)
    spans: list[tuple[int, int]] = []
    for start, end in itertools.pairwise(edges):
        parts = max(1, -(-(end - start) // limit))
        cuts = [start + round(i * (end - start) / parts) for i in range(parts + 1)]
        spans += list(itertools.pairwise(cuts))
    minimum = int(MIN_SECTION_S * frame_rate)
    if len(spans) == 1 and total >= 2 * minimum:
        outro = max(minimum, round(total * OUTRO_SHARE))
        spans = [(0, total - outro), (total - outro, total)]
    labels = _labels(len(spans))
    return [
        Section(label, start / frame_rate, end / frame_rate)
        for label, (start, end) in zip(labels, spans, strict=True)
    ]


def _labels(n: int) -> list[str]:
    """Rules 3 and 4."""
    if n == 1:
        return [VERSE]
    body = [VERSE if i % 2 == 0 else CHORUS for i in range(n - 1)]
    if n >= 4:
        body[-1] = BRIDGE
    return [*body, OUTRO]
