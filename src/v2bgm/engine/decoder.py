"""Many requests decoding side by side with classifier-free guidance, on a static KV cache.

The decoder knows no model's prompt format. A request is a `Sequence`: its owner (a model
package, e.g. `v2bgm.yue.stage1`) says which segment to decode next (`Segment`: the conditional
context, how many tokens at most, the sampling settings) and hears of every token; the decoder
owns the slot table, the caches and the steps.

Each request owns slot `i` and two rows of one paged cache (`v2bgm.engine.paged`): the
conditional sequence (every segment so far) and the unconditional one, which — as
`transformers`' CFG processor feeds it — starts at position 0 from the context's last token and
sees only that segment's new tokens. A request takes the pages its sequence can need when it is
admitted (`Sequence.cache_need`) and gives them back when it leaves, so how many decode at once
follows from the cache's size (`cache_positions`), up to `slots`. A decoding step runs both rows
of every request in one batched forward (one read of the weights), combines them per request
on the device and picks the next tokens (`sampling.next_tokens`).

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
from v2bgm.engine.llama import PagedPart, StaticLlama
from v2bgm.engine.paged import PAGE, pages_for
from v2bgm.engine.sampling import RowSettings, SamplerState, next_tokens

# Positions a row holds beyond its need: the step launched before the host sees a segment's
# end writes one position past it.
STEP_AHEAD = 2


@dataclass(frozen=True)
class Segment:
    """What a request decodes next, as one `generate` call would: `context` is the whole
    conditional input; at most `max_new` tokens follow, the end token included."""

    context: list[int]
    max_new: int
    settings: RowSettings
    noise_step: int  # the noise index of its first token: the request's tokens drawn so far


@dataclass(frozen=True)
class CacheNeed:
    """The most cache positions a request's rows reach: its conditional sequence (every segment
    with its context) and one segment's unconditional sequence."""

    context: int
    segment: int


