"""YuE v1 as a `Composer`: stage 1 -> stage 2 -> X-Codec + vocoder, exactly as long as asked.

Decoding follows YuE's `infer.py`: each track's codes give 16 kHz audio (X-Codec, clamped to
±0.99 as the reference saves it) and 44.1 kHz audio (the vocoder, from the same RVQ embeddings);
the 16 kHz mix gives the low band and the 44.1 kHz mix (clamped to ±0.99) the high band of the
result (`postprocess.recombine`). Background music is the instrumental track alone; with lyrics
the vocal track is added.

Both LM stages run on the static engine (`v2bgm.engine`: KV-cache slots, CUDA graphs, CFG in one
batched step) by default; `engine=False` keeps `transformers`' `generate`, the reference path.
"""

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
from v2bgm.engine.llama import StaticLlama
from v2bgm.engine.stage1 import Stage1Engine, Stage1Job
from v2bgm.engine.stage2 import Stage2Engine
from v2bgm.yue import tokens
from v2bgm.yue.codec import XcodecDecoder
from v2bgm.yue.postprocess import recombine
from v2bgm.yue.stage1 import Stage1, Stage1Output
from v2bgm.yue.stage2 import Stage2
from v2bgm.yue.tokenizer import YuETokenizer
from v2bgm.yue.vocoder import SAMPLE_RATE, Upsampler

STAGE2_ROWS = 32  # 6-s chunks teacher-forced side by side: several requests' tracks at once
WARM_UP_TAGS = "pop piano"
WARM_UP_LYRICS = "[verse]\nla la la"
FADE_OUT_S = 0.05  # the cut at the requested length gets a short fade, never a click
CLAMP = 0.99  # infer.py's save_audio limit


