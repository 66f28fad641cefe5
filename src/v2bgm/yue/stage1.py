"""YuE stage 1: tags + lyrics sections -> codebook-0 tokens of the vocal and instrumental tracks.

Calls `transformers` `generate` the way YuE's `infer.py` does (sampling, CFG, repetition penalty,
min/max new tokens), segment by segment, with two deliberate differences (see `Stage1Settings`):
every segment asked for is generated (the reference drops the last lyrics section), and only
codebook-0 ids and <EOA> are allowed (the reference's second blocked range is empty).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)

from v2bgm.composer import Progress
from v2bgm.yue import tokens
from v2bgm.yue.tokenizer import YuETokenizer


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


class BlockRange(LogitsProcessor):
    """The reference's `BlockTokenRangeProcessor`: ids [start, end) get -inf."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.start : self.end] = float("-inf")
        return scores


class AllowCodebook0(LogitsProcessor):
    """Masks everything but X-Codec codebook-0 ids and <EOA>: what the reference meant to allow."""

    def __init__(self, vocab_size: int) -> None:
        first, last = tokens.codebook_range(0)
        self.mask = torch.full((vocab_size,), float("-inf"))
        self.mask[first:last] = 0.0
        self.mask[tokens.EOA] = 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.mask.device != scores.device:
            self.mask = self.mask.to(scores.device)
        return scores + self.mask.to(scores.dtype)


class ReportEveryToken(StoppingCriteria):
    """Reports progress after each generated token, never stops generation itself.

    A segment is up to 30 s of music (minutes of a 7B model on a GPU): reporting only between
    segments would leave a caller that cancels (the callback raises) waiting that long.
    """

    def __init__(self, progress: Progress, prompt_len: int, made: int, frames: int) -> None:
        self.progress = progress
        self.prompt_len, self.made, self.frames = prompt_len, made, frames

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> Any:
        new_frames = (input_ids.shape[1] - self.prompt_len) // 2  # two tracks per frame
        self.progress("stage1", min((self.made + new_frames) / self.frames, 1.0))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Stage1:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: YuETokenizer,
        settings: Stage1Settings | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or Stage1Settings()
        self.mask: LogitsProcessor = (
            BlockRange(0, tokens.EOA)
            if self.settings.reference_blocking
            else AllowCodebook0(model.config.vocab_size)
        )

    @torch.inference_mode()
    def generate(
        self,
        tags: str,
        sections: list[str],
        frames: int,
        seed: int,
        progress: Progress | None = None,
    ) -> Stage1Output:
        """Generate at least `frames` frames of both tracks."""
        s = self.settings
        device = self.model.device
        torch.manual_seed(seed)
        header = tokens.header_text(tags, sections)
        header_ids = self.tokenizer.encode(header)
        end_ids = self.tokenizer.encode(tokens.END_OF_SEGMENT)
        segments: list[list[int]] = []  # each segment's prompt (header aside) and tokens
        made = generated = 0
        for index in range(max_segments(frames, s)):
            if made >= frames:
                break
            prompt = segment_prompt(self.tokenizer.encode, tags, sections, index, len(header_ids))
            want = min(s.max_segment_tokens, 2 * (frames - made))
            context = fit_context(
                header_ids, segments, prompt, s.context_window - want - 1, len(end_ids)
            )
            input_ids = torch.tensor([context], dtype=torch.long, device=device)
            reporting = StoppingCriteriaList(
                [] if progress is None else [ReportEveryToken(progress, len(context), made, frames)]
            )
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=want,
                min_new_tokens=min(s.min_segment_tokens, want),
                do_sample=s.do_sample,
                top_p=s.top_p,
                top_k=s.top_k,
                temperature=s.temperature,
                repetition_penalty=s.repetition_penalty,
                eos_token_id=tokens.EOA,
                pad_token_id=tokens.EOA,
                logits_processor=LogitsProcessorList([self.mask]),
                stopping_criteria=reporting,
                guidance_scale=s.guidance_first if index == 0 else s.guidance_later,
            )
            new = output[0, input_ids.shape[1] :].tolist()
            generated += len(new)
            if new[-1] != tokens.EOA:
                new.append(tokens.EOA)
            segments.append(prompt + new)
            made += (len(new) - 1) // 2
            if progress is not None:
                progress("stage1", min(made / frames, 1.0))
        history = torch.tensor([header_ids + [i for seg in segments for i in seg]])
        ids = history[0].cpu().numpy()
        vocal, instrumental = tokens.parse_stage1(ids)
        if len(vocal) < frames:
            raise RuntimeError(f"stage 1 made {len(vocal)} frames, {frames} were needed")
        return Stage1Output(vocal[:frames], instrumental[:frames], generated, ids)


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
