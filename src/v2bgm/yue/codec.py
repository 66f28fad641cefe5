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
