"""The composer's model-agnostic interface: what any music model (YuE v1 today) must offer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class MusicRequest:
    tags: str  # style tags, space separated (YuE's genre/instrument/mood/gender/timbre)
    duration_s: float
    lyrics: str = ""  # empty: instrumental
    seed: int = 0


@dataclass(frozen=True)
class StageStats:
    """What one stage of a request cost: for per-stage metrics and benchmarks."""

    seconds: float
    tokens: int = 0  # tokens generated (0 for stages that generate none)


@dataclass
class Music:
    audio: np.ndarray  # float32 mono, exactly duration_s * sample_rate samples
    sample_rate: int
    stems: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, StageStats] = field(default_factory=dict)  # stage name -> cost


# progress(stage, fraction_done): called between steps; may raise to cancel the request.
Progress = Callable[[str, float], None]


class Cancelled(Exception):
    """Raised by a `Progress` callback to stop a composition its caller no longer wants."""


class Busy(Exception):
    """The composer cannot take another request now (every slot taken, the line full)."""


class Composer(Protocol):
    sample_rate: int

    def compose(self, request: MusicRequest, progress: Progress | None = None) -> Music: ...
