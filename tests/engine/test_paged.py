"""The paged KV cache (v2bgm.engine.paged): pages taken by need and given back, the decoding
kernel over pages (Triton's CPU interpreter) against the gathered reference, and stage 1
admitting requests by the pages they need (tiny weights, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine.interpreter import run_interpreted
from v2bgm.engine.llama import StaticLlama
from v2bgm.engine.paged import PAGE, SCRATCH, PagedCache, pages_for
from v2bgm.yue import tokens
from v2bgm.yue.stage1 import Stage1, Stage1Settings

SECTIONS = tokens.split_sections("[verse]\nlights on the water\n[chorus]\nwe run\n")


def cache(pages: int = 9, rows: int = 4, max_positions: int = 4 * PAGE) -> PagedCache:
    return PagedCache(2, pages, rows, 2, 16, max_positions, torch.float32, torch.device("cpu"))


def test_pages_are_taken_by_need_given_back_and_never_the_scratch_page():
    c = cache(max_positions=6 * PAGE)
    assert c.usable_pages == 8 and c.free_pages == 8 and c.width == 6
    c.allocate(0, 1)
    c.allocate(1, 2 * PAGE + 1)  # three pages
    assert c.held(0) == PAGE and c.held(1) == 3 * PAGE and c.used_pages == 4
    assert (c.table[0, 1:] == SCRATCH).all() and (c.table[2] == SCRATCH).all()
    taken = set(c.table[:2].flatten().tolist()) - {SCRATCH}
    assert len(taken) == 4 and SCRATCH not in taken
    c.release(0)
    assert c.free_pages == 5 and (c.table[0] == SCRATCH).all()
    with pytest.raises(MemoryError, match="6 pages asked, 5 free"):
        c.allocate(2, 6 * PAGE)
    with pytest.raises(ValueError, match="exceed a row's 768"):
        c.allocate(2, 6 * PAGE + 1)
    assert c.free_pages == 5 and (c.table[2] == SCRATCH).all()  # nothing taken by either
    c.allocate(2, 4 * PAGE)
    c.allocate(3, PAGE)  # the last free page
    assert c.free_pages == 0
    c.allocate(1, PAGE)  # a row's earlier pages go back before it takes new ones
    assert c.held(1) == PAGE and c.free_pages == 2


def test_a_written_position_is_where_gather_finds_it():
    c = cache()
    c.allocate(0, 3 * PAGE)
    c.allocate(1, PAGE)
    c.release(0)
    c.allocate(2, 3 * PAGE)  # pages freed by row 0, not in order
    pages = c.table[[2, 1]]
    positions = torch.tensor([[2 * PAGE + 5, 2 * PAGE + 6], [3, 4]])
    kv = torch.randn(2, 2, 2, 2, 16)  # [R, keys/values, kv_heads, T, D]
    c.kv[1].view(-1, 16).index_copy_(0, c.write_index(pages, positions), kv.reshape(-1, 16))
    keys, values = c.gather(1, pages, 2 * PAGE + 7)
    for r in range(2):
        for t in range(2):
            p = int(positions[r, t])
            torch.testing.assert_close(keys[r, :, p], kv[r, 0, :, t])
            torch.testing.assert_close(values[r, :, p], kv[r, 1, :, t])
    assert torch.count_nonzero(c.kv[0]) == 0  # the other layer untouched


KERNEL_CHECK = r"""
import json, sys, torch
from v2bgm.engine.llama import decode_attention
from v2bgm.engine.paged import PAGE, PagedCache
from v2bgm.engine.paged_attention import paged_decode_attention

out = []
for rows, kv_heads, group, t, dim, lengths in json.loads(sys.argv[1]):
    torch.manual_seed(len(out))
    c = PagedCache(1, 24, rows + 1, kv_heads, dim, 6 * PAGE, torch.float32, torch.device("cpu"))
    c.kv.normal_()  # pages hold old values: they must not be seen
    c.allocate(rows, 3 * PAGE)  # taken, then freed: later rows' pages are out of order
    for r, length in enumerate(lengths):
        c.allocate(r, length + t)
    c.release(rows)
    pos = torch.tensor([[length + i for i in range(t)] for length in lengths])
    q = torch.randn(rows, kv_heads, group * t, dim)
    pages = c.table[:rows]
    got = paged_decode_attention(q, c.kv[0], pages, pos, dim**-0.5)
    kv_len = int(pos.max()) + 1
    keys, values = c.gather(0, pages, kv_len)
    seen = torch.arange(kv_len)[None, None, :] <= pos[:, :, None]
    seen = seen[:, None].expand(-1, group, -1, -1).reshape(rows, 1, -1, kv_len)
    mask = torch.where(seen, 0.0, float("-inf"))
    want = decode_attention(q, keys, values, mask, dim**-0.5)
    out.append([list(got.shape), float((got - want).abs().max())])
