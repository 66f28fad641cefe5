"""YuE v1 as a `Composer`: stage 1 -> stage 2 -> X-Codec, music exactly as long as asked."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, XcodecModel

from v2bgm import checkpoints
from v2bgm.composer import Music, MusicRequest, Progress, StageStats
from v2bgm.devices import model_dtype
from v2bgm.yue import tokens
from v2bgm.yue.codec import XcodecDecoder
from v2bgm.yue.stage1 import Stage1
from v2bgm.yue.stage2 import Stage2
from v2bgm.yue.tokenizer import YuETokenizer

FADE_OUT_S = 0.05  # the cut at the requested length gets a short fade, never a click


class YuEComposer:
    def __init__(self, stage1: Stage1, stage2: Stage2, codec: XcodecDecoder) -> None:
        self.stage1 = stage1
        self.stage2 = stage2
        self.codec = codec
        self.sample_rate = codec.sample_rate

    @classmethod
    def from_pretrained(cls, root: str | Path, device: str = "cpu") -> YuEComposer:
        root = Path(root)
        dtype = model_dtype(device)
        s1 = AutoModelForCausalLM.from_pretrained(root / checkpoints.YUE_STAGE1, dtype=dtype)
        s2 = AutoModelForCausalLM.from_pretrained(root / checkpoints.YUE_STAGE2, dtype=dtype)
        xcodec = XcodecModel.from_pretrained(root / checkpoints.XCODEC, dtype=torch.float32)
        tokenizer = YuETokenizer(root / checkpoints.YUE_TOKENIZER)
        return cls(
            Stage1(s1.to(device).eval(), tokenizer),
            Stage2(s2.to(device).eval()),
            XcodecDecoder(xcodec.to(device).eval()),
        )

    def compose(self, request: MusicRequest, progress: Progress | None = None) -> Music:
        frames = math.ceil(request.duration_s * tokens.FRAME_RATE)
        sections = tokens.split_sections(request.lyrics) if request.lyrics.strip() else []
        instrumental_only = not sections
        if instrumental_only:
            sections = tokens.split_sections(tokens.INSTRUMENTAL_LYRICS)
        clock = time.perf_counter()
        out1 = self.stage1.generate(request.tags, sections, frames, request.seed, progress)
        stage1_s = time.perf_counter() - clock
        tracks = {"instrumental": out1.instrumental}
        if not instrumental_only:
            tracks["vocal"] = out1.vocal
        stage2_s = decode_s = 0.0
        stems = {}
        n_samples = round(request.duration_s * self.sample_rate)
        for name, codes0 in tracks.items():
            t0 = time.perf_counter()
            codes = self.stage2.fill(codes0, progress=progress)
            t1 = time.perf_counter()
            stems[name] = fit_length(self.codec.decode(codes), n_samples)
            stage2_s, decode_s = stage2_s + t1 - t0, decode_s + time.perf_counter() - t1
            if progress is not None:
                progress("decode", len(stems) / len(tracks))
        stats = {
            "stage1": StageStats(stage1_s, out1.tokens),
            "stage2": StageStats(stage2_s, len(tracks) * frames * (tokens.STAGE2_CODEBOOKS - 1)),
            "decode": StageStats(decode_s),
        }
        audio = np.clip(sum(stems.values()), -1.0, 1.0).astype(np.float32)
        return Music(fade_out(audio, self.sample_rate), self.sample_rate, stems, stats)


def fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim to `n_samples`, or pad with silence (the decoder can come up a few samples short)."""
    if len(audio) >= n_samples:
        return audio[:n_samples]
    return np.pad(audio, (0, n_samples - len(audio)))


def fade_out(audio: np.ndarray, sample_rate: int, seconds: float = FADE_OUT_S) -> np.ndarray:
    n = min(len(audio), int(seconds * sample_rate))
    if n:
        audio = audio.copy()
        audio[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return audio
