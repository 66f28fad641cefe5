"""A streaming request's inputs, checked against the interface before any model runs.

Pure numpy (no Triton, no torch), so every error message is unit-tested without a server. The
batch dimension is always 1: one video, one stream of events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from v2bgm_contract import interface as contract

from v2bgm.tags import UnknownTag, resolve
from v2bgm.triton import limits
from v2bgm.triton.rows import required, scalar, single_row, text, texts, vector

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class StreamJob:
    frames: np.ndarray  # [T, H, W, 3] uint8
    fps: float
    duration_s: float
    seed: int
    candidates: int
    vocals: bool
    hint: str
    fixed_tags: tuple[str, ...]
    cuts_s: tuple[float, ...] = ()

    def seed_of(self, candidate: int) -> int:
        """Candidate i composes with seed + i, wrapping within the interface's range."""
        span = contract.SEED_MAX - contract.SEED_MIN + 1
        return contract.SEED_MIN + (self.seed - contract.SEED_MIN + candidate) % span


def draw_seed() -> int:
    return random.SystemRandom().randint(contract.SEED_MIN, contract.SEED_MAX)


def default_duration(
    frames: int, fps: float, max_duration_s: float = limits.DEFAULT_MAX_DURATION_S
) -> float:
    """The video's length as its sampled frames tell it, within the server's limits (a longer
    video gets music up to the operator's cap, as it got up to the interface's before)."""
    return min(max_duration_s, max(contract.MIN_DURATION_S, frames / fps))


def parse(
    inputs: Tensors,
    seed_source: Callable[[], int] = draw_seed,
    max_duration_s: float = limits.DEFAULT_MAX_DURATION_S,
) -> StreamJob:
    """Raise `interface.InvalidInput`, naming the tensor and the limit, for anything out of
    range (DURATION_S: the interface's, then the operator's cap `max_duration_s`); fill in the
    defaults (duration: the video's; seed: a random one; one candidate)."""
    row = single_row(inputs, "one video per stream")
    if contract.FRAMES.name not in row:
        raise contract.InvalidInput(f"missing input {contract.FRAMES.name}")
    frames = row[contract.FRAMES.name]
    contract.check_frames(frames)
    fps = float(required(row, contract.FPS))
    contract.check_fps(fps)
    duration = scalar(row, contract.TARGET_DURATION_S)
    if duration is None:
        duration_s = default_duration(len(frames), fps, max_duration_s)
    else:
        duration_s = float(duration)
    limits.check_duration(duration_s, max_duration_s)
    seed = scalar(row, contract.SEED)
    seed = seed_source() if seed is None else int(seed)
    contract.check_seed(seed)
    candidates = scalar(row, contract.CANDIDATES)
    candidates = 1 if candidates is None else int(candidates)
    contract.check_candidates(candidates)
    vocals = bool(scalar(row, contract.VOCALS) or False)
    hint = text(row, contract.HINT, contract.MAX_HINT_BYTES)
    fixed = texts(row, contract.FIXED_TAGS, contract.MAX_TAGS_BYTES)
    contract.check_fixed_tags(fixed)
    try:  # here, before captioning: the captioner would reject them only after the queue
        resolve(fixed, vocals)
    except UnknownTag as exc:
        raise contract.InvalidInput(str(exc)) from None
    cuts = vector(row, contract.CUTS_S)
    cuts_s = tuple(contract.check_cuts(cuts, duration_s)) if cuts is not None else ()
    hint = " ".join(hint.split())
    return StreamJob(frames, fps, duration_s, seed, candidates, vocals, hint, tuple(fixed), cuts_s)