print(json.dumps(out))
"""
# rows, KV heads, query heads per KV head, query positions, head size, each row's length:
# one key; a page edge; many splits; an idle row (length 0: its scratch page at position 0)
KERNEL_CASES = [
    [3, 2, 2, 1, 16, [0, 1, 130]],
    [2, 2, 4, 2, 32, [PAGE - 1, 5 * PAGE + 17]],
    [1, 1, 8, 1, 16, [4 * PAGE]],
]


def test_the_paged_kernel_equals_attention_over_the_gathered_keys_in_the_interpreter():
    got = run_interpreted(KERNEL_CHECK, KERNEL_CASES)
    for (rows, heads, group, t, dim, _), (shape, error) in zip(KERNEL_CASES, got, strict=True):
        assert shape == [rows, heads, group * t, dim]
        assert error < 1e-5, (rows, error)


def small_engine(model, tokenizer, slots: int, cache_positions: int | None) -> Stage1:
    s = Stage1Settings(max_segment_tokens=110)
    return Stage1(StaticLlama(model), tokenizer, s, slots=slots, cache_positions=cache_positions)


class Peak:
    """Counts the requests decoding at once (from their progress callbacks)."""

    def __init__(self, engine: Stage1) -> None:
        self.engine, self.most = engine, 0

    def __call__(self, stage: str, fraction: float) -> None:
        self.most = max(self.most, self.engine.decoder.active)


@torch.inference_mode()
def test_requests_wait_for_pages_and_decode_as_they_would_alone(stage1_model, tokenizer):
    roomy = small_engine(stage1_model, tokenizer, slots=3, cache_positions=None)
    alone = {seed: roomy.generate("pop", SECTIONS, 60, seed).ids for seed in (1, 2, 3)}
    probe = roomy.job("pop", SECTIONS, 60, 1)
    need = sum(roomy.decoder.pages_needed(probe))
    # three slots, but pages for one request and a half: they take turns
    tight = small_engine(stage1_model, tokenizer, slots=3, cache_positions=need * PAGE * 3 // 2)
    peak = Peak(tight)
    jobs = tight.run([tight.job("pop", SECTIONS, 60, seed, peak) for seed in (1, 2, 3)])
    assert peak.most == 1
    for job in jobs:
        np.testing.assert_array_equal(job.result.ids, alone[job.seed])
    assert tight.decoder.cache.used_pages == 0 and tight.decoder.active == 0
    peak = Peak(roomy)
    roomy.run([roomy.job("pop", SECTIONS, 60, seed, peak) for seed in (1, 2, 3)])
    assert peak.most == 3


@torch.inference_mode()
def test_a_request_larger_than_the_cache_fails_naming_it_and_the_others_finish(
    stage1_model, tokenizer
):
    eng = small_engine(stage1_model, tokenizer, slots=2, cache_positions=12 * PAGE)
    big, small = eng.job("pop", SECTIONS, 2000, 1), eng.job("pop", SECTIONS, 20, 2)
    assert sum(eng.decoder.pages_needed(big)) > 12 >= sum(eng.decoder.pages_needed(small))
    eng.run([big, small])
    assert isinstance(big.error, MemoryError) and "cache pages" in str(big.error)
    assert small.result is not None and eng.decoder.cache.used_pages == 0


@pytest.mark.parametrize("lyrics", [True, False])
@torch.inference_mode()
def test_cache_need_bounds_what_a_request_holds(stage1_model, tokenizer, lyrics):
    """Sampled, YuE's own segment lengths (several segments, some ended early by <EOA>) or a
    plan's exact ones: the whole sequence fits the positions asked for at admission."""
    eng = small_engine(stage1_model, tokenizer, slots=4, cache_positions=None)
    budgets = None if lyrics else [40, 35]
    jobs = [eng.job("pop", SECTIONS, 75, seed, budgets=budgets) for seed in range(4)]
    needs = [job.cache_need() for job in jobs]
    eng.run(jobs)
    for job, need in zip(jobs, needs, strict=True):
        assert job.result is not None
        assert len(job.result.ids) <= need.context
        longest = max(len(seg) for seg in job.segments)  # prompt + tokens + <EOA>
        assert need.segment >= max(job.made_per_segment) * 2
        assert longest <= need.context and pages_for(need.context) <= eng.decoder.cache.width


@torch.inference_mode()
def test_a_request_whose_need_cannot_be_worked_out_fails_alone(stage1_model, tokenizer):
    eng = small_engine(stage1_model, tokenizer, slots=2, cache_positions=None)
    broken, fine = eng.job("pop", SECTIONS, 20, 1), eng.job("pop", SECTIONS, 20, 2)

    def no_need():
        raise ValueError("no tags")

    broken.cache_need = no_need  # type: ignore[method-assign]
    assert eng.decoder.can_add(broken)  # so that `add` answers it rather than the loop dying
    eng.run([broken, fine])
    assert isinstance(broken.error, ValueError) and fine.result is not None
    assert eng.decoder.cache.used_pages == 0 and eng.decoder.active == 0
