"""The network of YuE's 44.1 kHz upsampler: xcodec_mini_infer's `VocosDecoder`.

VocosBackbone (Conv1d k7, LayerNorm, ConvNeXt blocks, LayerNorm) then ISTFTHead (Linear to
n_fft + 2 = log-magnitude and phase of n_fft/2 + 1 bins, ISTFT with "same" padding). Module and
parameter names are the original's, so decoder_131000.pth / decoder_151000.pth (plain state dicts:
`backbone.*`, `head.out.*`, `head.istft.window`) load with `load_state_dict(strict=True)`.

"same" padding: frames overlap-add into (T - 1) * hop + n_fft samples and (n_fft - hop) / 2 are cut
at each end, leaving exactly T * hop samples (882 per 50 Hz frame: 44.1 kHz).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

LAYER_NORM_EPS = 1e-6
CONV_KERNEL = 7  # the embedding conv and the depthwise convs, padding 3
MAX_MAGNITUDE = 1e2  # ISTFTHead clips exp(log-magnitude) here
MIN_WINDOW_ENVELOPE = 1e-11  # the original asserts the overlap-added window stays above this
SAME_PADDING = "same"
BACKBONE_CLASS = "vocos.models.VocosBackbone"  # class paths as written in decoders/config.yaml
HEAD_CLASS = "vocos.heads.ISTFTHead"


@dataclass(frozen=True)
class VocosConfig:
    """decoders/config.yaml: backbone and head `init_args`."""

    input_channels: int  # the RVQ embedding width (1024 in YuE)
    dim: int
    intermediate_dim: int
    num_layers: int
    n_fft: int
    hop_length: int

    @classmethod
    def from_yaml(cls, path: Path) -> VocosConfig:
        config = yaml.safe_load(Path(path).read_text())
        backbone, head = config["backbone"], config["head"]
        if backbone["class_path"] != BACKBONE_CLASS or head["class_path"] != HEAD_CLASS:
            raise ValueError(f"{path}: expected {BACKBONE_CLASS} + {HEAD_CLASS}")
        b, h = backbone["init_args"], head["init_args"]
        if b.get("adanorm_num_embeddings") is not None:
            raise ValueError(f"{path}: AdaLayerNorm backbones are not supported")
        if h.get("padding", SAME_PADDING) != SAME_PADDING or h["dim"] != b["dim"]:
            raise ValueError(f"{path}: only a 'same'-padded ISTFT head of the backbone's width")
        if h.get("win_length", h["n_fft"]) != h["n_fft"]:  # ISTFTHead always uses n_fft
            raise ValueError(f"{path}: win_length must equal n_fft")
        return cls(
            input_channels=int(b["input_channels"]),
            dim=int(b["dim"]),
            intermediate_dim=int(b["intermediate_dim"]),
            num_layers=int(b["num_layers"]),
            n_fft=int(h["n_fft"]),
            hop_length=int(h["hop_length"]),
        )

    def to_yaml_dict(self) -> dict[str, Any]:
        return {
            "backbone": {
                "class_path": BACKBONE_CLASS,
                "init_args": {
                    "input_channels": self.input_channels,
                    "dim": self.dim,
                    "intermediate_dim": self.intermediate_dim,
                    "num_layers": self.num_layers,
                },
            },
            "head": {
                "class_path": HEAD_CLASS,
                "init_args": {
                    "dim": self.dim,
                    "n_fft": self.n_fft,
                    "hop_length": self.hop_length,
                    "padding": SAME_PADDING,
                },
            },
        }


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, CONV_KERNEL, padding=CONV_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, config: VocosConfig) -> None:
        super().__init__()
        self.embed = nn.Conv1d(
            config.input_channels, config.dim, CONV_KERNEL, padding=CONV_KERNEL // 2
        )
        self.norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        layer_scale = 1 / config.num_layers  # the original's default init; real weights replace it
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(config.dim, config.intermediate_dim, layer_scale)
            for _ in range(config.num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, T, dim]
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding (torch.istft only offers center=True)."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft))  # periodic, as the original

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:  # [B, n_fft, T] -> [B, L]
        length = (frames.shape[-1] - 1) * self.hop_length + self.n_fft
        out = F.fold(frames, (1, length), kernel_size=(1, self.n_fft), stride=(1, self.hop_length))
        return out[:, 0, 0]

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # complex [B, n_fft/2+1, T] -> [B, N]
        pad = (self.n_fft - self.hop_length) // 2
        frames = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward")
        audio = self._overlap_add(frames * self.window[None, :, None])
        envelope = self._overlap_add(
            self.window.square()[None, :, None].expand(1, -1, spec.shape[-1])
        )[0]
        audio, envelope = audio[:, pad:-pad], envelope[pad:-pad]
        if not bool((envelope > MIN_WINDOW_ENVELOPE).all()):
            raise ValueError("the window overlap leaves samples uncovered (NOLA fails)")
        return audio / envelope


class ISTFTHead(nn.Module):
    def __init__(self, config: VocosConfig) -> None:
        super().__init__()
        self.out = nn.Linear(config.dim, config.n_fft + 2)
        self.istft = ISTFT(config.n_fft, config.hop_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, dim] -> [B, T * hop]
        log_magnitude, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        magnitude = torch.exp(log_magnitude).clip(max=MAX_MAGNITUDE)
        return self.istft(torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase)))


class VocosDecoder(nn.Module):
    """RVQ embeddings [B, input_channels, T] at 50 Hz -> audio [B, T * hop_length]."""

    def __init__(self, config: VocosConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = VocosBackbone(config)
        self.head = ISTFTHead(config)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(embeddings))
