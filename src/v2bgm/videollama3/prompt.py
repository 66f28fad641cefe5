"""What VideoLLaMA3 is asked, and the shape of the answer it is constrained to write.

The answer is line oriented so that it always parses:

    Caption: <one sentence, free text>
    Genre: <tag>
    Instrument: <tag>
    Mood: <tag>
    Gender: <tag>         (only when vocals are wanted)
    Timbre: <tag>         (only when vocals are wanted)
    Lyrics:               (only when vocals are wanted)
    [verse]
    <LYRIC_LINES lines>
                          (a blank line between sections)
    [chorus]
    ...

Lyrics follow YuE's format: sections labelled [verse]/[chorus], separated by a blank line, about
30 seconds of singing each, as many as the duration needs.
"""

from __future__ import annotations

import math

from v2bgm.tags import families_for

SYSTEM = "You are a film composer's assistant. You watch a video and choose its background music."
INSTRUCTION = (
    "Describe in one sentence what is seen in the video. Then choose background music that fits "
    "its atmosphere and emotion: one tag for each of {families}."
)
LYRICS_INSTRUCTION = " Then write song lyrics about the video in {n} sections."
HINT_INSTRUCTION = " The person who asked wants: {hint}"
FIXED_INSTRUCTION = " These tags are already chosen: {tags}."

CAPTION_FIELD = "Caption:"
LYRICS_FIELD = "Lyrics:"
MAX_CAPTION_TOKENS = 60
SECTION_SECONDS = 30  # YuE: one lyrics section is sung in about 30 s
SECTION_LABELS = ("verse", "chorus")  # alternating; YuE advises opening with [verse]
LYRIC_LINES = 4
MAX_LINE_TOKENS = 16
DEFAULT_DURATION_S = 30.0


def field_label(family: str) -> str:
    return f"{family.capitalize()}:"


def section_labels(duration_s: float) -> list[str]:
    n = max(1, math.ceil(duration_s / SECTION_SECONDS))
    return [SECTION_LABELS[i % len(SECTION_LABELS)] for i in range(n)]


def messages(vocals: bool, duration_s: float, hint: str = "", fixed: tuple[str, ...] = ()) -> list:
    """Chat messages; the video item is replaced by the frames the processor receives."""
    text = INSTRUCTION.format(families=", ".join(families_for(vocals)))
    if vocals:
        text += LYRICS_INSTRUCTION.format(n=len(section_labels(duration_s)))
    if fixed:
        text += FIXED_INSTRUCTION.format(tags=", ".join(fixed))
    if hint:
        text += HINT_INSTRUCTION.format(hint=hint)
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]},
    ]
