"""Request handlers of the served models: numpy tensors in, numpy tensors out.

They hold everything a model does between Triton's tensors and the model code, and know nothing of
Triton itself, so they are unit-tested without a server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from v2bgm_client import interface as api

from v2bgm.composer import Composer, MusicRequest
from v2bgm.videollama3.captioner import VideoCaptioner
from v2bgm.yue.composer import YuEComposer

Tensors = dict[str, np.ndarray]


def scalar(inputs: Tensors, spec: api.TensorSpec) -> np.generic | bytes | None:
    """The single element of a [1] tensor, or None when an optional input is absent."""
    if spec.name not in inputs:
        if spec.optional:
            return None
        raise api.InvalidInput(f"missing input {spec.name}")
    value = inputs[spec.name]
    if value.size != 1:
        raise api.InvalidInput(f"{spec.name} must hold one element, got shape {list(value.shape)}")
    return value.reshape(-1)[0]


def text(inputs: Tensors, spec: api.TensorSpec, limit: int) -> str:
    value = scalar(inputs, spec)
    if value is None:
        return ""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return api.check_text(spec, bytes(value), limit)


def bytes_tensor(value: str) -> np.ndarray:
    return np.array([value.encode("utf-8")], dtype=np.object_)


class CaptionerHandler:
    spec = api.CAPTIONER

    def __init__(self, captioner: VideoCaptioner) -> None:
        self.captioner = captioner

    @classmethod
    def load(cls, weights: Path, device: str) -> CaptionerHandler:
        return cls(VideoCaptioner.from_pretrained(weights, device))

    def __call__(self, inputs: Tensors) -> Tensors:
        frames = inputs[api.FRAMES.name]
        api.check_frames(frames)
        fps = float(scalar(inputs, api.FPS))
        api.check_fps(fps)
        description = self.captioner.describe(frames, fps)
        return {
            api.CAPTION.name: bytes_tensor(description.caption),
            api.TAGS.name: bytes_tensor(description.tag_line),
            api.LYRICS.name: bytes_tensor(description.lyrics),
        }


class ComposerHandler:
    spec = api.COMPOSER

    def __init__(self, composer: Composer) -> None:
        self.composer = composer

    @classmethod
    def load(cls, weights: Path, device: str) -> ComposerHandler:
        return cls(YuEComposer.from_pretrained(weights, device))

    def __call__(self, inputs: Tensors) -> Tensors:
        request = self.parse(inputs)
        music = self.composer.compose(request)
        return {
            api.AUDIO.name: music.audio.astype(np.float32),
            api.SAMPLE_RATE.name: np.array([music.sample_rate], dtype=np.int32),
        }

    @staticmethod
    def parse(inputs: Tensors) -> MusicRequest:
        tags = text(inputs, api.TAGS, api.MAX_TAGS_BYTES).strip()
        if not tags:
            raise api.InvalidInput(f"{api.TAGS.name} is empty")
        lyrics = text(inputs, api.LYRICS, api.MAX_LYRICS_BYTES)
        duration = float(scalar(inputs, api.DURATION_S))
        api.check_duration(duration)
        seed_value = scalar(inputs, api.SEED)
        seed = 0 if seed_value is None else int(seed_value)
        api.check_seed(seed)
        return MusicRequest(tags=tags, lyrics=lyrics, duration_s=duration, seed=seed)
