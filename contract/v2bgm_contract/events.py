"""The events of the streaming model (`interface.STREAM_MODEL`), one per gRPC stream response.

Each response carries one JSON object in its EVENT tensor: `{"type": ..., <fields>}`. In order:

- `started` once: the options the server settled on (the seed it drew when none was sent, the
  cuts it will follow).
- `caption` once: the caption, YuE tags and lyrics, as soon as the captioner has them.
- `progress` many, per candidate: the composer's stage (`queued` until it starts,
  then `stage1`, `stage2`, `decode`), the fraction of that stage done, the seconds of music that
  stage has covered, the seconds since the request started and an estimate of the seconds
  left for the whole request (None until there is a basis for one).
- `audio` once per candidate: the AUDIO and SAMPLE_RATE tensors of the same response hold it;
  `sections` is the plan the music follows (`[{"label", "start_s", "end_s"}]`).
- `done` last: seconds per stage, summed over candidates. Triton's final flag follows alone (an
  empty response, seen only by callers that ask for empty final responses).

A failure ends the stream with an `error` event (a gRPC status name from `STATUS_CODES` and the
message: Triton 2.51's stream protocol carries no status per response), then Triton's error
response, whose message starts with the same status name, then the final flag alone.
Used by the server to write events and by the client to read them; numpy and json only.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

STARTED = "started"
CAPTIONED = "caption"
PROGRESS = "progress"
COMPOSED = "audio"
DONE = "done"
ERROR = "error"
QUEUED_STAGE = "queued"  # progress before the composer has started on a candidate


@dataclass(frozen=True)
class Started:
    seed: int  # candidate i uses seed + i (wrapping within the interface's seed range)
    candidates: int
    duration_s: float  # of music per candidate
    cuts_s: list[float] = field(default_factory=list)  # the picture's cuts, as sent


@dataclass(frozen=True)
class Captioned:
    caption: str
    tags: str
    lyrics: str  # empty: instrumental
    seconds: float  # the captioner's time


@dataclass(frozen=True)
class Progress:
    candidate: int
    stage: str
    fraction: float  # of this stage, in [0, 1]
    music_s: float  # seconds of the requested music this stage has covered
    elapsed_s: float  # since the request started
    eta_s: float | None  # seconds left for the whole request; None: no estimate yet


@dataclass(frozen=True)
class Composed:
    candidate: int
    seed: int
    sample_rate: int
    audio_s: float
    timings: dict[str, float]  # this candidate's seconds per composer stage
    audio: np.ndarray | None = field(default=None, compare=False)  # from the AUDIO tensor
    sections: list[dict[str, Any]] = field(default_factory=list)  # {"label", "start_s", "end_s"}


@dataclass(frozen=True)
class Done:
    timings: dict[str, float]  # seconds per stage ("captioning", "stage1", ...) and "total"


# The statuses a stream can end with, as gRPC names them: act on them as on the ensemble's.
STATUS_CODES = (
    "INVALID_ARGUMENT",  # the request breaks the interface: fix it, do not retry
    "UNAVAILABLE",  # no room now, or the server is going away: retry with backoff
    "RESOURCE_EXHAUSTED",  # a limit of the server's was reached: retry later
    "CANCELLED",  # the caller cancelled
    "DEADLINE_EXCEEDED",  # the caller's deadline passed
    "INTERNAL",  # the server failed: report it
)


@dataclass(frozen=True)
class Error:
    code: str  # one of STATUS_CODES
    message: str


def with_status(code: str, message: str) -> str:
    """An error message that names its status first ("UNAVAILABLE: ..."): Triton 2.51's Python
    backend hands a BLS caller the message of a step's error but not its code."""
    return f"{code}: {message}"


def split_status(message: str) -> tuple[str | None, str]:
    """(status, the rest) of a message `with_status` wrote; (None, message) of any other."""
    head, sep, rest = message.partition(": ")
    return (head, rest) if sep and head in STATUS_CODES else (None, message)


Event = Started | Captioned | Progress | Composed | Done | Error
TYPES: dict[str, type] = {
    STARTED: Started,
    CAPTIONED: Captioned,
    PROGRESS: Progress,
    COMPOSED: Composed,
    DONE: Done,
    ERROR: Error,
}
_TYPE_NAMES = {cls: name for name, cls in TYPES.items()}
_NOT_IN_JSON = ("audio",)


def encode(event: Event) -> bytes:
    """The EVENT element for `event` (its audio travels in the AUDIO tensor, not in the JSON)."""
    body = {k: v for k, v in asdict(event).items() if k not in _NOT_IN_JSON}
    return json.dumps({"type": _TYPE_NAMES[type(event)], **body}).encode("utf-8")


def decode(data: bytes | str, audio: np.ndarray | None = None) -> Event:
    """An EVENT element -> its event; ValueError if it is not one (unknown type, missing field)."""
    try:
        body: dict[str, Any] = json.loads(data)
        cls = TYPES[body.pop("type")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a stream event: {str(data)[:200]!r} ({exc})") from None
    names = {f.name for f in fields(cls)} - set(_NOT_IN_JSON)
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    missing = required - set(_NOT_IN_JSON) - set(body)  # older servers leave out newer fields
    if missing:
        raise ValueError(f"{_TYPE_NAMES[cls]} event lacks {sorted(missing)}")
    kwargs = {k: v for k, v in body.items() if k in names}  # newer servers may add fields
    if cls is Composed:
        kwargs["audio"] = audio
    return cls(**kwargs)
