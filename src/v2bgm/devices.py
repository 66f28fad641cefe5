"""Device and dtype choices shared by every stage."""

from __future__ import annotations

import torch


def model_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (the checkpoints' own dtype); fp32 on the CPU, where bf16 is slower."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def placed_on(device: str) -> dict[str, str]:
    """`from_pretrained`'s arguments that load a checkpoint onto `device`, for every model (YuE's
    stages, X-Codec, VideoLLaMA3): `device_map`, so that each tensor goes from the safetensors
    file to the device as it is read, a few at a time on transformers' loading threads, into a
    model built on the meta device, instead of the whole model on the host, then `.to(device)`.
    Same tensors either way (tests/unit/test_device_loading.py); transformers needs
    `accelerate` for it."""
    return {"device_map": device}


def triton_device(kind: str, device_id: int) -> str:
    """The torch device of a Triton model instance (`model_instance_kind`, `..._device_id`)."""
    if kind == "GPU":
        return f"cuda:{device_id}"
    return "cpu"