class YuEComposer:
    def __init__(
        self,
        stage1: Stage1 | Stage1Engine,
        stage2: Stage2 | Stage2Engine,
        codec: XcodecDecoder,
        upsampler: Upsampler,
    ) -> None:
        self.stage1 = stage1
        self.stage2 = stage2
        self.codec = codec
        self.upsampler = upsampler
        self.sample_rate = SAMPLE_RATE

    @classmethod
    def from_pretrained(
        cls, root: str | Path, device: str = "cpu", engine: bool = True, slots: int = 16
    ) -> YuEComposer:
        """`slots`: stage-1 requests the engine decodes side by side."""
        root = Path(root)
        dtype = model_dtype(device)
        s1 = AutoModelForCausalLM.from_pretrained(root / checkpoints.YUE_STAGE1, dtype=dtype)
        s2 = AutoModelForCausalLM.from_pretrained(root / checkpoints.YUE_STAGE2, dtype=dtype)
        s1, s2 = s1.to(device).eval(), s2.to(device).eval()
        tokenizer = YuETokenizer(root / checkpoints.YUE_TOKENIZER)
        stage1: Stage1 | Stage1Engine = Stage1(s1, tokenizer)
        stage2: Stage2 | Stage2Engine = Stage2(s2)
        if engine:
            stage1 = Stage1Engine(StaticLlama(s1), tokenizer, slots=slots)
            stage2 = Stage2Engine(StaticLlama(s2), rows=STAGE2_ROWS)
        return cls(stage1, stage2, *load_decoder(root, device))

    def compose(self, request: MusicRequest, progress: Progress | None = None) -> Music:
        sections, frames, instrumental_only = self.plan(request)
        clock = time.perf_counter()
        out1 = self.stage1.generate(request.tags, sections, frames, request.seed, progress)
        stage1_s = time.perf_counter() - clock
        music = self.finish(request, out1, frames, instrumental_only, progress)
        music.stats = {"stage1": StageStats(stage1_s, out1.tokens), **music.stats}
        return music

    def warm_up(self) -> None:
        """Compile and capture the common shapes before the first request (on a GPU this
        takes tens of seconds; a request would otherwise pay it)."""
        request = MusicRequest(tags=WARM_UP_TAGS, duration_s=1.0, lyrics=WARM_UP_LYRICS)
        self.compose(request)  # one request; stage 2 with two tracks
        if isinstance(self.stage1, Stage1Engine):  # several requests decoding at once
            sections, frames, _ = self.plan(request)
            self.stage1.run([Stage1Job(request.tags, sections, frames, s) for s in range(2)])

    @staticmethod
    def plan(request: MusicRequest) -> tuple[list[str], int, bool]:
        """Stage 1's sections and frames, and whether the music is instrumental only."""
        frames = math.ceil(request.duration_s * tokens.FRAME_RATE)
        sections = tokens.split_sections(request.lyrics) if request.lyrics.strip() else []
        if not sections:
            return tokens.split_sections(tokens.INSTRUMENTAL_LYRICS), frames, True
        return sections, frames, False

    def finish(
        self,
        request: MusicRequest,
        out1: Stage1Output,
        frames: int,
        instrumental_only: bool,
        progress: Progress | None = None,
    ) -> Music:
        """Stage 2 and decoding of stage 1's tracks: the music, exactly as long as asked."""
        tracks = self.tracks(out1, instrumental_only)
        t0 = time.perf_counter()
        codes = self.stage2_many(list(tracks.values()), progress)
        stage2_s = time.perf_counter() - t0
        return self.assemble(request, dict(zip(tracks, codes, strict=True)), stage2_s, progress)

    @staticmethod
    def tracks(out1: Stage1Output, instrumental_only: bool) -> dict[str, np.ndarray]:
        """The codebook-0 tracks stage 2 fills: background music is the instrumental alone."""
        tracks = {"instrumental": out1.instrumental}
        if not instrumental_only:
            tracks["vocal"] = out1.vocal
        return tracks

    def assemble(
        self,
        request: MusicRequest,
        codes: dict[str, np.ndarray],
        stage2_s: float,
        progress: Progress | None = None,
    ) -> Music:
        """Decoded tracks [8, T] each -> the music, exactly as long as asked, with its costs."""
        t1 = time.perf_counter()
        audio, stems = self.decode(codes, progress)
        n_samples = round(request.duration_s * self.sample_rate)
        audio = fade_out(fit_length(audio, n_samples), self.sample_rate)
        stems = {name: fit_length(stem, n_samples) for name, stem in stems.items()}
        frames = sum(c.shape[1] for c in codes.values())
        stats = {
            "stage2": StageStats(stage2_s, frames * (tokens.STAGE2_CODEBOOKS - 1)),
            "decode": StageStats(time.perf_counter() - t1),
        }
        return Music(audio.astype(np.float32), self.sample_rate, stems, stats)

    def stage2_many(self, tracks: list[np.ndarray], progress: Progress | None) -> list[np.ndarray]:
        if isinstance(self.stage2, Stage2Engine):  # every track's chunks in the same steps
            return self.stage2.fill_many(tracks, progress)
        return [self.stage2.fill(codes0, progress=progress) for codes0 in tracks]

    def decode(
        self, codes: dict[str, np.ndarray], progress: Progress | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Codes [8, T] per track -> the 44.1 kHz mix and each track's 44.1 kHz stem."""
        low: dict[str, np.ndarray] = {}  # 16 kHz, per track
        stems: dict[str, np.ndarray] = {}  # 44.1 kHz, per track
        for name, track in codes.items():
            low[name] = np.clip(self.codec.decode(track), -CLAMP, CLAMP)
            stems[name] = self.upsampler(self.codec.embeddings(track), track=name)[0]
            if progress is not None:
                progress("decode", len(stems) / len(codes))
        high_mix = np.clip(sum(stems.values()), -CLAMP, CLAMP)
        return recombine(sum(low.values()), high_mix), stems


def load_decoder(root: Path, device: str) -> tuple[XcodecDecoder, Upsampler]:
    """X-Codec (fp32) and YuE's 44.1 kHz vocoder."""
    xcodec = XcodecModel.from_pretrained(root / checkpoints.XCODEC, dtype=torch.float32)
    return (
        XcodecDecoder(xcodec.to(device).eval()),
        Upsampler.from_pretrained(root / checkpoints.YUE_VOCODER, device),
    )


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
