"""What VideoLLaMA3 is asked, and the shape of the answer it is constrained to write.

The answer is line oriented so that it always parses:

    Caption: <one sentence, free text>
    Genre: <tag>
    Instrument: <tag>
    Mood: <tag>
    Gender: <tag>      (only when vocals are wanted)
    Timbre: <tag>      (only when vocals are wanted)
"""

from __future__ import annotations

from v2bgm.yue.tags import families_for

SYSTEM = "You are a film composer's assistant. You watch a video and choose its background music."
INSTRUCTION = (
    "Describe in one sentence what is seen in the video. Then choose background music that fits "
    "its atmosphere and emotion: one tag for each of {families}."
)
CAPTION_FIELD = "Caption:"
MAX_CAPTION_TOKENS = 60


def field_label(family: str) -> str:
    return f"{family.capitalize()}:"


def messages(vocals: bool) -> list[dict]:
    """Chat messages; the video item is replaced by the frames the processor receives."""
    families = ", ".join(families_for(vocals))
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {"type": "text", "text": INSTRUCTION.format(families=families)},
            ],
        },
    ]
