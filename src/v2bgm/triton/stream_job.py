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
        span = contract.SEED_MAX - contract.SEED_MIN + 1
        return contract.SEED_MIN + (self.seed - contract.SEED_MIN + candidate) % span


def draw_seed() -> int:
    return random.SystemRandom().randint(contract.SEED_MIN, contract.SEED_MAX)


def default_duration(frames: int, fps: float) -> float:
    """The video's length as its sampled frames tell it, within the interface's limits."""
    return min(contract.MAX_DURATION_S, max(contract.MIN_DURATION_S, frames / fps))


def parse(inputs: Tensors, seed_source: Callable[[], int] = draw_seed) -> StreamJob:
    """Raise `interface.InvalidInput`, naming the tensor and the limit, for anything out of
    range; fill in the defaults (duration: the video's; seed: a random one; one candidate)."""
    for name, value in inputs.items():
        if value.ndim == 0 or value.shape[0] != 1:
            raise contract.InvalidInput(
                f"{name} must have a batch dimension of 1 (one video per stream), "
                f"got shape {list(value.shape)}"
            )
    row = {name: value[0] for name, value in inputs.items()}
    if contract.FRAMES.name not in row:
        raise contract.InvalidInput(f"missing input {contract.FRAMES.name}")
    frames = row[contract.FRAMES.name]
    contract.check_frames(frames)
    fps = float(_scalar(row, contract.FPS, required=True))
    contract.check_fps(fps)
    duration = _scalar(row, contract.TARGET_DURATION_S)
    duration_s = default_duration(len(frames), fps) if duration is None else float(duration)
    contract.check_duration(duration_s)
    seed = _scalar(row, contract.SEED)
    seed = seed_source() if seed is None else int(seed)
    contract.check_seed(seed)
    candidates = _scalar(row, contract.CANDIDATES)
    candidates = 1 if candidates is None else int(candidates)
    contract.check_candidates(candidates)
    vocals = bool(_scalar(row, contract.VOCALS) or False)
    hint = _scalar(row, contract.HINT)
    hint = (
        ""
        if hint is None
        else contract.check_text(contract.HINT, _bytes(hint), contract.MAX_HINT_BYTES)
    )
    fixed: list[str] = []
    if contract.FIXED_TAGS.name in row:
        fixed = [
            contract.check_text(contract.FIXED_TAGS, _bytes(v), contract.MAX_TAGS_BYTES)
            for v in row[contract.FIXED_TAGS.name].reshape(-1)
        ]
        fixed = [tag for tag in fixed if tag.strip()]
        contract.check_fixed_tags(fixed)
    try:  # here, before captioning: the captioner would reject them only after the queue
        resolve(fixed, vocals)
    except UnknownTag as exc:
        raise contract.InvalidInput(str(exc)) from None
    return StreamJob(
        frames, fps, duration_s, seed, candidates, vocals, " ".join(hint.split()), tuple(fixed)
    )


def _scalar(row: Tensors, spec: contract.TensorSpec, required: bool = False) -> object:
    if spec.name not in row:
        if required:
            raise contract.InvalidInput(f"missing input {spec.name}")
        return None
    value = row[spec.name]
    if value.size != 1:
        raise contract.InvalidInput(
            f"{spec.name} must hold one element, got shape {list(value.shape)}"
        )
    return value.reshape(-1)[0]


def _bytes(value: object) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
