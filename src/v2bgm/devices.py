"""Device and dtype choices shared by every stage."""

from __future__ import annotations

import torch


def model_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (the checkpoints' own dtype); fp32 on the CPU, where bf16 is slower."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def triton_device(kind: str, device_id: int) -> str:
    """The torch device of a Triton model instance (`model_instance_kind`, `..._device_id`)."""
    if kind == "GPU":
        return f"cuda:{device_id}"
    return "cpu"
