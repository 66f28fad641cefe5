"""YuE v1's pipeline: stage 1 -> stage 2 -> X-Codec + vocoder, exactly as long as asked.

A request travels as a `Composition` through four steps: `plan` (sections and frames), stage 1
(its `Stage1Job` on the engine's decoder), `stage2` (several compositions' tracks share the same
teacher-forcing steps) and `decode`. `compose` runs the steps for one request; the scheduler
(`v2bgm.yue.scheduler`) moves many through the same steps at once.

Decoding follows YuE's `infer.py`: each track's codes give 16 kHz audio (X-Codec, clamped to
±0.99 as the reference saves it) and 44.1 kHz audio (the vocoder, from the same RVQ embeddings);
the 16 kHz mix gives the low band and the 44.1 kHz mix (clamped to ±0.99) the high band of the
result (`postprocess.recombine`). Background music is the instrumental track alone; with lyrics
the vocal track is added.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, XcodecModel

from v2bgm import checkpoints
from v2bgm.composer import Cancelled, Music, MusicRequest, Progress, StageStats
from v2bgm.devices import model_dtype
from v2bgm.engine.llama import StaticLlama
from v2bgm.yue import stage1, stage2, tokens
from v2bgm.yue.codec import XcodecDecoder
from v2bgm.yue.postprocess import recombine
from v2bgm.yue.stage1 import Stage1, Stage1Job
from v2bgm.yue.stage2 import Stage2
from v2bgm.yue.tokenizer import YuETokenizer
from v2bgm.yue.vocoder import SAMPLE_RATE, Upsampler

DECODE = "decode"
STAGES = (stage1.STAGE, stage2.STAGE, DECODE)
TOKEN_STAGES = (stage1.STAGE, stage2.STAGE)
STAGE2_ROWS = 32  # 6-s chunks teacher-forced side by side: several requests' tracks at once
WARM_UP_TAGS = "pop piano"
WARM_UP_LYRICS = "[verse]\nla la la"
FADE_OUT_S = 0.05  # the cut at the requested length gets a short fade, never a click
CLAMP = 0.99  # infer.py's save_audio limit
INSTRUMENTAL, VOCAL = "instrumental", "vocal"


@dataclass
class Composition:
    """One request on its way through YuE's stages."""

    request: MusicRequest
    progress: Progress | None
    sections: list[str]  # stage 1's lyrics sections (an instrumental form without lyrics)
    frames: int  # codec frames of music to make
    instrumental_only: bool
    stage1: Stage1Job
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # stage 2's [8, T] per track
    stats: dict[str, StageStats] = field(default_factory=dict)  # in stage order
    error: BaseException | None = None
    clock: float = field(default_factory=time.perf_counter)  # when its current stage began

    def tracks(self) -> dict[str, np.ndarray]:
        """Stage 1's codebook-0 tracks that stage 2 fills: background music is the
        instrumental alone."""
        result = self.stage1.result
        assert result is not None
        tracks = {INSTRUMENTAL: result.instrumental}
        if not self.instrumental_only:
            tracks[VOCAL] = result.vocal
        return tracks

    def lap(self, stage: str, tokens_made: int = 0) -> None:
        """Record the stage that just ended; the next one starts now."""
        now = time.perf_counter()
        self.stats[stage] = StageStats(now - self.clock, tokens_made)
        self.clock = now


