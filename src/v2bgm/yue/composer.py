"""YuE v1's pipeline: stage 1 -> stage 2 -> X-Codec + vocoder, exactly as long as asked.

A request travels as a `Composition` through four steps: `plan` (sections and frames), stage 1
(its `Stage1Job` on the engine's decoder), stage 2 and `decode`. Stage 2 works on 6-s chunks,
each independent of the others (YuE's own cut): `new_chunks` hands out those whose codebook-0
frames stage 1 has made final, even while stage 1 goes on; `fill_chunks` fills any set of
chunks (several compositions' at once share the teacher-forcing steps); `stage2_done`
assembles a track from its chunks once they are all filled, with the same codes as filling
the whole track at once. `compose` runs the steps for one request; the scheduler
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
from v2bgm.composer import (
    WARM_UPS,
    Cancelled,
    Lap,
    Music,
    MusicRequest,
    Progress,
    StageStats,
    no_lap,
)
from v2bgm.devices import model_dtype, placed_on
from v2bgm.engine.llama import StaticLlama
from v2bgm.plan import OUTRO, Section, plan_sections
from v2bgm.yue import stage1, stage2, tokens
from v2bgm.yue.codec import XcodecDecoder
from v2bgm.yue.postprocess import recombine
from v2bgm.yue.stage1 import Stage1, Stage1Job
from v2bgm.yue.stage2 import Stage2
from v2bgm.yue.tokenizer import YuETokenizer
from v2bgm.yue.vocoder import SAMPLE_RATE, Upsampler
from v2bgm.yue.windows import decode_in_windows

DECODE = "decode"
STAGES = (stage1.STAGE, stage2.STAGE, DECODE)
TOKEN_STAGES = (stage1.STAGE, stage2.STAGE)
STAGE2_ROWS = 32  # 6-s chunks teacher-forced side by side: several requests' tracks at once
WARM_UP_TAGS = "pop piano"
WARM_UP_LYRICS = "[verse]\nla la la"
FADE_OUT_S = 0.05  # the cut at the requested length gets a short fade, never a click
# After an [outro] the music fades out over part of it (musically, not a click guard).
OUTRO_FADE_SHARE = 0.5
MIN_OUTRO_FADE_S = 1.5
CLAMP = 0.99  # infer.py's save_audio limit
INSTRUMENTAL, VOCAL = "instrumental", "vocal"


@dataclass
class Chunk:
    """One 6-s chunk of one track of a composition, on its way through stage 2."""

    composition: Composition
    track: str
    index: int
    codes0: np.ndarray  # its codebook-0 codes [<= STAGE2_CHUNK_FRAMES]


@dataclass
class Composition:
    """One request on its way through YuE's stages."""

    request: MusicRequest
    progress: Progress | None
    sections: list[str]  # stage 1's lyrics sections (an instrumental form without lyrics)
    frames: int  # codec frames of music to make
    instrumental_only: bool
    stage1: Stage1Job
    labels: list[str]  # each stage-1 segment's section label
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # stage 2's [8, T] per track
    chunks_sent: int = 0  # chunk indices handed out by `new_chunks` (for every track)
    filled: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # (track, i): ids
    stats: dict[str, StageStats] = field(default_factory=dict)  # in stage order
    error: BaseException | None = None
    clock: float = field(default_factory=time.perf_counter)  # when its current stage began

    @property
    def track_names(self) -> tuple[str, ...]:
        """The tracks stage 2 fills: background music is the instrumental alone."""
        return (INSTRUMENTAL,) if self.instrumental_only else (INSTRUMENTAL, VOCAL)

    @property
    def chunk_count(self) -> int:
        return -(-self.frames // tokens.STAGE2_CHUNK_FRAMES)

    @property
    def stage2_complete(self) -> bool:
        return len(self.filled) == self.chunk_count * len(self.track_names)

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
        cls,
        root: str | Path,
        device: str = "cpu",
        slots: int = 16,
        precision: str = "bf16",
        lap: Lap | None = None,
        cache_gib: float | None = None,
    ) -> YuEComposer:
        """`slots`: stage-1 requests the engine decodes side by side, at most; `cache_gib`:
        the size of stage 1's paged KV cache, which bounds them by the positions each needs
        (None: a whole context window for every slot); `precision`: of stage 1's
        matrices ("bf16": as loaded; "fp8": v2bgm.engine.linear). Stage 2 stays as loaded.
        Each checkpoint loads straight onto `device` (`v2bgm.devices.placed_on`); `lap` hears
        each part's name as it is loaded."""
        root, lap = Path(root), lap or no_lap
        dtype = model_dtype(device)
        s1 = AutoModelForCausalLM.from_pretrained(
            root / checkpoints.YUE_STAGE1, dtype=dtype, **placed_on(device)
        ).eval()
        stage1_engine = StaticLlama(s1, precision=precision)
        lap("weights: yue-s1")
        s2 = AutoModelForCausalLM.from_pretrained(
            root / checkpoints.YUE_STAGE2, dtype=dtype, **placed_on(device)
        ).eval()
        stage2_engine = StaticLlama(s2)
        lap("weights: yue-s2")
        tokenizer = YuETokenizer(root / checkpoints.YUE_TOKENIZER)
        decoder = load_decoder(root, device)
        lap("weights: x-codec, vocoder")
        positions = None
        if cache_gib is not None:
            positions = int(cache_gib * 2**30) // stage1_engine.position_bytes()
        return cls(
            Stage1(stage1_engine, tokenizer, slots=slots, cache_positions=positions),
            Stage2(stage2_engine, rows=STAGE2_ROWS),
            *decoder,
        )

    # -- the steps ----------------------------------------------------------------------------
    def plan(self, request: MusicRequest, progress: Progress | None = None) -> Composition:
        """Stage 1's sections and frames; whether the music is instrumental only.

        Background music (no lyrics) follows the section plan (`v2bgm.plan`: boundaries on the
        picture's cuts, an `[outro]` that ends with the video): one stage-1 segment per
        section, exactly as long. With lyrics the lyrics' sections come in turn, each as long as
        YuE makes it (until <EOA>), as before."""
        frames = math.ceil(request.duration_s * tokens.FRAME_RATE)
        sections = tokens.split_sections(request.lyrics) if request.lyrics.strip() else []
        instrumental_only = not sections
        budgets = None
        if instrumental_only:
            plan = plan_sections(request.duration_s, list(request.cuts_s), tokens.FRAME_RATE)
            sections = tokens.split_sections("\n".join(s.label for s in plan))
            budgets = [round(s.seconds * tokens.FRAME_RATE) for s in plan]
        job = self.stage1.job(request.tags, sections, frames, request.seed, progress, budgets)
        labels = [section.split("\n", 1)[0] for section in sections]
        return Composition(request, progress, sections, frames, instrumental_only, job, labels)

    def stage1_done(self, composition: Composition) -> None:
        """Close stage 1 of a composition whose job has finished (its error, if any, is the
        composition's)."""
        job = composition.stage1
        composition.error = composition.error or job.error  # or a chunk's, failed in stage 2
        composition.lap(stage1.STAGE, job.result.tokens if job.result is not None else 0)

    def new_chunks(self, composition: Composition) -> list[Chunk]:
        """The chunks of `composition` whose codebook 0 stage 1 has made final since the last
        call (all that remain once stage 1 has finished), for `fill_chunks`."""
        c, size = composition, tokens.STAGE2_CHUNK_FRAMES
        ready = c.stage1.frames_ready()
        end = c.chunks_sent
        while end < c.chunk_count and min((end + 1) * size, c.frames) <= ready:
            end += 1
        if end == c.chunks_sent:
            return []
        vocal, instrumental = c.stage1.codes0(min(end * size, c.frames))
        codes0 = {INSTRUMENTAL: instrumental, VOCAL: vocal}
        chunks = [
            Chunk(c, name, i, codes0[name][i * size : (i + 1) * size])
            for i in range(c.chunks_sent, end)
            for name in c.track_names
        ]
        c.chunks_sent = end
        return chunks

    def fill_chunks(self, chunks: list[Chunk]) -> None:
        """Stage 2 for `chunks` (of one or several compositions) in the same steps; each result
        goes to its composition. Progress goes to the compositions whose stage 1 has ended (a
        composition still in stage 1 reports stage 1). A cancel drops its own composition only;
        any other error fails them all."""
        owners = list({id(chunk.composition): chunk.composition for chunk in chunks}.values())
        reporting = [c for c in owners if c.stage1.finished and c.progress is not None]
        cancelled: dict[int, Cancelled] = {}

        def progress(stage: str, fraction: float) -> None:
            for c in reporting:
                if id(c) not in cancelled:
                    try:
                        c.progress(stage, fraction)  # type: ignore[misc]
                    except Cancelled as exc:
                        cancelled[id(c)] = exc.with_traceback(None)
            if reporting and len(cancelled) == len(owners):
                raise Cancelled("every request of this stage-2 batch was cancelled")

        try:
            ids = self.stage2_engine.fill_chunks([chunk.codes0 for chunk in chunks], progress)
        except Exception as exc:
            for c in owners:
                c.error = c.error or cancelled.get(id(c)) or exc.with_traceback(None)
            return
        for chunk, chunk_ids in zip(chunks, ids, strict=True):
            chunk.composition.filled[chunk.track, chunk.index] = chunk_ids
        for c in owners:
            c.error = c.error or cancelled.get(id(c))

    def stage2_done(self, composition: Composition) -> None:
        """Assemble the tracks of a composition whose chunks are all filled; stage 2's time is
        what it took after stage 1 ended (chunks filled earlier, with `early_stage2`, ran behind
        stage 1)."""
        c = composition
        for name in c.track_names:
            c.codes[name] = stage2.assemble([c.filled[name, i] for i in range(c.chunk_count)])
        c.filled.clear()
        frames = sum(track.shape[1] for track in c.codes.values())
        c.lap(stage2.STAGE, frames * (tokens.STAGE2_CODEBOOKS - 1))

    def decode(self, composition: Composition) -> Music:
        """Decoded tracks [8, T] each -> the music, exactly as long as asked, with its costs."""
        c = composition
        c.clock = time.perf_counter()
        audio, stems = self.decode_tracks(c.codes, c.progress)
        n_samples = round(c.request.duration_s * self.sample_rate)
        sections = made_sections(c)
        fade = FADE_OUT_S
        if sections and sections[-1].label == OUTRO:
            fade = max(MIN_OUTRO_FADE_S, OUTRO_FADE_SHARE * sections[-1].seconds)
        audio = fade_out(fit_length(audio, n_samples), self.sample_rate, fade)
        stems = {name: fit_length(stem, n_samples) for name, stem in stems.items()}
        c.lap(DECODE)
        return Music(audio.astype(np.float32), self.sample_rate, stems, dict(c.stats), sections)

    def decode_tracks(
        self, codes: dict[str, np.ndarray], progress: Progress | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Codes [8, T] per track -> the 44.1 kHz mix and each track's 44.1 kHz stem (a long
        track window by window: `v2bgm.yue.windows`)."""
        low: dict[str, np.ndarray] = {}  # 16 kHz, per track
        stems: dict[str, np.ndarray] = {}  # 44.1 kHz, per track
        for name, track in codes.items():
            low_hop = self.codec.sample_rate // tokens.FRAME_RATE
            low[name] = np.clip(decode_in_windows(self.codec.decode, track, low_hop), -CLAMP, CLAMP)
            stems[name] = decode_in_windows(
                lambda part, name=name: self.upsampler(self.codec.embeddings(part), track=name)[0],
                track,
                self.upsampler.samples_per_frame,
            )
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
            self.fill_chunks(self.new_chunks(c))
        if c.error is not None:
            raise c.error
        self.stage2_done(c)
        return self.decode(c)

    def warm_up(self, mode: str = "full", lap: Lap | None = None) -> None:
        """Compile and capture before the first request (on a GPU this takes tens of seconds;
        a request would otherwise pay it). `mode` (v2bgm.composer.WARM_UPS): "full", the common
        shapes: one request, every stage-2 shape, stage 1 with two requests; "first", the
        first request alone: later shapes are captured (and compiled) when a request first
        meets them (`StepGraphs`). `lap` hears each phase's name as it ends."""
        if mode not in WARM_UPS:
            raise ValueError(f"warm-up must be one of {', '.join(WARM_UPS)}, got {mode!r}")
        lap = lap or no_lap
        request = MusicRequest(tags=WARM_UP_TAGS, duration_s=1.0, lyrics=WARM_UP_LYRICS)
        self.compose(request)  # one request; stage 2 with two tracks
        lap("warm-up: first request")
        if mode == "first":
            return
        # every stage-2 shape a longer or busier request meets
        graphs = self.stage2_engine.capture()
        lap(f"warm-up: stage-2 shapes ({graphs} graphs)")
        with torch.inference_mode():  # several requests decoding at once
            self.stage1.run([self.plan(replace(request, seed=s)).stage1 for s in (0, 1)])
        lap("warm-up: stage 1, two requests")
        graphs = self.stage1.decoder.capture()  # every row bucket a busier card meets
        lap(f"warm-up: stage-1 shapes ({graphs} graphs)")


def made_sections(composition: Composition) -> list[Section]:
    """The sections the music holds: each stage-1 segment's label and time span, cut at the
    requested duration (a segment the music does not reach is left out)."""
    c, rate = composition, tokens.FRAME_RATE
    end_s = c.request.duration_s
    sections, start = [], 0
    for i, frames in enumerate(c.stage1.made_per_segment):
        if start / rate >= end_s:
            break
        label = c.labels[i % len(c.labels)]
        sections.append(Section(label, start / rate, min((start + frames) / rate, end_s)))
        start += frames
    return sections


def load_decoder(root: Path, device: str) -> tuple[XcodecDecoder, Upsampler]:
    """X-Codec (fp32) and YuE's 44.1 kHz vocoder, loaded onto `device`."""
    xcodec = XcodecModel.from_pretrained(
        root / checkpoints.XCODEC, dtype=torch.float32, **placed_on(device)
    )
    return (
        XcodecDecoder(xcodec.eval()),
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
