"""The composer port: what a served music model offers, whatever model it is (YuE v1 today).

The served model (`v2bgm.triton.handlers.ComposerHandler`) knows composers only through this
port and the registry (`v2bgm.composers`): it hands each request over with `submit` and answers
it when `done` is called, from whichever thread the composer uses. The composer reports its line
for a slot to `meter` and its costs per stage in `Music.stats`; `stages` names those stages, so
the metrics follow a composer's own pipeline.

Adding a composer: a package with a class that satisfies `Composer` and a loader
(`Loader`), one line in `v2bgm.composers.BUILT_IN`, and the model config's `composer` value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from v2bgm.plan import Section


@dataclass(frozen=True)
class MusicRequest:
    tags: str  # style tags, space separated (the captioner's vocabulary: v2bgm.tags)
    duration_s: float
    lyrics: str = ""  # empty: instrumental
    seed: int = 0
    cuts_s: tuple[float, ...] = ()  # the picture's cuts (v2bgm_contract.interface.check_cuts)


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
    stats: dict[str, StageStats] = field(default_factory=dict)  # stage name -> cost, in order
    sections: list[Section] = field(default_factory=list)  # the plan the music follows


# progress(stage, fraction_done): called between steps; may raise to cancel the request.
Progress = Callable[[str, float], None]
# done(music or error): called once per submitted request, from the composer's thread.
Done = Callable[[Music | BaseException], None]


class Cancelled(Exception):
    """Raised by a `Progress` callback to stop a composition its caller no longer wants."""


class Busy(Exception):
    """The composer cannot take another request now (every slot taken, the line full)."""


class Meter(Protocol):
    """What a composer reports of its line, from whichever thread
    (v2bgm.triton.metrics.ModelMetrics records it)."""

    def queued(self) -> None:
        """A request joined the line for a slot."""

    def started(self, waited_s: float) -> None:
        """A request took a slot after `waited_s` seconds in the line."""

    def ended(self) -> None:
        """A started request was answered (music or error)."""

    def cache_used(self, delta_bytes: float) -> None:
        """Requests took `delta_bytes` of the composer's KV cache (negative: gave them back)."""


class NoMeter:
    """Reports nowhere (the default)."""

    def queued(self) -> None:
        pass

    def started(self, waited_s: float) -> None:
        pass

    def ended(self) -> None:
        pass

    def cache_used(self, delta_bytes: float) -> None:
        pass


# How much a composer warms up before it serves (`ComposerOptions.warm_up`): "full", every shape
# a request may meet (on a GPU: compilations and CUDA graphs); "first", only what the first
# request needs, the rest when a request first meets it.
WARM_UPS = ("full", "first")
Lap = Callable[[str], None]  # called with the name of each loading or warm-up phase as it ends


def no_lap(phase: str) -> None:
    """A `Lap` that keeps nothing (no one times this load)."""


@dataclass(frozen=True)
class ComposerOptions:
    """What the served model's config says of a composer, and where its cold start is timed."""

    slots: int = 16  # requests computed at once
    max_waiting: int = 8  # beyond the slots, before refusing with Busy
    precision: str = "bf16"  # of the weights, where the composer offers a choice ("fp8")
    warm_up: str = "full"  # one of WARM_UPS
    # GiB of KV cache, where the composer's requests take memory by need (None: its default)
    cache_gib: float | None = None
    lap: Lap | None = None  # the served model's cold-start timer (v2bgm.triton.coldstart)


class Composer(Protocol):
    sample_rate: int
    stages: tuple[str, ...]  # the keys of Music.stats, in order
    token_stages: tuple[str, ...]  # those of `stages` that generate tokens
    slots: int  # requests computed at once, at most
    cache_bytes: int  # KV cache the requests take from by need (0: none of that kind)
    meter: Meter  # set by the served model before the first request

    def submit(self, request: MusicRequest, progress: Progress | None, done: Done) -> None:
        """Start a composition; `done` gets its music or its error later. Raises Busy at
        once when there is no room."""

    def close(self) -> None:
        """Stop taking requests; those admitted are still answered."""


# (weights folder, device such as "cuda:0" or "cpu", options) -> a composer ready to serve
Loader = Callable[[Path, str, ComposerOptions], Composer]