class Sequence(Protocol):
    """One request's decoding rules, owned by the model package that made it. A callback that
    raises ends this request alone: the decoder passes the error to `fail`."""

    def cache_need(self) -> CacheNeed:
        """An upper bound of the positions its rows hold (asked before it takes a slot)."""

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
        cache_positions: int | None = None,
    ) -> None:
        """`allowed`: an additive mask over the vocabulary (0 or -inf) applied at every step;
        `end_token` ends a segment; `top_k` is fixed for every request (captured in graphs).
        `cache_positions`: what the paged cache holds for every request's two rows together
        (default, and at most: a whole window and a segment for each of the `slots`)."""
        self.model, self.slots = model, slots
        self.end_token, self.top_k, self.allowed = end_token, top_k, allowed
        device = model.device
        self.context_window = context_window
        # the unconditional row holds one segment: its opening token and up to want tokens
        self.segment_window = _round_up(max_segment_tokens + 2, 8)
        full = slots * (pages_for(context_window) + pages_for(self.segment_window))
        pages = full if cache_positions is None else min(full, pages_for(cache_positions))
        self.cache = model.paged_cache(pages + 1, 2 * slots, context_window)  # + the scratch
        self._table_rows = torch.arange(2 * slots, device=device)  # cond rows, then uncond
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

    def pages_needed(self, sequence: Sequence) -> tuple[int, int]:
        """Pages of (its conditional row, its unconditional row)."""
        need = sequence.cache_need()
        cond = min(need.context + STEP_AHEAD, self.cache.max_positions)
        return pages_for(cond), pages_for(min(need.segment + STEP_AHEAD + 1, self.segment_window))

    def can_add(self, sequence: Sequence) -> bool:
        """Whether `add` takes it now: a slot and its pages are free (or it can never fit, and
        `add` fails it at once)."""
        if self.free_slots() == 0:
            return False
        try:
            need = sum(self.pages_needed(sequence))
        except Exception:  # `add` fails it, naming the error
            return True
        return need <= self.cache.free_pages or need > self.cache.usable_pages

    def add(self, sequence: Sequence) -> None:
        """Admit a request (its first segment is prefilled now); raises if no slot or no pages
        are free. One that needs more pages than the cache has fails at once (`fail`)."""
        try:
            cond, uncond = self.pages_needed(sequence)
        except Exception as exc:
            sequence.fail(exc)
            return
        if cond + uncond > self.cache.usable_pages:
            sequence.fail(
                MemoryError(
                    f"the request needs {cond + uncond} cache pages, the cache has "
                    f"{self.cache.usable_pages} (raise the composer's cache size)"
                )
            )
            return
        if cond + uncond > self.cache.free_pages:
            raise MemoryError(f"{cond + uncond} cache pages needed, {self.cache.free_pages} free")
        slot = next(i for i, r in enumerate(self.rows) if r is None)
        self.cache.allocate(slot, cond * PAGE)
        self.cache.allocate(self.slots + slot, uncond * PAGE)
        row = self.rows[slot] = _Row(sequence, slot)
        self._guarded(row, lambda: self._start(row, sequence.first_segment()))

    def capture(self) -> int:
        """Capture the decoding step of every row bucket now (GPU only; the decoder idle): a
        request would otherwise pay a bucket's capture when it first meets it. Returns how
        many graphs exist."""
        if self.active:
            raise RuntimeError("capture while requests decode")
        kv = self.cache.max_positions
        for rows in sorted({bucket_rows(n, self.slots) for n in range(1, self.slots + 1)}):
            self.graphs.capture((rows,), lambda rows=rows: self._decode_step(rows, kv))
        return len(self.graphs)

    def run(self, sequences: list[Sequence]) -> None:
        """Decode `sequences` to the end (admitting them as slots and pages free up)."""
        waiting = list(sequences)
        while waiting or self.active:
            while waiting and self.can_add(waiting[0]):
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
        if self.graphs.enabled:  # the kernel reads each row's own length: a graph per rows
            key: tuple[int, ...] = (rows,)
            kv = self.cache.max_positions
        else:  # the CPU gathers what the longest row holds: the token fed sits one past
            kv = max(len(r.cached) + 2 for r in live)  # what the host has taken
            key = (rows, kv)
        self.graphs.run(key, lambda: self._decode_step(rows, kv))
        self.steps += 1
        host = self._host[self._flip][:rows]
        self._flip ^= 1
        host.copy_(self.chosen[:rows], non_blocking=True)
        done = None
        if self.graphs.enabled:
            done = torch.cuda.Event()
            done.record()
        return _Launched([(row, row.epoch) for row in live], host, done)

    def _decode_step(self, rows: int, kv_len: int):
        last = self.cache.max_positions - 1

        def step() -> None:
            # made inside the step: a tensor made outside it would be freed after the capture
            # while the graph still reads its memory
            table_rows = torch.cat([self._table_rows[:rows], self._table_rows[self.slots :][:rows]])
            parts = [PagedPart(self.cache, table_rows, kv_len)]
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
            self.cond_pos[:rows] = (self.cond_pos[:rows] + 1).clamp_(max=last)
            self.uncond_pos[:rows] = (self.uncond_pos[:rows] + 1).clamp_(max=last)

        return step

    def _state(self) -> list[torch.Tensor]:
        return [self.tokens, self.cond_pos, self.uncond_pos, self.chosen, *self.sampler.tensors()]

    # -- a request's segments -----------------------------------------------------------------
    def _start(self, row: _Row, segment: Segment) -> None:
        """Prefill a segment (reusing the prefix the slot holds) and take its first token."""
        context, slot, device = segment.context, row.slot, self.model.device
        if len(context) + segment.max_new > self.context_window:
            raise ValueError(
                f"a segment of {len(context)} + {segment.max_new} tokens exceeds the context "
                f"window of {self.context_window}"
            )
        held = self.cache.held(slot), self.cache.held(self.slots + slot)
        if len(context) + segment.max_new + 1 > held[0] or segment.max_new + 2 > held[1]:
            raise RuntimeError(  # cache_need was wrong: never write past the row's pages
                f"a segment of {len(context)} + {segment.max_new} tokens outgrows the "
                f"{held[0]} + {held[1]} cache positions its request took"
            )
        row.new, row.want = [], segment.max_new
        row.epoch += 1
        keep = len(row.cached) if context[: len(row.cached)] == row.cached else 0
        fresh = torch.tensor([context[keep:]], device=device)
        positions = torch.arange(keep, len(context), device=device)[None]
        cond_row = self._table_rows[slot : slot + 1]
        uncond_row = self._table_rows[self.slots + slot :][:1]
        part = PagedPart(self.cache, cond_row, len(context))
        cond = self.model.forward(fresh, positions, [part])
        opening = torch.tensor([[context[-1]]], device=device)
        zero = torch.zeros((1, 1), dtype=torch.long, device=device)
        uncond = self.model.forward(opening, zero, [PagedPart(self.cache, uncond_row, 1)])
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
            # later steps' writes of this slot go to the scratch page; a step already launched
            # runs before any later use of the pages (one stream)
            self.cache.release(row.slot)
            self.cache.release(self.slots + row.slot)

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
