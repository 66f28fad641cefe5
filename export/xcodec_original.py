"""YuE's X-Codec in its ORIGINAL layout (xcodec_mini_infer): the converter's tiny path and tests.

- `write_original_checkpoint` writes an `XcodecModel`'s weights the way xcodec_mini_infer ships
  them: `final_ckpt/ckpt_00360000.pth` (`torch.save({"codec_model": state_dict})`, SoundStream's
  key names, weight-normed DAC convolutions), `final_ckpt/config.yaml` (`generator:` block only;
  the training sections are irrelevant to inference) and `semantic_ckpts/hf_1_325000/config.json`.
- `reference_decode` is SoundStream.decode written out over that state dict, as the original
  computes it (weight norm applied at run time, output padding on decoder block 1 only), so the
  converted model can be checked against the original layout without the original code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from transformers import XcodecModel

from export.convert_xcodec import GENERATOR_NAME, PADDED_DECODER_BLOCK, to_original_state_dict

CHECKPOINT = Path("final_ckpt/ckpt_00360000.pth")
CODEC_CONFIG = Path("final_ckpt/config.yaml")
SEMANTIC_CONFIG = Path("semantic_ckpts/hf_1_325000/config.json")
N_FILTERS = 32  # in config.yaml; SoundStream ignores it (the DAC widths are hard-coded)

DECODER_KERNEL = 7
RESIDUAL_DILATIONS = (1, 3, 9)
SNAKE_EPS = 1e-9


@dataclass(frozen=True)
class OriginalCheckpoint:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def config(self) -> Path:
        return self.root / CODEC_CONFIG

    @property
    def semantic_config(self) -> Path:
        return self.root / SEMANTIC_CONFIG


def generator_config(model: XcodecModel) -> dict[str, object]:
    """final_ckpt/config.yaml's `generator` block for this model's numbers."""
    config = model.config
    return {
        "name": GENERATOR_NAME,
        "config": {
            "n_filters": N_FILTERS,
            "D": int(config.acoustic_model_config.hidden_size),
            "target_bandwidths": list(config.target_bandwidths),
            "ratios": list(config.acoustic_model_config.upsampling_ratios),
            "sample_rate": int(config.sample_rate),
            "bins": int(config.codebook_size),
        },
    }


def write_original_checkpoint(model: XcodecModel, root: Path, *, seed: int) -> OriginalCheckpoint:
    paths = OriginalCheckpoint(root)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    original = to_original_state_dict(state, model.config, seed=seed)
    paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"codec_model": original}, paths.checkpoint)
    paths.config.write_text(yaml.safe_dump({"generator": generator_config(model)}, sort_keys=False))
    paths.semantic_config.parent.mkdir(parents=True, exist_ok=True)
    semantic = model.config.semantic_model_config.to_dict()
    paths.semantic_config.write_text(json.dumps(semantic, indent=2, sort_keys=True) + "\n")
    return paths


# --- SoundStream.decode over the original state dict -------------------------------------------
def _weight(state: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """Old-style weight norm, recomputed at run time like `torch.nn.utils.weight_norm(dim=0)`."""
    g, v = state[f"{prefix}.weight_g"], state[f"{prefix}.weight_v"]
    return v * (g / v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1))))


def _snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)


def _conv(state: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor, **kw) -> torch.Tensor:
    return F.conv1d(x, _weight(state, prefix), state[f"{prefix}.bias"], **kw)


def _residual_unit(
    state: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor, dilation: int
) -> torch.Tensor:
    pad = (DECODER_KERNEL - 1) * dilation // 2
    y = _snake(x, state[f"{prefix}.block.0.alpha"])
    y = _conv(state, f"{prefix}.block.1", y, dilation=dilation, padding=pad)
    y = _conv(state, f"{prefix}.block.3", _snake(y, state[f"{prefix}.block.2.alpha"]))
    crop = (x.shape[-1] - y.shape[-1]) // 2
    return (x[..., crop:-crop] if crop > 0 else x) + y


@torch.no_grad()
def reference_decode(
    state: Mapping[str, torch.Tensor], codes: torch.Tensor, ratios: list[int]
) -> torch.Tensor:
    """codes [K, B, T] (infer.py's layout) -> audio [B, 1, T * hop]: RVQ decode (sum of codebook
    rows), fc_post2, DAC decoder_2."""
    quantized = sum(
        F.embedding(codes[k], state[f"quantizer.vq.layers.{k}._codebook.embed"]).transpose(1, 2)
        for k in range(codes.shape[0])
    )
    x = F.linear(quantized.transpose(1, 2), state["fc_post2.weight"], state["fc_post2.bias"])
    x = _conv(state, "decoder_2.model.0", x.transpose(1, 2), padding=DECODER_KERNEL // 2)
    for i, stride in enumerate(ratios):
        block = f"decoder_2.model.{i + 1}.block"
        x = _snake(x, state[f"{block}.0.alpha"])
        x = F.conv_transpose1d(
            x,
            _weight(state, f"{block}.1"),
            state[f"{block}.1.bias"],
            stride=stride,
            padding=math.ceil(stride / 2),
            output_padding=1 if i == PADDED_DECODER_BLOCK else 0,
        )
        for unit, dilation in enumerate(RESIDUAL_DILATIONS):
            x = _residual_unit(state, f"{block}.{unit + 2}", x, dilation)
    last = len(ratios) + 1
    x = _snake(x, state[f"decoder_2.model.{last}.alpha"])
    return _conv(state, f"decoder_2.model.{last + 1}", x, padding=DECODER_KERNEL // 2)
