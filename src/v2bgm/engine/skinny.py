"""Triton kernels for a few rows times a weight matrix (bf16 or FP8 with per-row scales).

A decoding step's products are [M, K] x [K, N] with M = 2 per request: reading the weight is all
the cost. cuBLAS reaches ~80% of the card's read bandwidth on stage 1's shapes at M = 2 and has
no weight-only FP8 product; these kernels read each weight element once, convert it in
registers and accumulate in fp32:

- `_gemv` (M <= GEMV_MAX_ROWS): each program owns BLOCK_N output channels and walks K; the
  rows are multiplied on the CUDA cores (no tensor-core tile to pad to), one accumulator each;
- `_dot` (more rows): tensor-core tiles of BLOCK_M rows (tl.dot), the weight converted to the
  rows' dtype first.

Each picks its tile sizes by timing (triton.autotune, per matrix shape and row bucket), the first
time a shape is seen: outside any CUDA-graph capture, since the engine warms a step up before
capturing it (v2bgm.engine.graphs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

GEMV_MAX_ROWS = 4  # two requests' CFG rows; beyond, tensor-core tiles win

# Tile sizes timed on an H200 for stage 1's shapes at 2 rows (baseline sweep, 2026-12-04): the
# best few of 88 for FP8 and bf16 weights; autotune picks among them per shape.
GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for n, k, w, s in [
        (2, 2048, 4, 1), (4, 1024, 2, 1), (4, 1024, 2, 2), (4, 2048, 4, 1),
        (8, 1024, 4, 2), (8, 2048, 2, 1), (8, 2048, 4, 2), (2, 4096, 4, 1),
    ]
]  # fmt: skip
DOT_CONFIGS = [
    triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=4, num_stages=s)
    for n, k, s in [(32, 128, 4), (32, 256, 4), (64, 128, 3), (64, 128, 4), (128, 128, 4)]
]


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, s_ptr, y_ptr, M, N, K,
    HAS_SCALE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One accumulator per row (BLOCK_M <= 4): a shared [M, N] accumulator updated by masks ran
    ~10% slower at 2 rows, and 2x for FP8."""
    ns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = ns < N
    acc0 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        w = tl.load(
            w_ptr + ns[:, None].to(tl.int64) * K + ks[None, :],
            mask=n_ok[:, None] & k_ok[None, :], other=0.0, eviction_policy="evict_first",
        ).to(tl.float32)  # fmt: skip
        acc0 += tl.sum(w * tl.load(x_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)[None, :], 1)
        if BLOCK_M > 1:
            x1 = tl.load(x_ptr + K + ks, mask=k_ok & (M > 1), other=0.0).to(tl.float32)
            acc1 += tl.sum(w * x1[None, :], 1)
        if BLOCK_M > 2:
            x2 = tl.load(x_ptr + 2 * K + ks, mask=k_ok & (M > 2), other=0.0).to(tl.float32)
            acc2 += tl.sum(w * x2[None, :], 1)
            x3 = tl.load(x_ptr + 3 * K + ks, mask=k_ok & (M > 3), other=0.0).to(tl.float32)
            acc3 += tl.sum(w * x3[None, :], 1)
    if HAS_SCALE:
        scale = tl.load(s_ptr + ns, mask=n_ok, other=0.0)
        acc0, acc1, acc2, acc3 = acc0 * scale, acc1 * scale, acc2 * scale, acc3 * scale
    dtype = y_ptr.dtype.element_ty
    tl.store(y_ptr + ns, acc0.to(dtype), mask=n_ok)
    if BLOCK_M > 1:
        tl.store(y_ptr + N + ns, acc1.to(dtype), mask=n_ok & (M > 1))
    if BLOCK_M > 2:
        tl.store(y_ptr + 2 * N + ns, acc2.to(dtype), mask=n_ok & (M > 2))
        tl.store(y_ptr + 3 * N + ns, acc3.to(dtype), mask=n_ok & (M > 3))


@triton.jit
def _dot_kernel(
    x_ptr, w_ptr, s_ptr, y_ptr, M, N, K,
    HAS_SCALE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    ns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ms = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok, m_ok = ns < N, ms < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        x = tl.load(x_ptr + ms[:, None] * K + ks[None, :], mask=m_ok[:, None] & k_ok[None, :],
                    other=0.0)  # fmt: skip
        w = tl.load(
            w_ptr + ns[None, :].to(tl.int64) * K + ks[:, None],
            mask=n_ok[None, :] & k_ok[:, None], other=0.0, eviction_policy="evict_first",
        )  # fmt: skip
        acc = tl.dot(x, w.to(x.dtype), acc)
    if HAS_SCALE:
        acc = acc * tl.load(s_ptr + ns, mask=n_ok, other=0.0)[None, :]
    out = y_ptr + ms[:, None] * N + ns[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


TUNED_PER = ["N", "K", "BLOCK_M", "HAS_SCALE"]  # a matrix shape, a row bucket, FP8 or not
_gemv = triton.autotune(configs=GEMV_CONFIGS, key=TUNED_PER)(_gemv_kernel)
_dot = triton.autotune(configs=DOT_CONFIGS, key=TUNED_PER)(_dot_kernel)


def dot_rows(m: int) -> int:
    """The tensor-core tile's rows for `m` rows (tl.dot needs at least 16)."""
    return 16 if m <= 16 else 32 if m <= 32 else 64


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    tiles: dict | None = None,
) -> torch.Tensor:
    """x [..., K] @ (weight [N, K] * scale[:, None]).T -> [..., N] in x's dtype.

    `tiles` ({"BLOCK_N": .., "BLOCK_K": .., "num_warps": ..}): run the plain kernel with these
    instead of the tuned one (Triton's CPU interpreter in the tests has no timer to tune with)."""
    k = x.shape[-1]
    lead = x.shape[:-1]
    rows = x.reshape(-1, k).contiguous()
    m, n = rows.shape[0], weight.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    has_scale = scale is not None
    s = scale if has_scale else y  # an unread pointer
    if m <= GEMV_MAX_ROWS:
        block_m = triton.next_power_of_2(m)
        kernel, plain = _gemv, _gemv_kernel

        def grid(meta: dict) -> tuple[int, ...]:
            return (triton.cdiv(n, meta["BLOCK_N"]),)
    else:
        block_m = dot_rows(m)
        kernel, plain = _dot, _dot_kernel

        def grid(meta: dict) -> tuple[int, ...]:
            return (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(m, block_m))

    args = (rows, weight, s, y, m, n, k)
    if tiles is None:
        kernel[grid](*args, HAS_SCALE=has_scale, BLOCK_M=block_m)
    else:
        plain[grid(tiles)](*args, HAS_SCALE=has_scale, BLOCK_M=block_m, **tiles)
    return y.view(*lead, n)
