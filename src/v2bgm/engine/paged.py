"""A KV cache in pages: every sequence holds the positions it needs, from one pool.

A slot of a `KVPool` preallocates a whole context window (stage 1: 16,384 positions, 1 GB)
whatever the request; 30 s of music needs ~3,900. Here the pool is pages of `PAGE` positions,
and a row of the page table lists the pages of one sequence in order: position p of row r lives
at page table[r, p // PAGE], offset p % PAGE. A sequence takes the pages its request can need
when it is admitted (`allocate`) and gives them back when it leaves (`release`), so the
requests in flight are bounded by the memory the pool was given, not by a fixed count of
windows. Pages hold no order of their own: any free page serves, there is no fragmentation.

Page 0 is never handed out: every unused table entry points at it, so a row with no sequence
(a decoding step's rows are a power of two, some idle) or a step past a sequence's end writes
its keys and values there, never into another sequence's pages.

Decoding steps read the pages in place (`v2bgm.engine.paged_attention`, on a GPU); elsewhere
(the CPU, prefills) a row's keys are gathered into a contiguous copy first (`gather`).
"""

from __future__ import annotations

import torch

PAGE = 128  # positions a page holds (a multiple of the attention kernel's tile)
SCRATCH = 0  # the page idle rows write to


def pages_for(positions: int) -> int:
    return -(-positions // PAGE)


class PagedCache:
    """Keys and values of up to `rows` sequences of at most `max_positions` each, in `pages`
    pages (the scratch page included) for every layer: [layers, 2, pages, kv_heads, PAGE, dim]."""

    def __init__(
        self,
        layers: int,
        pages: int,
        rows: int,
        kv_heads: int,
        head_dim: int,
        max_positions: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        if pages < 2:
            raise ValueError(f"a paged cache needs at least 2 pages (one is scratch), got {pages}")
        self.kv = torch.zeros(
            (layers, 2, pages, kv_heads, PAGE, head_dim), dtype=dtype, device=device
        )
        self.pages, self.rows, self.kv_heads = pages, rows, kv_heads
        self.width = pages_for(max_positions)  # table entries per row
        self.max_positions = self.width * PAGE
        self.table = torch.full((rows, self.width), SCRATCH, dtype=torch.int32, device=device)
        self._free = list(range(pages - 1, SCRATCH, -1))  # popped from the end: low pages first
        self._held: dict[int, list[int]] = {}

    # -- pages --------------------------------------------------------------------------------
    @property
    def page_bytes(self) -> int:
        return self.kv[:, :, 0].numel() * self.kv.element_size()

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    @property
    def usable_pages(self) -> int:
        return self.pages - 1

    @property
    def free_pages(self) -> int:
        return len(self._free)

    @property
    def used_pages(self) -> int:
        return self.usable_pages - self.free_pages

    def allocate(self, row: int, positions: int) -> None:
        """Give `row` pages for positions [0, positions) (its earlier pages go back first)."""
        self.release(row)
        need = pages_for(positions)
        if need > self.width:
            raise ValueError(f"{positions} positions exceed a row's {self.max_positions}")
        if need > len(self._free):
            raise MemoryError(f"{need} pages asked, {len(self._free)} free")
        held = self._held[row] = [self._free.pop() for _ in range(need)]
        entries = torch.full((self.width,), SCRATCH, dtype=torch.int32)
        entries[:need] = torch.tensor(held, dtype=torch.int32)
        self.table[row].copy_(entries.to(self.table.device), non_blocking=True)

    def release(self, row: int) -> None:
        """Return `row`'s pages; its table entries point at the scratch page again."""
        held = self._held.pop(row, None)
        if held is None:
            return
        self._free.extend(reversed(held))
        self.table[row].fill_(SCRATCH)

    def held(self, row: int) -> int:
        """Positions `row` holds."""
        return len(self._held.get(row, ())) * PAGE

    # -- addressing -----------------------------------------------------------------------------
    def write_index(self, pages: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rows of a layer's cache seen as [2 * pages * kv_heads * PAGE, D] that keys/values
        [R, 2, kv_heads, T, D] at `positions` [R, T] go to; `pages`: the rows' table rows."""
        device = positions.device
        page = pages.long().gather(1, positions // PAGE)  # [R, T]
        which = torch.arange(2, device=device) * self.pages  # keys, then values
        heads = torch.arange(self.kv_heads, device=device)
        # element (half w, page p, head h, offset o) of [2, pages, kv_heads, PAGE] is at
        # ((w * pages + p) * kv_heads + h) * PAGE + o
        base = (which[:, None] * self.kv_heads + heads[None, :]) * PAGE  # [2, Hkv]
        at = page * (self.kv_heads * PAGE) + positions % PAGE  # [R, T]
        index = base[None, :, :, None] + at[:, None, None, :]  # [R, 2, Hkv, T]
        return index.reshape(-1)

    def gather(
        self, layer: int, pages: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions [0, length) of the rows whose table rows are `pages`:
        contiguous copies [R, kv_heads, length, D]."""
        used = pages[:, : pages_for(length)].long()  # [R, n]
        rows = used.shape[0]
        out = []
        for half in self.kv[layer]:  # [pages, Hkv, PAGE, D]
            picked = half[used]  # [R, n, Hkv, PAGE, D]
            picked = picked.transpose(1, 2).reshape(rows, self.kv_heads, -1, half.shape[-1])
            out.append(picked[:, :, :length])
        return out[0], out[1]
