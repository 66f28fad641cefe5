"""YuE through `transformers` as its authors' `infer.py` drives it: the parity oracle.

Never served. The engine's stages (`v2bgm.yue.stage1`, `v2bgm.yue.stage2`) must give these
stages' greedy tokens exactly (tests/engine, tests/parity), and the GPU benchmark times stage 1
here as the stand-in for the reference when its own code cannot run (`v2bgm.bench.engine`).

`GenerateStage1` calls `generate` the way `infer.py` does (sampling, CFG, repetition penalty,
min/max new tokens), segment by segment, with the two deliberate differences that
`Stage1Settings` names (every segment asked for is generated; optionally only codebook-0 ids and
<EOA> allowed). `GenerateStage2` feeds codebook 0 frame by frame and picks 7 tokens among
codebooks 1..7, as `stage2_generate` does, but carries one KV cache through a chunk and batches
a track's full chunks (the exllamav2 port's approach): the same greedy tokens with far fewer
operations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import (
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)

from v2bgm.composer import Progress
from v2bgm.yue import tokens
from v2bgm.yue.stage1 import (
    Stage1Output,
    Stage1Settings,
    fit_context,
    max_segments,
    segment_prompt,
)
from v2bgm.yue.tokenizer import YuETokenizer


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


class GenerateStage1:
    """Stage 1 through `generate`, segment by segment, as YuE's `infer.py` calls it."""

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


TOKENS_PER_FRAME = tokens.STAGE2_CODEBOOKS - 1  # codebooks 1..7 are generated


class GenerateStage2:
    """Stage 2 through the model's forward with a `DynamicCache`, chunk rows batched."""

    def __init__(self, model: PreTrainedModel, max_batch: int = 16) -> None:
        self.model = model
        self.max_batch = max_batch
        # The reference blocks [0, 46358) and [53526, 83738): codebooks 1..7 stay allowed at each
        # of the 7 positions; a pick from the wrong codebook is repaired afterwards.
        self.allowed_first = tokens.codebook_range(1)[0]
        self.allowed_last = tokens.codebook_range(tokens.STAGE2_CODEBOOKS - 1)[1]

    def fill(self, codes0: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Codebook-0 codes [T] -> codes [8, T] (out-of-range picks repaired)."""
        chunk = tokens.STAGE2_CHUNK_FRAMES
        n_full = len(codes0) // chunk
        ids0 = tokens.codes_to_ids(np.asarray(codes0)[None])[0]
        pieces: list[np.ndarray] = []
        full = ids0[: n_full * chunk].reshape(n_full, chunk)
        for start in range(0, n_full, self.max_batch):
            rows = full[start : start + self.max_batch]
            report = _frame_reporter(progress, start * chunk, len(rows), len(codes0))
            pieces.extend(self._teacher_force(rows, report))
            if progress is not None:
                progress("stage2", min(start + self.max_batch, n_full) * chunk / len(codes0))
        if len(ids0) > n_full * chunk:  # the leftover frames run as one shorter chunk
            report = _frame_reporter(progress, n_full * chunk, 1, len(codes0))
            pieces.extend(self._teacher_force(ids0[None, n_full * chunk :], report))
        if progress is not None:
            progress("stage2", 1.0)
        ids = np.concatenate(pieces, axis=1)  # [8, T]
        return tokens.repair_codes(tokens.ids_to_codes(ids))

    @torch.inference_mode()
    def _teacher_force(
        self, cb0_ids: np.ndarray, on_frame: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """cb0 ids [B, F] -> one [8, F] id array per row; `on_frame(frames_done)` after each."""
        device = self.model.device
        batch, n_frames = cb0_ids.shape
        prompt = torch.as_tensor(tokens.stage2_prompt(cb0_ids), device=device)
        cb0 = torch.as_tensor(cb0_ids, device=device)
        cache = DynamicCache()
        self.model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        out = torch.empty(
            (batch, n_frames, tokens.STAGE2_CODEBOOKS), dtype=torch.long, device=device
        )
        out[:, :, 0] = cb0
        feed = cb0[:, :1]
        for frame in range(n_frames):
            for k in range(1, tokens.STAGE2_CODEBOOKS):
                logits = self.model(
                    input_ids=feed, past_key_values=cache, use_cache=True, logits_to_keep=1
                ).logits[:, -1, self.allowed_first : self.allowed_last]
                picked = logits.argmax(dim=-1) + self.allowed_first
                out[:, frame, k] = picked
                feed = picked[:, None]
            if frame + 1 < n_frames:  # the last pick and the next frame's codebook 0, in one step
                feed = torch.cat([feed, cb0[:, frame + 1 : frame + 2]], dim=1)
            if on_frame is not None:
                on_frame(frame + 1)
        return [row.T for row in out.cpu().numpy()]


def _frame_reporter(
    progress: Progress | None, done_before: int, rows: int, total: int
) -> Callable[[int], None] | None:
    """Per-frame progress inside one teacher-forcing batch (`rows` chunks side by side), so a
    caller that cancels waits for one frame, not for a whole batch of chunks."""
    if progress is None:
        return None
    return lambda frames: progress("stage2", min((done_before + rows * frames) / total, 1.0))
