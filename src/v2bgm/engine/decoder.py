"""Many requests decoding side by side with classifier-free guidance, on a static KV cache.

The decoder knows no model's prompt format. A request is a `Sequence`: its owner (a model
package, e.g. `v2bgm.yue.stage1`) says which segment to decode next (`Segment`: the conditional
context, how many tokens at most, the sampling settings) and hears of every token; the decoder
owns the slot table, the caches and the steps.

Each request owns slot `i` of two cache pools: the conditional sequence (every segment so far)
and the unconditional one, which — as `transformers`' CFG processor feeds it — starts at
position 0 from the context's last token and sees only that segment's new tokens. A decoding
step runs both rows of every request in one batched forward (one read of the weights), combines
them per request on the device and picks the next tokens (`sampling.next_tokens`).

Requests join and leave between steps (`add`, `step`): one that finishes or fails frees its slot
at once, and one starting a segment is prefilled alone before joining; a new segment prefills
only the tokens its slot does not hold yet. Steps are pipelined: step k+1 is launched before
step k's tokens are read, so the host's bookkeeping overlaps the device's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from v2bgm.engine.graphs import StepGraphs
from v2bgm.engine.llama import Part, StaticLlama
from v2bgm.engine.sampling import RowSettings, SamplerState, next_tokens

KV_BUCKET = 1024  # attention reads caches in multiples of this: few graphs, little waste


@dataclass(frozen=True)
class Segment:
    """What a request decodes next, as one `generate` call would: `context` is the whole
    conditional input; at most `max_new` tokens follow, the end token included."""

    context: list[int]
    max_new: int
    settings: RowSettings
    noise_step: int  # the noise index of its first token: the request's tokens drawn so far


class Sequence(Protocol):
    """One request's decoding rules, owned by the model package that made it. A callback that
    raises ends this request alone: the decoder passes the error to `fail`."""

    def first_segment(self) -> Segment:
        """The request's first segment (called when it takes a slot)."""

    def on_token(self, new: list[int]) -> None:
        """A token was added to the segment's `new` tokens (progress; may raise to cancel)."""

    def segment_done(self, new: list[int]) -> Segment | None:
        """The segment ended with `new` (the end token last, if the model chose it); the next
        segment, or None: the request is done (it keeps its own result)."""

    def fail(self, error: BaseException) -> None:
        """The request ended with `error` (raised by one of its own callbacks)."""


@dataclass
class _Row:
    """The decoder's state of one slot's request."""

    sequence: Sequence
    slot: int
    cached: list[int] = field(default_factory=list)  # tokens whose K/V the cond slot holds
    new: list[int] = field(default_factory=list)  # this segment's tokens so far
    want: int = 0
    epoch: int = 0  # bumped when a segment starts: results of steps launched before are stale


@dataclass
class _Launched:
    live: list[tuple[_Row, int]]  # the rows it decodes, with their epochs
    host: torch.Tensor  # where its tokens land
    done: torch.cuda.Event | None


