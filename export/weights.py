"""Shared helpers: sizes, seeded construction on a device, parameter counts, saving."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from transformers import PretrainedConfig, PreTrainedModel

# Full-size checkpoints are written in shards like the hub's (`model-00001-of-0000N.safetensors`).
FULL_SHARD_SIZE = "5GB"
TINY_SHARD_SIZE = "50GB"  # one `model.safetensors`
META_DEVICE = "meta"

ModelT = TypeVar("ModelT", bound=PreTrainedModel)


class Size(str, enum.Enum):
    TINY = "tiny"
    FULL = "full"

    @property
    def dtype(self) -> torch.dtype:
        """Tiny checkpoints are float32 (fast and exact on the CPU); full ones bfloat16, like the
        real checkpoints."""
        return torch.float32 if self is Size.TINY else torch.bfloat16

    @property
    def shard_size(self) -> str:
        return TINY_SHARD_SIZE if self is Size.TINY else FULL_SHARD_SIZE


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def seed_all(seed: int) -> None:
    """Seed torch's CPU and CUDA generators; called right before each part is built, so a part's
    bytes do not depend on which other parts were built before it."""
    torch.manual_seed(seed)


def build_model(
    model_class: type[ModelT],
    config: PretrainedConfig,
    *,
    seed: int,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
) -> ModelT:
    """Random weights, initialised directly in `dtype` on `device` (no float32 copy on the host),
    which keeps the full-size build's memory at one copy of the weights."""
    seed_all(seed)
    with torch.device(device), default_dtype(dtype):
        model = model_class(config)
    return model.eval()


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_parameters_on_meta(factory: Callable[[], torch.nn.Module]) -> int:
    """Parameter count of a model built on the meta device: no memory, no initialisation."""
    with torch.device(META_DEVICE):
        return count_parameters(factory())


def save_model(model: PreTrainedModel, out_dir: Path, size: Size) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, max_shard_size=size.shard_size)
    return out_dir
