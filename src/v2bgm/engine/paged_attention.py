"""Decoding attention over a paged KV cache (`v2bgm.engine.paged`): a Triton kernel.

A decoding step's rows attend over caches of different lengths held in pages anywhere in one
pool, so neither a batched GEMM nor SDPA can read them in place. The work is split as in
flash-decoding: program (row, KV head, split) reads its share of the row's keys page by page
(the row's length comes from its positions on the device, so one CUDA graph serves every
length), keeps a running maximum and sum (online softmax, fp32), and leaves a partial result;
a second kernel weighs the splits together. The G query heads of a KV head (times the step's
T <= 2 query positions) are one tile, so each key is read once for all of them.

The arithmetic is `decode_attention`'s (scores in fp32, the model's scaling, a key at j seen
from position p iff j <= p); the sum runs in another order, so results agree to rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 64  # keys per tile; divides the page
MAX_SPLITS = 64
# Programs to aim for: a few per SM of a large card (H100/H200: 132 SMs), so that even one
# request's step (2 rows x 4 KV heads) spreads its keys over the whole card.
TARGET_PROGRAMS = 512


@triton.jit
def _split_kernel(
    q_ptr, kv_ptr, table_ptr, pos_ptr, acc_ptr, ml_ptr,
    scale, table_stride, pages, kv_heads,
    T: tl.constexpr, QUERIES: tl.constexpr, PAGE: tl.constexpr, D: tl.constexpr,
    SPLITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    row, head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ms = tl.arange(0, BLOCK_M)
    ds = tl.arange(0, D)
    m_ok = ms < QUERIES
    # query m is group member m // T at the row's t = m % T position
    q_pos = tl.load(pos_ptr + row * T + ms % T, mask=m_ok, other=0)
    length = tl.load(pos_ptr + row * T + T - 1) + 1
    q_base = q_ptr + ((row * kv_heads + head) * QUERIES).to(tl.int64) * D
    q = tl.load(q_base + ms[:, None] * D + ds[None, :], mask=m_ok[:, None], other=0.0)
    chunk = tl.cdiv(tl.cdiv(length, SPLITS), BLOCK_N) * BLOCK_N
    start = split * chunk
    end = tl.minimum(start + chunk, length)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    ns = tl.arange(0, BLOCK_N)
    for n0 in range(start, end, BLOCK_N):
        page = tl.load(table_ptr + row * table_stride + n0 // PAGE).to(tl.int64)
        # keys of (page, head) are [PAGE, D] at kv_ptr; values follow `pages` pages later
        k_base = kv_ptr + ((page * kv_heads + head) * PAGE + n0 % PAGE) * D
        v_base = k_base + pages * kv_heads * PAGE * D
        offs = ns[:, None] * D + ds[None, :]
        k = tl.load(k_base + offs)
        v = tl.load(v_base + offs)
        s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
        keys = n0 + ns
        seen = (keys[None, :] <= q_pos[:, None]) & (keys[None, :] < end)
        s = tl.where(seen, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a query that sees none yet
        p = tl.where(seen, tl.exp(s - m_safe[:, None]), 0.0)
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
        m_i = m_new
    out = ((row * kv_heads + head) * SPLITS + split) * BLOCK_M
    tl.store(acc_ptr + (out + ms[:, None]).to(tl.int64) * D + ds[None, :], acc)
    tl.store(ml_ptr + (out + ms) * 2, m_i)
    tl.store(ml_ptr + (out + ms) * 2 + 1, l_i)


@triton.jit
def _combine_kernel(
    acc_ptr, ml_ptr, out_ptr, kv_heads,
    QUERIES: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    row, head = tl.program_id(0), tl.program_id(1)
    ms = tl.arange(0, BLOCK_M)
    ds = tl.arange(0, D)
    base = (row * kv_heads + head) * SPLITS * BLOCK_M
    m_all = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    for split in range(SPLITS):
        m_all = tl.maximum(m_all, tl.load(ml_ptr + (base + split * BLOCK_M + ms) * 2))
    m_safe = tl.where(m_all == float("-inf"), 0.0, m_all)
    total = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    for split in range(SPLITS):
        at = base + split * BLOCK_M + ms
        weight = tl.exp(tl.load(ml_ptr + at * 2) - m_safe)
        total += tl.load(ml_ptr + at * 2 + 1) * weight
        part = tl.load(acc_ptr + at[:, None].to(tl.int64) * D + ds[None, :])
        acc += part * weight[:, None]
    acc = acc / total[:, None]
    m_ok = ms < QUERIES
    out = out_ptr + ((row * kv_heads + head) * QUERIES + ms[:, None]).to(tl.int64) * D + ds[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None])


def splits_for(programs: int) -> int:
    """Splits of each row's keys so that rows x KV heads x splits reach TARGET_PROGRAMS."""
    want = max(1, -(-TARGET_PROGRAMS // programs))
    return min(MAX_SPLITS, triton.next_power_of_2(want))


def paged_decode_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    table: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q [R, Hkv, G*T, D] (query m: group member m // T at position positions[r, m % T]);
    kv: one layer of the pool, [2, pages, Hkv, PAGE, D]; table [R, pages per row] (int32, the
    pool's page of each row's i-th PAGE positions); positions [R, T] ascending -> [R, Hkv, G*T, D]
    in q's dtype. Each row reads its keys [0, positions[r, -1]] only."""
    rows, kv_heads, queries, dim = q.shape
    _, pages, _, page, _ = kv.shape
    t = positions.shape[1]
    if page % BLOCK_N or dim < 16 or dim & (dim - 1):
        raise ValueError(f"unsupported page {page} / head size {dim}")
    block_m = max(16, triton.next_power_of_2(queries))  # tl.dot's smallest tile
    splits = splits_for(rows * kv_heads)
    acc = torch.empty((rows, kv_heads, splits, block_m, dim), dtype=torch.float32, device=q.device)
    ml = torch.empty((rows, kv_heads, splits, block_m, 2), dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    q = q.contiguous()
    positions = positions.to(torch.int32).contiguous()
    table = table.contiguous()
    _split_kernel[(rows, kv_heads, splits)](
        q, kv, table, positions, acc, ml, scale, table.stride(0), pages, kv_heads,
        T=t, QUERIES=queries, PAGE=page, D=dim, SPLITS=splits, BLOCK_M=block_m, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    _combine_kernel[(rows, kv_heads)](
        acc, ml, out, kv_heads, QUERIES=queries, D=dim, SPLITS=splits, BLOCK_M=block_m
    )
    return out
