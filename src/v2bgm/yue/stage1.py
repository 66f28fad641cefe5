"""YuE stage 1: tags + lyrics sections -> codebook-0 tokens of the vocal and instrumental tracks.

YuE's segment policy lives here: the header and each segment's prompt (`segment_prompt`), the
context kept when the song outgrows the window (`fit_context`), each segment's length and
guidance, and the parsing of the finished sequence. The engine's CFG decoder
(`v2bgm.engine.decoder`) runs many requests' segments side by side; a `Stage1Job` is one
request's rules. The segments follow `infer.py` step by step, so greedy decoding gives the
reference path's tokens exactly (`v2bgm.yue.reference.GenerateStage1`), with two deliberate
differences (see `Stage1Settings`): every segment asked for is generated (the reference drops the
last lyrics section), and only codebook-0 ids and <EOA> are allowed (the reference's second
blocked range is empty).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from v2bgm.composer import Cancelled, Progress
from v2bgm.engine.decoder import CacheNeed, CfgDecoder, Segment
from v2bgm.engine.llama import StaticLlama
from v2bgm.engine.sampling import RowSettings
from v2bgm.yue import tokens
from v2bgm.yue.tokenizer import YuETokenizer

STAGE = "stage1"


@dataclass(frozen=True)
class Stage1Settings:
    top_p: float = 0.93
    temperature: float = 1.0
    top_k: int = 50  # not passed by the reference, so transformers 4.x's default of 50 applied
    repetition_penalty: float = 1.1
    guidance_first: float = 1.5  # CFG scale of the first segment
    guidance_later: float = 1.2
    max_segment_tokens: int = 3000  # the reference's max_new_tokens: ~30 s a segment
    min_segment_tokens: int = 100
    context_window: int = 16384  # max_position_embeddings of the stage-1 model
    do_sample: bool = True  # False: greedy (parity tests)
    # True: block only ids [0, 32002) as the reference really does (parity tests); False: allow
    # only codebook-0 ids and <EOA>, what it means to do.
    reference_blocking: bool = False


@dataclass(frozen=True)
class Stage1Output:
    vocal: np.ndarray  # codebook-0 codes [frames]
    instrumental: np.ndarray
    tokens: int  # tokens generated, <EOA> included
    ids: np.ndarray  # the whole sequence: prompts and generated tokens of every segment


@dataclass
class Stage1Job:
    """One request's stage 1 on the decoder (a `v2bgm.engine.decoder.Sequence`): which segment
    comes next, and the result or the error once it is done."""

    tags: str
    sections: list[str]
    frames: int
    seed: int
    settings: Stage1Settings
    tokenizer: YuETokenizer
    progress: Progress | None = None
    # Frames of each segment, when a plan fixes them (each segment exactly that long, section
    # after section, `frames` in all); None: YuE's own lengths (a segment ends at <EOA>).
    budgets: list[int] | None = None
    header: list[int] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)  # each one's prompt and tokens
    index: int = 0  # segment being generated
    made: int = 0  # frames made by finished segments
    made_per_segment: list[int] = field(default_factory=list)
    generated: int = 0  # tokens generated, <EOA> included
    prompt: list[int] = field(default_factory=list)  # this segment's prompt
    current: list[int] = field(default_factory=list)  # this segment's tokens so far
    result: Stage1Output | None = None
    error: BaseException | None = None
    need: CacheNeed | None = None  # cache_need's answer, kept: asked again while it waits

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None

    # -- the decoder's callbacks --------------------------------------------------------------
    def cache_need(self) -> CacheNeed:
        """Positions its sequences can reach: the header, every segment's prompt and tokens
        (at most `_max_segments()` segments, 2 tokens a frame, each closed by one <EOA>, and,
        where YuE ends a segment at <EOA>, up to 2 tokens of a frame cut short), within the
        window; a segment's tokens at most, for its unconditional row."""
        if self.need is None:
            self.need = self._cache_need()
        return self.need

    def _cache_need(self) -> CacheNeed:
        s, encode = self.settings, self.tokenizer.encode
        header = len(encode(tokens.header_text(self.tags, self.sections)))
        count = self._max_segments()
        total = header + 2 * self.frames + 3 * count
        for index in range(count):
            if total >= s.context_window:
                break
            total += len(segment_prompt(encode, self.tags, self.sections, index, header))
        longest = 2 * max(self.budgets) if self.budgets else s.max_segment_tokens
        return CacheNeed(min(total, s.context_window), min(longest, s.max_segment_tokens))

    def first_segment(self) -> Segment:
        self.header = self.tokenizer.encode(tokens.header_text(self.tags, self.sections))
        return self._segment()

    def on_token(self, new: list[int]) -> None:
        self.current = new
        if self.progress is not None:
            self.progress(STAGE, min((self.made + len(new) // 2) / self.frames, 1.0))

    def segment_done(self, new: list[int]) -> Segment | None:
        self.generated += len(new)
        self.current = []
        if new[-1] != tokens.EOA:
            new = [*new, tokens.EOA]
        self.segments.append(self.prompt + new)
        self.made += (len(new) - 1) // 2
        self.made_per_segment.append((len(new) - 1) // 2)
        self.index += 1
        planned = self.budgets is not None and self.index >= len(self.budgets)
        if self.made >= self.frames or planned or self.index >= self._max_segments():
            self._finish()
            return None
        return self._segment()

    # -- what is final before the end (stage 2 starts on it) -----------------------------------
    def frames_ready(self) -> int:
        """Frames of both tracks' codebook 0 that no later token changes (a frame is a vocal and
        an instrumental token; at most `frames`)."""
        if self.result is not None:
            return self.frames
        return min(self.made + len(self.current) // 2, self.frames)

    def codes0(self, end: int) -> tuple[np.ndarray, np.ndarray]:
        """(vocal, instrumental) codebook-0 codes of frames [0, end), end <= frames_ready():
        the same codes the result will hold there."""
        if self.result is not None:
            return self.result.vocal[:end], self.result.instrumental[:end]
        ids = [*self.header, *(i for seg in self.segments for i in seg), *self.prompt]
        vocal, instrumental = tokens.parse_stage1([*ids, *self.current, tokens.EOA])
        if len(vocal) < end:
            raise RuntimeError(f"stage 1 holds {len(vocal)} final frames, {end} were asked")
        return vocal[:end], instrumental[:end]

    def fail(self, error: BaseException) -> None:
        # a cancel's traceback holds the decoder's frames (and its caches): drop it
        self.error = error.with_traceback(None) if isinstance(error, Cancelled) else error

    # -- YuE's rules --------------------------------------------------------------------------
    def _segment(self) -> Segment:
        s = self.settings
        encode = self.tokenizer.encode
        self.prompt = segment_prompt(encode, self.tags, self.sections, self.index, len(self.header))
        want = min(s.max_segment_tokens, 2 * (self.frames - self.made))
        least = min(s.min_segment_tokens, want)
        if self.budgets is not None:  # exactly the section's frames: <EOA> waits for them
            want = least = 2 * self.budgets[self.index]
        end_len = len(encode(tokens.END_OF_SEGMENT))
        limit = s.context_window - want - 1
        context = fit_context(self.header, self.segments, self.prompt, limit, end_len)
        settings = RowSettings(
            guidance=s.guidance_first if self.index == 0 else s.guidance_later,
            repetition_penalty=s.repetition_penalty,
            temperature=s.temperature,
            top_p=s.top_p,
            greedy=not s.do_sample,
            min_new_tokens=least,
            seed=self.seed,
        )
        return Segment(context, want, settings, noise_step=self.generated)

    def _max_segments(self) -> int:
        if self.budgets is not None:
            return len(self.budgets)
        return max_segments(self.frames, self.settings)

    def _finish(self) -> None:
        ids = np.array(self.header + [i for seg in self.segments for i in seg], dtype=np.int64)
        vocal, instrumental = tokens.parse_stage1(ids)
        if len(vocal) < self.frames:
            raise RuntimeError(f"stage 1 made {len(vocal)} frames, {self.frames} were needed")
        f = self.frames
        self.result = Stage1Output(vocal[:f], instrumental[:f], self.generated, ids)


class Stage1:
    """YuE stage 1 served on the engine: `slots` requests decode side by side."""

    def __init__(
        self,
        model: StaticLlama,
        tokenizer: YuETokenizer,
        settings: Stage1Settings | None = None,
        slots: int = 16,
        cache_positions: int | None = None,
    ) -> None:
        """`slots`: requests decoding at once, at most; `cache_positions`: the paged cache's
        size (`v2bgm.engine.decoder.CfgDecoder`; default: a whole window for every slot)."""
        s = self.settings = settings or Stage1Settings()
        self.tokenizer = tokenizer
        allowed = allowed_mask(model.vocab_size, s.reference_blocking, model.device)
        self.decoder = CfgDecoder(
            model, slots, s.context_window, s.max_segment_tokens, allowed, tokens.EOA, s.top_k,
            cache_positions,
        )  # fmt: skip

    def job(
        self,
        tags: str,
        sections: list[str],
        frames: int,
        seed: int,
        progress: Progress | None = None,
        budgets: list[int] | None = None,
    ) -> Stage1Job:
        """`budgets`: frames of each segment (one per section, in order), or None."""
        if budgets is not None:
            if sum(budgets) != frames or len(budgets) != len(sections):
                raise ValueError(f"budgets {budgets} do not split {frames} frames over sections")
            if max(budgets) * 2 > self.settings.max_segment_tokens:
                raise ValueError(f"a segment of {max(budgets)} frames exceeds YuE's cap")
        return Stage1Job(
            tags, sections, frames, seed, self.settings, self.tokenizer, progress, budgets
        )

    def run(self, jobs: list[Stage1Job]) -> list[Stage1Job]:
        """Decode `jobs` to the end, side by side as slots allow."""
        self.decoder.run(list(jobs))
        return jobs

    @torch.inference_mode()
    def generate(
        self,
        tags: str,
        sections: list[str],
        frames: int,
        seed: int,
        progress: Progress | None = None,
    ) -> Stage1Output:
        """At least `frames` frames of both tracks, for one request."""
        (job,) = self.run([self.job(tags, sections, frames, seed, progress)])
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result


def allowed_mask(vocab: int, reference_blocking: bool, device: torch.device) -> torch.Tensor:
    """Additive mask: the reference's blocked range [0, <EOA>), or only codebook 0 and <EOA>."""
    mask = torch.full((vocab,), float("-inf"), device=device)
    if reference_blocking:
        mask[tokens.EOA :] = 0.0
    else:
        first, last = tokens.codebook_range(0)
        mask[first:last] = 0.0
        mask[tokens.EOA] = 0.0
    return mask


def max_segments(frames: int, settings: Stage1Settings) -> int:
    """Each segment yields at least min_segment_tokens / 2 frames, which bounds the segments."""
    return math.ceil(frames * 2 / settings.min_segment_tokens) + 1


def segment_prompt(
    encode: Callable[[str], list[int]], tags: str, sections: list[str], index: int, header_len: int
) -> list[int]:
    """The tokens that open segment `index`, the header aside (it is kept apart for
    `fit_context`; `header_len` is its length in tokens)."""
    section = sections[index % len(sections)]
    section = section.replace(tokens.START_OF_SEGMENT, "").replace(tokens.END_OF_SEGMENT, "")
    header = tokens.header_text(tags, sections) if index == 0 else None
    prompt = tokens.stage1_segment_prompt(encode, section, header)
    return prompt[header_len:] if index == 0 else prompt


def fit_context(
    header: list[int], segments: list[list[int]], prompt: list[int], limit: int, end_len: int
) -> list[int]:
    """The input of the next segment: everything so far, or, past `limit` tokens, the header and
    the most recent whole segments that fit.

    The reference keeps the last `limit` tokens, so past ~130 s of music the header (the tags)
    falls out and a segment is cut mid-way; here the model keeps seeing the tags and whole
    segments. A kept segment after the first opens with `[end_of_segment]`, which is dropped
    (`end_len` tokens) when it comes right after the header, as a first segment would.
    """
    full = header + [i for seg in segments for i in seg] + prompt
    if len(full) <= limit:
        return full
    budget = limit - len(header) - len(prompt)
    first_kept, tail = len(segments), 0  # tail: tokens of segments[first_kept:]
    for j in range(len(segments) - 1, -1, -1):
        lead = len(segments[j]) - (end_len if j > 0 else 0)
        if lead + tail > budget:
            break
        first_kept, tail = j, tail + len(segments[j])
    kept = [i for seg in segments[first_kept:] for i in seg]
    if 0 < first_kept < len(segments):
        kept = kept[end_len:]
    return header + kept + prompt
