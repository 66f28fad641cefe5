"""X-Codec decoding: codes [K, T] at 50 frames/s -> 16 kHz audio."""

from __future__ import annotations

import numpy as np
import torch
from transformers import XcodecModel


class XcodecDecoder:
    def __init__(self, model: XcodecModel) -> None:
        self.model = model
        self.sample_rate = int(model.config.sample_rate)

    @torch.inference_mode()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [K, T] (K <= the model's codebooks) -> float32 mono samples."""
        codes_t = torch.as_tensor(
            np.asarray(codes)[None], dtype=torch.long, device=self.model.device
        )
        audio = self.model.decode(codes_t).audio_values
        return audio[0, 0].float().cpu().numpy()

    @torch.inference_mode()
    def embeddings(self, codes: np.ndarray) -> torch.Tensor:
        """codes [K, T] -> the RVQ embedding [1, D, T] (sum of the K codebook rows; D = 1024 for
        YuE), the 44.1 kHz upsampler's input: YuE's `SoundStream.get_embed`."""
        codes_t = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.model.device)
        return self.model.quantizer.decode(codes_t[:, None])  # the quantizer takes [K, B, T]
