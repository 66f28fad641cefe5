"""YuE stage 1 on the static engine: many requests decode side by side, CFG in one step.

Each request owns slot `i` of two cache pools: the conditional sequence (header, lyrics, every
segment so far) and the unconditional one, which — as `transformers`' CFG processor feeds it —
starts at position 0 from the prompt's last token and sees only that segment's new tokens. A
decoding step runs both rows of every request in one batched forward (one read of the weights),
combines them per request on the device and picks the next tokens (`sampling.next_tokens`).

Requests join and leave between steps (`add`, `step`): a request that finishes or is cancelled
frees its slot at once, and one starting a segment is prefilled alone before joining. Segments
follow `v2bgm.yue.stage1.Stage1.generate` step by step (prompts, `fit_context`, lengths, <EOA>),
so greedy decoding gives its tokens exactly; a new segment only prefills the tokens its slot
does not hold yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from v2bgm.composer import Cancelled, Progress
from v2bgm.engine.graphs import StepGraphs
from v2bgm.engine.llama import Part, StaticLlama
from v2bgm.engine.sampling import RowSettings, SamplerState, next_tokens
from v2bgm.yue import tokens
from v2bgm.yue.stage1 import (
    Stage1Output,
    Stage1Settings,
    fit_context,
    max_segments,
    segment_prompt,
)
from v2bgm.yue.tokenizer import YuETokenizer

KV_BUCKET = 1024  # attention reads caches in multiples of this: few graphs, little waste


@dataclass
class Stage1Job:
    tags: str
    sections: list[str]
    frames: int
    seed: int
    progress: Progress | None = None
    # filled in by the engine
    header: list[int] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)
    index: int = 0  # segment being generated
    made: int = 0  # frames made by finished segments
    generated: int = 0  # tokens generated, <EOA> included
    cached: list[int] = field(default_factory=list)  # tokens whose K/V the cond slot holds
    prompt: list[int] = field(default_factory=list)  # this segment's prompt
    new: list[int] = field(default_factory=list)  # this segment's tokens so far
    want: int = 0
    slot: int = -1
    epoch: int = 0  # bumped when a segment starts: results of steps launched before are stale
    result: Stage1Output | None = None
    error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None


class Stage1Engine:
    def __init__(
        self,
        model: StaticLlama,
        tokenizer: YuETokenizer,
        settings: Stage1Settings | None = None,
        slots: int = 16,
    ) -> None:
        s = self.settings = settings or Stage1Settings()
        self.model, self.tokenizer, self.slots = model, tokenizer, slots
        device = model.device
        self.cond = model.pool(slots, s.context_window)
        # the unconditional row holds one segment: its opening token and up to want tokens
        self.uncond = model.pool(slots, _round_up(s.max_segment_tokens + 2, 8))
        self.sampler = SamplerState(slots, model.vocab_size, device)
        self.tokens = torch.zeros(slots, dtype=torch.long, device=device)  # fed next step
        self.cond_pos = torch.zeros(slots, dtype=torch.long, device=device)
        self.uncond_pos = torch.zeros(slots, dtype=torch.long, device=device)
        self.chosen = torch.zeros(slots, dtype=torch.long, device=device)
        self.allowed = _allowed_mask(model.vocab_size, s.reference_blocking, device)
        self.end_ids = tokenizer.encode(tokens.END_OF_SEGMENT)
        self.jobs: list[Stage1Job | None] = [None] * slots
        self.graphs = StepGraphs(device, self._state)
        self.steps = 0
        # Steps are pipelined: step k+1 is launched before step k's tokens are read, so the host's
        # bookkeeping overlaps the GPU's work. Two pinned buffers take turns receiving tokens.
        pinned = device.type == "cuda"
        self._host = [torch.zeros(slots, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self._flip = 0
        self._pending: _Launched | None = None

    # -- requests -----------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return sum(job is not None for job in self.jobs)

    def free_slots(self) -> int:
        return self.slots - self.active

    def add(self, job: Stage1Job) -> None:
        """Admit a request (its first segment is prefilled now); raises if no slot is free."""
        slot = next(i for i, j in enumerate(self.jobs) if j is None)
        job.slot = slot
        self.jobs[slot] = job
        job.header = self.tokenizer.encode(tokens.header_text(job.tags, job.sections))
        self._guarded(job, self._start_segment)

    def run(self, jobs: list[Stage1Job]) -> list[Stage1Job]:
        """Decode `jobs` to the end (admitting them as slots free up)."""
        waiting = list(jobs)
        while waiting or self.active:
            while waiting and self.free_slots():
                self.add(waiting.pop(0))
            if self.active:
                self.step()
        self.flush()
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
        """`Stage1.generate`'s interface, for one request."""
        (job,) = self.run([Stage1Job(tags, sections, frames, seed, progress)])
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    # -- one decoding step for every request in flight ----------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        """Launch a step for every request in flight, then take the previous step's tokens."""
        launched = self._launch()
        self.flush()
        self._pending = launched

    def flush(self) -> None:
        """Take the tokens of the step in flight, if any."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.done is not None:
            pending.done.synchronize()
        chosen = pending.host.tolist()
        for job, epoch in pending.live:
            if self.jobs[job.slot] is job and job.epoch == epoch:  # else: restarted or gone
                self._guarded(job, self._take, chosen[job.slot])

    def _launch(self) -> _Launched:
        rows = 1 + max(i for i, j in enumerate(self.jobs) if j is not None)
        rows = _bucket_rows(rows, self.slots)
        live = [j for j in self.jobs[:rows] if j is not None]
        # the token fed sits one past what the host has taken (the step in flight made it)
        kv_cond = max(len(j.cached) + 2 for j in live)
        kv_uncond = max(len(j.new) + 3 for j in live)
        if self.graphs.enabled:  # shapes from a few buckets: a graph each
            kv_cond = _round_up(kv_cond, KV_BUCKET)
            kv_uncond = _round_up(kv_uncond, KV_BUCKET)
        kv_cond, kv_uncond = min(kv_cond, self.cond.length), min(kv_uncond, self.uncond.length)
        key = (rows, kv_cond, kv_uncond)
        self.graphs.run(key, lambda: self._decode_step(*key))
        self.steps += 1
        host = self._host[self._flip][:rows]
        self._flip ^= 1
        host.copy_(self.chosen[:rows], non_blocking=True)
        done = None
        if self.graphs.enabled:
            done = torch.cuda.Event()
            done.record()
        return _Launched([(job, job.epoch) for job in live], host, done)

    def _decode_step(self, rows: int, kv_cond: int, kv_uncond: int):
        parts = [Part(self.cond, 0, rows, kv_cond), Part(self.uncond, 0, rows, kv_uncond)]
        top_k = self.settings.top_k

        def step() -> None:
            fed = self.tokens[:rows]
            ids = torch.cat([fed, fed])[:, None]
            pos = torch.cat([self.cond_pos[:rows], self.uncond_pos[:rows]])[:, None]
            logits = self.model.forward(ids, pos, parts)
            chosen = next_tokens(
                logits[:rows], logits[rows:], self.sampler, slice(0, rows), self.allowed,
                tokens.EOA, top_k,
            )  # fmt: skip
            self.chosen[:rows] = chosen
            self.tokens[:rows] = chosen
            self.cond_pos[:rows] = (self.cond_pos[:rows] + 1).clamp_(max=self.cond.length - 1)
            self.uncond_pos[:rows] = (self.uncond_pos[:rows] + 1).clamp_(max=self.uncond.length - 1)

        return step

    def _state(self) -> list[torch.Tensor]:
        return [self.tokens, self.cond_pos, self.uncond_pos, self.chosen, *self.sampler.tensors()]

    # -- a request's segments -----------------------------------------------------------------
    def _start_segment(self, job: Stage1Job) -> None:
        s = self.settings
        encode = self.tokenizer.encode
        prompt = segment_prompt(encode, job.tags, job.sections, job.index, len(job.header))
        job.prompt, job.new = prompt, []
        job.epoch += 1
        job.want = min(s.max_segment_tokens, 2 * (job.frames - job.made))
        context = fit_context(
            job.header, job.segments, prompt, s.context_window - job.want - 1, len(self.end_ids)
        )
        device, slot = self.model.device, job.slot
        keep = len(job.cached) if context[: len(job.cached)] == job.cached else 0
        fresh = torch.tensor([context[keep:]], device=device)
        positions = torch.arange(keep, len(context), device=device)[None]
        cond = self.model.forward(fresh, positions, [Part(self.cond, slot, 1, len(context))])
        opening = torch.tensor([[context[-1]]], device=device)
        zero = torch.zeros((1, 1), dtype=torch.long, device=device)
        uncond = self.model.forward(opening, zero, [Part(self.uncond, slot, 1, 1)])
        job.cached = context
        self.sampler.reset(slot, self._row_settings(job), torch.tensor(context, device=device))
        self.sampler.step[slot] = job.generated  # noise index: the request's tokens so far
        rows = slice(slot, slot + 1)
        chosen = next_tokens(
            cond, uncond, self.sampler, rows, self.allowed, tokens.EOA, s.top_k
        )  # fmt: skip
        self.tokens[slot] = chosen[0]
        self.cond_pos[slot] = len(context)
        self.uncond_pos[slot] = 1
        self._take(job, int(chosen[0]))

    def _row_settings(self, job: Stage1Job) -> RowSettings:
        s = self.settings
        return RowSettings(
            guidance=s.guidance_first if job.index == 0 else s.guidance_later,
            repetition_penalty=s.repetition_penalty,
            temperature=s.temperature,
            top_p=s.top_p,
            greedy=not s.do_sample,
            min_new_tokens=min(s.min_segment_tokens, job.want),
            seed=job.seed,
        )

    def _take(self, job: Stage1Job, token: int) -> None:
        """Record a request's new token; close its segment at <EOA> or its length."""
        job.new.append(token)
        if job.progress is not None:
            job.progress("stage1", min((job.made + len(job.new) // 2) / job.frames, 1.0))
        if token != tokens.EOA and len(job.new) < job.want:
            job.cached.append(token)  # fed at the next step
            return
        new = job.new
        job.generated += len(new)
        if new[-1] != tokens.EOA:
            new = [*new, tokens.EOA]
        job.segments.append(job.prompt + new)
        job.made += (len(new) - 1) // 2
        job.index += 1
        if job.made >= job.frames or job.index >= max_segments(job.frames, self.settings):
            self._finish(job)
        else:
            self._start_segment(job)

    def _finish(self, job: Stage1Job) -> None:
        ids = np.array(job.header + [i for seg in job.segments for i in seg], dtype=np.int64)
        vocal, instrumental = tokens.parse_stage1(ids)
        self._release(job)
        if len(vocal) < job.frames:
            raise RuntimeError(f"stage 1 made {len(vocal)} frames, {job.frames} were needed")
        job.result = Stage1Output(
            vocal[: job.frames], instrumental[: job.frames], job.generated, ids
        )

    def _release(self, job: Stage1Job) -> None:
        if 0 <= job.slot < self.slots and self.jobs[job.slot] is job:
            self.jobs[job.slot] = None
            self.cond_pos[job.slot] = 0
            self.uncond_pos[job.slot] = 0

    def _guarded(self, job: Stage1Job, action, *args) -> None:
        """Run `action`; an error (a cancel included) ends this request alone."""
        try:
            action(job, *args)
        except Cancelled as exc:
            job.error = exc.with_traceback(None)
            self._release(job)
        except Exception as exc:
            job.error = exc
            self._release(job)


@dataclass
class _Launched:
    live: list[tuple[Stage1Job, int]]  # the requests it decodes, with their epochs
    host: torch.Tensor  # where its tokens land
    done: torch.cuda.Event | None


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _bucket_rows(rows: int, limit: int) -> int:
    """Rows of a step: the next power of two (a graph each), at most the slots there are."""
    return min(1 << (rows - 1).bit_length(), limit)


def _allowed_mask(vocab: int, reference_blocking: bool, device: torch.device) -> torch.Tensor:
    """Additive mask: the reference's blocked range [0, <EOA>), or only codebook 0 and <EOA>."""
    mask = torch.full((vocab,), float("-inf"), device=device)
    if reference_blocking:
        mask[tokens.EOA :] = 0.0
    else:
        first, last = tokens.codebook_range(0)
        mask[first:last] = 0.0
        mask[tokens.EOA] = 0.0
    return mask