class YuEComposer:
    stages = STAGES
    token_stages = TOKEN_STAGES

    def __init__(
        self, stage1: Stage1, stage2: Stage2, codec: XcodecDecoder, upsampler: Upsampler
    ) -> None:
        self.stage1 = stage1
        self.stage2_engine = stage2
        self.codec = codec
        self.upsampler = upsampler
        self.sample_rate = SAMPLE_RATE

    @classmethod
    def from_pretrained(
        cls, root: str | Path, device: str = "cpu", slots: int = 16, precision: str = "bf16"
    ) -> YuEComposer:
        """`slots`: stage-1 requests the engine decodes side by side; `precision`: of stage 1's
        matrices ("bf16": as loaded; "fp8": v2bgm.engine.linear). Stage 2 stays as loaded."""
        root = Path(root)
        dtype = model_dtype(device)
        s1 = AutoModelForCausalLM.from_pretrained(root / checkpoints.YUE_STAGE1, dtype=dtype)
        s2 = AutoModelForCausalLM.from_pretrained(root / checkpoints.YUE_STAGE2, dtype=dtype)
        s1, s2 = s1.to(device).eval(), s2.to(device).eval()
        tokenizer = YuETokenizer(root / checkpoints.YUE_TOKENIZER)
        return cls(
            Stage1(StaticLlama(s1, precision=precision), tokenizer, slots=slots),
            Stage2(StaticLlama(s2), rows=STAGE2_ROWS),
            *load_decoder(root, device),
        )

    # -- the steps ----------------------------------------------------------------------------
    def plan(self, request: MusicRequest, progress: Progress | None = None) -> Composition:
        """Stage 1's sections and frames; whether the music is instrumental only."""
        frames = math.ceil(request.duration_s * tokens.FRAME_RATE)
        sections = tokens.split_sections(request.lyrics) if request.lyrics.strip() else []
        instrumental_only = not sections
        if instrumental_only:
            sections = tokens.split_sections(tokens.INSTRUMENTAL_LYRICS)
        job = self.stage1.job(request.tags, sections, frames, request.seed, progress)
        return Composition(request, progress, sections, frames, instrumental_only, job)

    def stage1_done(self, composition: Composition) -> None:
        """Close stage 1 of a composition whose job has finished (its error, if any, is the
        composition's)."""
        job = composition.stage1
        composition.error = job.error
        composition.lap(stage1.STAGE, job.result.tokens if job.result is not None else 0)

    def stage2(self, batch: list[Composition]) -> None:
        """Stage 2 for every track of `batch` in the same steps. A cancel drops its own request
        only; any other error fails them all."""
        tracks = [(c, name, cb0) for c in batch for name, cb0 in c.tracks().items()]
        cancelled: dict[int, Cancelled] = {}

        def progress(stage: str, fraction: float) -> None:
            for i, c in enumerate(batch):
                if c.progress is not None and i not in cancelled:
                    try:
                        c.progress(stage, fraction)
                    except Cancelled as exc:
                        cancelled[i] = exc.with_traceback(None)
            if len(cancelled) == len(batch):
                raise Cancelled("every request of this stage-2 batch was cancelled")

        for c in batch:
            c.clock = time.perf_counter()
        try:
            codes = self.stage2_engine.fill_many([cb0 for _, _, cb0 in tracks], progress)
        except Exception as exc:
            for i, c in enumerate(batch):
                c.error = cancelled.get(i) or exc.with_traceback(None)
            return
        for (c, name, _), track in zip(tracks, codes, strict=True):
            c.codes[name] = track
        for i, c in enumerate(batch):
            c.error = cancelled.get(i)
            frames = sum(track.shape[1] for track in c.codes.values())
            c.lap(stage2.STAGE, frames * (tokens.STAGE2_CODEBOOKS - 1))

    def decode(self, composition: Composition) -> Music:
        """Decoded tracks [8, T] each -> the music, exactly as long as asked, with its costs."""
        c = composition
        c.clock = time.perf_counter()
        audio, stems = self.decode_tracks(c.codes, c.progress)
        n_samples = round(c.request.duration_s * self.sample_rate)
        audio = fade_out(fit_length(audio, n_samples), self.sample_rate)
        stems = {name: fit_length(stem, n_samples) for name, stem in stems.items()}
        c.lap(DECODE)
        return Music(audio.astype(np.float32), self.sample_rate, stems, dict(c.stats))

    def decode_tracks(
        self, codes: dict[str, np.ndarray], progress: Progress | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Codes [8, T] per track -> the 44.1 kHz mix and each track's 44.1 kHz stem."""
        low: dict[str, np.ndarray] = {}  # 16 kHz, per track
        stems: dict[str, np.ndarray] = {}  # 44.1 kHz, per track
        for name, track in codes.items():
            low[name] = np.clip(self.codec.decode(track), -CLAMP, CLAMP)
            stems[name] = self.upsampler(self.codec.embeddings(track), track=name)[0]
            if progress is not None:
                progress(DECODE, len(stems) / len(codes))
        high_mix = np.clip(sum(stems.values()), -CLAMP, CLAMP)
        return recombine(sum(low.values()), high_mix), stems

    # -- one request, step after step ---------------------------------------------------------
    @torch.inference_mode()
    def compose(self, request: MusicRequest, progress: Progress | None = None) -> Music:
        c = self.plan(request, progress)
        self.stage1.run([c.stage1])
        self.stage1_done(c)
        if c.error is None:
            self.stage2([c])
        if c.error is not None:
            raise c.error
        return self.decode(c)

    def warm_up(self) -> None:
        """Compile and capture the common shapes before the first request (on a GPU this
        takes tens of seconds; a request would otherwise pay it)."""
        request = MusicRequest(tags=WARM_UP_TAGS, duration_s=1.0, lyrics=WARM_UP_LYRICS)
        self.compose(request)  # one request; stage 2 with two tracks
        self.stage2_engine.capture()  # every stage-2 shape a longer or busier request meets
        with torch.inference_mode():  # several requests decoding at once
            self.stage1.run([self.plan(replace(request, seed=s)).stage1 for s in (0, 1)])


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
