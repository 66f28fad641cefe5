"""YuE's 44.1 kHz upsampler: X-Codec RVQ embeddings -> 44.1 kHz audio, one decoder per track.

    upsampler = Upsampler.from_pretrained(weights / checkpoints.YUE_VOCODER, device)
    emb = xcodec_decoder.embeddings(codes)          # [1, 1024, T], codes [8, T] from stage 2
    audio = upsampler(emb, track="instrumental")    # float32 [882 * T] at 44.1 kHz

The folder is xcodec_mini_infer/decoders as YuE ships it: `config.yaml`, `decoder_131000.pth`
(vocal track) and `decoder_151000.pth` (instrumental track), as infer.py's `--vocal_decoder_path`
and `--inst_decoder_path` defaults pair them. Like infer.py the decoders run in float32 on the
un-clamped embeddings; clamping or mixing is the caller's (see `postprocess.recombine`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from v2bgm.yue.tokens import FRAME_RATE
from v2bgm.yue.vocos import VocosConfig, VocosDecoder

Track = Literal["vocal", "instrumental"]
CONFIG_FILE = "config.yaml"
DECODER_FILES: Mapping[Track, str] = {
    "vocal": "decoder_131000.pth",
    "instrumental": "decoder_151000.pth",
}
SAMPLE_RATE = 44100  # vocoder.py saves at 44100; = hop 882 x 50 frames/s


class Upsampler:
    def __init__(self, decoders: Mapping[Track, VocosDecoder]) -> None:
        self.decoders = dict(decoders)
        hop = next(iter(self.decoders.values())).config.hop_length
        if hop * FRAME_RATE != SAMPLE_RATE:
            raise ValueError(f"hop {hop} at {FRAME_RATE} frames/s is not {SAMPLE_RATE} Hz")
        self.samples_per_frame = hop
        self.sample_rate = SAMPLE_RATE

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> Upsampler:
        """Each decoder built on the meta device and given its file's tensors, read from the
        file (memory-mapped) straight onto `device`: no random initialisation, no copy of the
        whole state on the host."""
        folder = Path(folder)
        config = VocosConfig.from_yaml(folder / CONFIG_FILE)
        decoders = {}
        for track, name in DECODER_FILES.items():
            with torch.device("meta"):
                decoder = VocosDecoder(config)
            path = folder / name
            state = torch.load(
                path, map_location=device, weights_only=True, mmap=zipfile.is_zipfile(path)
            )  # mmap needs torch.save's zip format (a legacy .pth is read whole)
            decoder.load_state_dict(state, strict=True, assign=True)
            decoders[track] = decoder.to(device=device, dtype=torch.float32).eval()
        return cls(decoders)

    @property
    def device(self) -> torch.device:
        return next(iter(self.decoders.values())).head.istft.window.device

    @torch.inference_mode()
    def __call__(
        self, embeddings: torch.Tensor | np.ndarray, track: Track = "instrumental"
    ) -> np.ndarray:
        """embeddings [B, C, T] or [C, T] -> float32 audio [B, 882 * T] or [882 * T]."""
        x = torch.as_tensor(embeddings).to(self.device, torch.float32)
        audio = self.decoders[track](x if x.dim() == 3 else x[None])
        audio = audio.cpu().numpy()
        return audio if x.dim() == 3 else audio[0]
