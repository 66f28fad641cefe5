"""A tiny random X-Codec and the same weights in YuE's original checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import XcodecModel

from export.weights import Size, build_model
from export.xcodec import XCODEC_DTYPE, randomize_codebooks, xcodec_config
from export.xcodec_original import OriginalCheckpoint, write_original_checkpoint

SEED = 0


@pytest.fixture(scope="session")
def tiny_xcodec() -> XcodecModel:
    model = build_model(XcodecModel, xcodec_config(Size.TINY), seed=SEED, dtype=XCODEC_DTYPE)
    randomize_codebooks(model)
    return model


@pytest.fixture(scope="session")
def original(
    tiny_xcodec: XcodecModel, tmp_path_factory: pytest.TempPathFactory
) -> OriginalCheckpoint:
    return write_original_checkpoint(
        tiny_xcodec, tmp_path_factory.mktemp("xcodec_mini_infer"), seed=SEED
    )


@pytest.fixture(scope="session")
def original_state(original: OriginalCheckpoint) -> dict[str, torch.Tensor]:
    return torch.load(original.checkpoint, map_location="cpu", weights_only=True)["codec_model"]


@pytest.fixture(scope="session")
def converted_dir(original: OriginalCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.convert_xcodec import main

    out = tmp_path_factory.mktemp("converted") / "xcodec"
    args = ["--checkpoint", str(original.checkpoint), "--config", str(original.config)]
    assert main([*args, "--out", str(out)]) == 0
    return out
