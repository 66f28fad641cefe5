"""A streaming request's inputs, checked against the interface before any model runs.

Pure numpy (no Triton, no torch), so every error message is unit-tested without a server. The
batch dimension is always 1: one video, one stream of events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from v2bgm_client import interface as api

from v2bgm.yue.tags import UnknownTag, resolve

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

    def seed_of(self, candidate: int) -> int:
        """Candidate i composes with seed + i, wrapping within the interface's range."""
        span = api.SEED_MAX - api.SEED_MIN + 1
        return api.SEED_MIN + (self.seed - api.SEED_MIN + candidate) % span


def draw_seed() -> int:
    return random.SystemRandom().randint(api.SEED_MIN, api.SEED_MAX)


def default_duration(frames: int, fps: float) -> float:
    """The video's length as its sampled frames tell it, within the interface's limits."""
    return min(api.MAX_DURATION_S, max(api.MIN_DURATION_S, frames / fps))


def parse(inputs: Tensors, seed_source: Callable[[], int] = draw_seed) -> StreamJob:
    """Raise `interface.InvalidInput`, naming the tensor and the limit, for anything out of
    range; fill in the defaults (duration: the video's; seed: a random one; one candidate)."""
    for name, value in inputs.items():
        if value.ndim == 0 or value.shape[0] != 1:
            raise api.InvalidInput(
                f"{name} must have a batch dimension of 1 (one video per stream), "
                f"got shape {list(value.shape)}"
            )
    row = {name: value[0] for name, value in inputs.items()}
    if api.FRAMES.name not in row:
        raise api.InvalidInput(f"missing input {api.FRAMES.name}")
    frames = row[api.FRAMES.name]
    api.check_frames(frames)
    fps = float(_scalar(row, api.FPS, required=True))
    api.check_fps(fps)
    duration = _scalar(row, api.TARGET_DURATION_S)
    duration_s = default_duration(len(frames), fps) if duration is None else float(duration)
    api.check_duration(duration_s)
    seed = _scalar(row, api.SEED)
    seed = seed_source() if seed is None else int(seed)
    api.check_seed(seed)
    candidates = _scalar(row, api.CANDIDATES)
    candidates = 1 if candidates is None else int(candidates)
    api.check_candidates(candidates)
    vocals = bool(_scalar(row, api.VOCALS) or False)
    hint = _scalar(row, api.HINT)
    hint = "" if hint is None else api.check_text(api.HINT, _bytes(hint), api.MAX_HINT_BYTES)
    fixed: list[str] = []
    if api.FIXED_TAGS.name in row:
        fixed = [
            api.check_text(api.FIXED_TAGS, _bytes(v), api.MAX_TAGS_BYTES)
            for v in row[api.FIXED_TAGS.name].reshape(-1)
        ]
        fixed = [tag for tag in fixed if tag.strip()]
        api.check_fixed_tags(fixed)
    try:  # here, before captioning: the captioner would reject them only after the queue
        resolve(fixed, vocals)
    except UnknownTag as exc:
        raise api.InvalidInput(str(exc)) from None
    return StreamJob(
        frames, fps, duration_s, seed, candidates, vocals, " ".join(hint.split()), tuple(fixed)
    )


def _scalar(row: Tensors, spec: api.TensorSpec, required: bool = False) -> object:
    if spec.name not in row:
        if required:
            raise api.InvalidInput(f"missing input {spec.name}")
        return None
    value = row[spec.name]
    if value.size != 1:
        raise api.InvalidInput(f"{spec.name} must hold one element, got shape {list(value.shape)}")
    return value.reshape(-1)[0]


def _bytes(value: object) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