class CfgDecoder:
    def __init__(
        self,
        model: StaticLlama,
        slots: int,
        context_window: int,
        max_segment_tokens: int,
        allowed: torch.Tensor,
        end_token: int,
        top_k: int,
    ) -> None:
        """`allowed`: an additive mask over the vocabulary (0 or -inf) applied at every step;
        `end_token` ends a segment; `top_k` is fixed for every request (captured in graphs)."""
        self.model, self.slots = model, slots
        self.end_token, self.top_k, self.allowed = end_token, top_k, allowed
        device = model.device
        self.cond = model.pool(slots, context_window)
        # the unconditional row holds one segment: its opening token and up to want tokens
        self.uncond = model.pool(slots, _round_up(max_segment_tokens + 2, 8))
        self.sampler = SamplerState(slots, model.vocab_size, device)
        self.tokens = torch.zeros(slots, dtype=torch.long, device=device)  # fed next step
        self.cond_pos = torch.zeros(slots, dtype=torch.long, device=device)
        self.uncond_pos = torch.zeros(slots, dtype=torch.long, device=device)
        self.chosen = torch.zeros(slots, dtype=torch.long, device=device)
        self.rows: list[_Row | None] = [None] * slots
        self.graphs = StepGraphs(device, self._state)
        self.steps = 0
        pinned = device.type == "cuda"  # two pinned buffers take turns receiving tokens
        self._host = [torch.zeros(slots, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self._flip = 0
        self._pending: _Launched | None = None

    # -- requests -----------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return sum(row is not None for row in self.rows)

    def free_slots(self) -> int:
        return self.slots - self.active

    def add(self, sequence: Sequence) -> None:
        """Admit a request (its first segment is prefilled now); raises if no slot is free."""
        slot = next(i for i, r in enumerate(self.rows) if r is None)
        row = self.rows[slot] = _Row(sequence, slot)
        self._guarded(row, lambda: self._start(row, sequence.first_segment()))

    def run(self, sequences: list[Sequence]) -> None:
        """Decode `sequences` to the end (admitting them as slots free up)."""
        waiting = list(sequences)
        while waiting or self.active:
            while waiting and self.free_slots():
                self.add(waiting.pop(0))
            if self.active:
                self.step()
        self.flush()

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
        for row, epoch in pending.live:
            if self.rows[row.slot] is row and row.epoch == epoch:  # else: restarted or gone
                self._guarded(row, lambda row=row: self._take(row, chosen[row.slot]))

    def _launch(self) -> _Launched:
        rows = 1 + max(i for i, r in enumerate(self.rows) if r is not None)
        rows = bucket_rows(rows, self.slots)
        live = [r for r in self.rows[:rows] if r is not None]
        # the token fed sits one past what the host has taken (the step in flight made it)
        kv_cond = max(len(r.cached) + 2 for r in live)
        kv_uncond = max(len(r.new) + 3 for r in live)
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
        return _Launched([(row, row.epoch) for row in live], host, done)

    def _decode_step(self, rows: int, kv_cond: int, kv_uncond: int):
        parts = [Part(self.cond, 0, rows, kv_cond), Part(self.uncond, 0, rows, kv_uncond)]

        def step() -> None:
            fed = self.tokens[:rows]
            ids = torch.cat([fed, fed])[:, None]
            pos = torch.cat([self.cond_pos[:rows], self.uncond_pos[:rows]])[:, None]
            logits = self.model.forward(ids, pos, parts)
            chosen = next_tokens(
                logits[:rows], logits[rows:], self.sampler, slice(0, rows), self.allowed,
                self.end_token, self.top_k,
            )  # fmt: skip
            self.chosen[:rows] = chosen
            self.tokens[:rows] = chosen
            self.cond_pos[:rows] = (self.cond_pos[:rows] + 1).clamp_(max=self.cond.length - 1)
            self.uncond_pos[:rows] = (self.uncond_pos[:rows] + 1).clamp_(max=self.uncond.length - 1)

        return step

    def _state(self) -> list[torch.Tensor]:
        return [self.tokens, self.cond_pos, self.uncond_pos, self.chosen, *self.sampler.tensors()]

    # -- a request's segments -----------------------------------------------------------------
    def _start(self, row: _Row, segment: Segment) -> None:
        """Prefill a segment (reusing the prefix the slot holds) and take its first token."""
        context, slot, device = segment.context, row.slot, self.model.device
        if len(context) + segment.max_new > self.cond.length:
            raise ValueError(
                f"a segment of {len(context)} + {segment.max_new} tokens exceeds the context "
                f"window of {self.cond.length}"
            )
        row.new, row.want = [], segment.max_new
        row.epoch += 1
        keep = len(row.cached) if context[: len(row.cached)] == row.cached else 0
        fresh = torch.tensor([context[keep:]], device=device)
        positions = torch.arange(keep, len(context), device=device)[None]
        cond = self.model.forward(fresh, positions, [Part(self.cond, slot, 1, len(context))])
        opening = torch.tensor([[context[-1]]], device=device)
        zero = torch.zeros((1, 1), dtype=torch.long, device=device)
        uncond = self.model.forward(opening, zero, [Part(self.uncond, slot, 1, 1)])
        row.cached = list(context)
        self.sampler.reset(slot, segment.settings, torch.tensor(context, device=device))
        self.sampler.step[slot] = segment.noise_step
        rows = slice(slot, slot + 1)
        chosen = next_tokens(
            cond, uncond, self.sampler, rows, self.allowed, self.end_token, self.top_k
        )  # fmt: skip
        self.tokens[slot] = chosen[0]
        self.cond_pos[slot] = len(context)
        self.uncond_pos[slot] = 1
        self._take(row, int(chosen[0]))

    def _take(self, row: _Row, token: int) -> None:
        """Record a request's new token; close its segment at the end token or its length."""
        row.new.append(token)
        row.sequence.on_token(row.new)
        if token != self.end_token and len(row.new) < row.want:
            row.cached.append(token)  # fed at the next step
            return
        following = row.sequence.segment_done(row.new)
        if following is None:
            self._release(row)
        else:
            self._start(row, following)

    def _release(self, row: _Row) -> None:
        if self.rows[row.slot] is row:
            self.rows[row.slot] = None
            self.cond_pos[row.slot] = 0
            self.uncond_pos[row.slot] = 0

    def _guarded(self, row: _Row, action) -> None:
        """Run `action`; an error (a cancel included) ends this request alone."""
        try:
            action()
        except Exception as exc:
            self._release(row)
            row.sequence.fail(exc)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def bucket_rows(rows: int, limit: int) -> int:
    """Rows of a step: the next power of two (a graph each), at most the slots there are."""
    return min(1 << (rows - 1).bit_length(), limit)
