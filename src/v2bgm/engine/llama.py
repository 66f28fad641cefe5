"""A Llama forward over fixed-size KV-cache slots: the one model both YuE stages run on.

`transformers`' Llama allocates its cache per `generate` call and keeps Python between kernels;
here the weights of a loaded `LlamaForCausalLM` are taken as they are (q/k/v and gate/up fused
into one matrix each, so a decoding step is a few large GEMMs), and every sequence in flight owns
a slot of a preallocated cache. Row `i` of a forward call is slot `first_slot + i` of its pool,
so a decode step reads the cache through views and every shape is fixed: the step can be
captured once as a CUDA graph (`graphs.py`) and replayed for any requests occupying the slots.

The arithmetic follows `transformers`' Llama (RMSNorm in fp32, rotary tables from the model's
own rotary embedding, SDPA with the model's scaling), so greedy tokens equal the reference's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from v2bgm.engine.linear import (
    DEFAULT_PRECISION,
    GEMV_ENV,
    GEMV_KERNELS,
    Matrix,
    as_precision,
    check_precision,
    linear,
)
from v2bgm.engine.paged import PagedCache
from v2bgm.engine.paged_attention import paged_decode_attention

COMPILE_ENV = "V2BGM_COMPILE"  # "0": no torch.compile on the GPU (eager kernels, slower)
# Decoding steps (a query position or two per row) attend with two GEMMs (`decode_attention`)
# up to this many rows of one pool; SDPA wins beyond (H200: 16 rows 3.2 vs 4.0 ms and 32 rows
# 5.9 vs 4.2 ms per 32 layers at 6,144 keys, `python -m v2bgm.bench.attention`).
GEMM_ATTENTION_MAX_T = 2
RECOMPILE_LIMIT = 64
GEMM_ATTENTION_MAX_ROWS = 16
PAGED_KERNEL_MAX_T = 2  # query positions per row the paged kernel takes (decoding steps)


class KVPool:
    """Keys and values of `slots` sequences of up to `length` positions, for every layer.

    Both live in one tensor [layers, 2, slots, kv_heads, length, dim], so that a layer writes a
    step's keys and values with one indexed copy."""

    def __init__(
        self,
        layers: int,
        slots: int,
        kv_heads: int,
        length: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (layers, 2, slots, kv_heads, length, head_dim)
        self.kv = torch.zeros(shape, dtype=dtype, device=device)
        self.k, self.v = self.kv[:, 0], self.kv[:, 1]
        self.slots, self.kv_heads, self.length = slots, kv_heads, length

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


@dataclass(frozen=True)
class Part:
    """Consecutive rows of a forward call that live in one pool: slots `first`..`first+rows-1`,
    attending over the first `kv_len` positions of their slots."""

    pool: KVPool
    first: int
    rows: int
    kv_len: int


@dataclass(frozen=True)
class PagedPart:
    """Consecutive rows of a forward call whose keys/values live in a paged cache: its page
    table's rows `table_rows` ([rows], on the device). `kv_len`: positions a gathered copy
    holds (the CPU and prefills read a contiguous copy; on a GPU a decoding step reads each
    row's own pages up to its position, whatever `kv_len`)."""

    cache: PagedCache
    table_rows: torch.Tensor
    kv_len: int

    @property
    def rows(self) -> int:
        return self.table_rows.shape[0]


AnyPart = Part | PagedPart


@dataclass(frozen=True)
class _Where:
    """What a forward call computes once per part for every layer: where its keys/values go,
    its mask (None where the paged kernel masks by position itself), its rows' page table."""

    write: torch.Tensor
    mask: torch.Tensor | None
    pages: torch.Tensor | None = None
    positions: torch.Tensor | None = None


@dataclass
class _Layer:
    norm1: torch.Tensor
    qkv: Matrix  # [(H + 2 Hkv) D, hidden]
    o: Matrix
    norm2: torch.Tensor
    gate_up: Matrix  # [2 F, hidden]
    down: Matrix


class StaticLlama:
    """Holds a `LlamaForCausalLM`'s weights (shared, not copied, where they need no fusing)."""

    def __init__(
        self,
        model: PreTrainedModel,
        max_positions: int | None = None,
        compile: bool | None = None,
        precision: str = DEFAULT_PRECISION,
        gemv: str | None = None,
    ) -> None:
        """`compile`: fuse with torch.compile (default: on a GPU unless V2BGM_COMPILE=0).
        `precision`: "fp8" holds the matrices (not the embedding or the norms) as FP8 with
        per-channel scales (v2bgm.engine.linear); the model's own matrices are then no longer
        needed, and are freed once the caller drops the model. `gemv`: the kernel of a few rows
        times a bf16 matrix ("cublas" or "triton"; default $V2BGM_GEMV, else "cublas")."""
        config = model.config
        self.config = config
        self.device = model.device
        self.dtype = model.dtype
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.vocab_size = config.vocab_size
        self.max_positions = max_positions or config.max_position_embeddings
        self.precision = check_precision(precision)
        self.gemv = gemv or os.environ.get(GEMV_ENV, "").strip() or GEMV_KERNELS[0]
        if self.gemv not in GEMV_KERNELS:
            raise ValueError(f"gemv must be one of {', '.join(GEMV_KERNELS)}, got {self.gemv!r}")
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            if any(getattr(p, "bias", None) is not None for p in (attn.q_proj, mlp.gate_proj)):
                raise ValueError("biased projections are not supported (YuE has none)")
            self.layers.append(
                _Layer(
                    norm1=layer.input_layernorm.weight,
                    qkv=as_precision(_fuse([attn.q_proj, attn.k_proj, attn.v_proj]), precision),
                    o=as_precision(attn.o_proj.weight, precision),
                    norm2=layer.post_attention_layernorm.weight,
                    gate_up=as_precision(_fuse([mlp.gate_proj, mlp.up_proj]), precision),
                    down=as_precision(mlp.down_proj.weight, precision),
                )
            )
        self.norm = inner.norm.weight
        self.lm_head = as_precision(model.lm_head.weight, precision)
        self.scaling = self.head_dim**-0.5
        self.cos, self.sin = _rotary_tables(model, self.max_positions)
        # On a GPU the element-wise work around the GEMMs is fused by torch.compile (one
        # compilation, dynamic shapes): a decoding step is launch-bound without it. The CPU runs
        # the same functions eagerly, where the tests pin them to `transformers`' tokens.
        self._pre, self._post, self._probs = _pre_attention, _post_attention, attention_probs
        if compile is None:
            compile = self.device.type == "cuda" and os.environ.get(COMPILE_ENV, "1") != "0"
        self.compiled = compile
        if compile:
            # Every StaticLlama (both stages, FP8 or not, a benchmark's several) compiles these
            # same functions, and dynamo counts each variant against one code object's limit.
            limit = torch._dynamo.config.recompile_limit
            torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
            self._pre = torch.compile(_pre_attention, dynamic=True, fullgraph=True)
            self._post = torch.compile(_post_attention, dynamic=True, fullgraph=True)
            self._probs = torch.compile(attention_probs, dynamic=True, fullgraph=True)

    def paged_cache(self, pages: int, rows: int, max_positions: int) -> PagedCache:
        return PagedCache(
            len(self.layers),
            pages,
            rows,
            self.kv_heads,
            self.head_dim,
            max_positions,
            self.dtype,
            self.device,
        )

    def position_bytes(self) -> int:
        """Cache bytes of one position (keys and values of every layer)."""
        size = torch.empty((), dtype=self.dtype).element_size()
        return len(self.layers) * 2 * self.kv_heads * self.head_dim * size

    def pool(self, slots: int, length: int) -> KVPool:
        return KVPool(
            len(self.layers),
            slots,
            self.kv_heads,
            length,
            self.head_dim,
            self.dtype,
            self.device,
        )

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        parts: list[AnyPart],
        vocab: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """tokens, positions [R, T] -> fp32 logits of each row's last position [R, V], or of
        the ids `vocab` = (first, end) only: [R, end - first] (the lm_head's other rows are not
        read; a caller that never normalises over the whole vocabulary, e.g. a greedy pick
        within a range, gets the same values for a fraction of the bytes).

        Writes every row's keys/values at its positions, then attends over its slot's first
        `kv_len` positions up to its own position (a key at j is seen from position p iff j <= p,
        so whatever a slot holds beyond a row's position is never read)."""
        h = F.embedding(tokens, self.embed)
        delta = torch.zeros_like(h)  # each layer's MLP output, added at the next layer's start
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # [R, 1, T, D]
        spans = _starts(parts)
        wheres = [self._where(positions, part, start) for part, start in spans]
        shape = (self.heads, self.kv_heads, self.head_dim, self.eps)
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv
            h, q, kv = self._pre(
                h, delta, layer.norm1, qkv.weight, qkv.scale, cos, sin, *shape, self.gemv
            )
            outs = [
                self._attend(index, part, q[sl], kv[sl], where)
                for (part, start), where in zip(spans, wheres, strict=True)
                for sl in [slice(start, start + part.rows)]
            ]
            second = outs[1] if len(outs) > 1 else None
            if len(outs) > 2:
                second = torch.cat(outs[1:])
            o, gate_up, down = layer.o, layer.gate_up, layer.down
            h, delta = self._post(
                h, outs[0], second, o.weight, o.scale, layer.norm2,
                gate_up.weight, gate_up.scale, down.weight, down.scale, self.eps, self.gemv,
            )  # fmt: skip
        h = _rms_norm((h + delta)[:, -1], self.norm, self.eps)
        head = self.lm_head
        weight, scale = head.weight, head.scale
        if vocab is not None:
            first, end = vocab
            weight = weight[first:end]
            scale = None if scale is None else scale[first:end]
        return linear(h, weight, scale, self.gemv).float()

    def _where(self, positions: torch.Tensor, part: AnyPart, start: int) -> _Where:
        pos = positions[start : start + part.rows]
        if isinstance(part, Part):
            return _Where(self._cache_index(positions, part, start), self._mask(pos, part.kv_len))
        cache = part.cache
        pages = cache.table.index_select(0, part.table_rows)
        write = cache.write_index(pages, pos)
        in_place = pos.is_cuda and pos.shape[1] <= PAGED_KERNEL_MAX_T
        mask = None if in_place else self._mask(pos, min(part.kv_len, cache.max_positions))
        return _Where(write, mask, pages, pos)

    def _mask(self, pos: torch.Tensor, kv_len: int) -> torch.Tensor:
        """[rows, 1, G*T, kv_len] additive (0 / -inf, the model's dtype): query rows of one KV
        head's group see keys j <= p. Additive, built once per forward: SDPA would turn a
        boolean mask into this itself, in every layer."""
        rows = pos.shape[0]  # pos: [rows, T]
        keys = torch.arange(kv_len, device=pos.device)
        seen = keys[None, None, :] <= pos[:, :, None]  # [rows, T, kv]
        group = self.heads // self.kv_heads
        seen = seen[:, None].expand(-1, group, -1, -1).reshape(rows, 1, -1, kv_len)
        blocked = torch.full((), float("-inf"), dtype=self.dtype, device=pos.device)
        return torch.where(seen, torch.zeros((), dtype=self.dtype, device=pos.device), blocked)

    def _cache_index(self, positions: torch.Tensor, part: Part, start: int) -> torch.Tensor:
        """Rows of a layer's cache, seen as [2 * slots * kv_heads * length, D], that the part's
        keys/values [rows, 2, kv_heads, T, D] go to (computed once per forward, not per layer)."""
        pool = part.pool
        pos = positions[start : start + part.rows]  # [rows, T]
        device = pos.device
        slots = torch.arange(part.first, part.first + part.rows, device=device)
        which = torch.arange(2, device=device) * pool.slots  # keys, then values
        heads = torch.arange(self.kv_heads, device=device)
        rows = (which[None, :, None] + slots[:, None, None]) * self.kv_heads + heads[None, None, :]
        return (rows[..., None] * pool.length + pos[:, None, None, :]).reshape(-1)

    def _attend(
        self,
        layer: int,
        part: AnyPart,
        q: torch.Tensor,
        kv: torch.Tensor,
        where: _Where,
    ) -> torch.Tensor:
        rows, length, d = part.rows, q.shape[2], self.head_dim
        group = self.heads // self.kv_heads
        # GQA without repeating the cache: a KV head's G query heads become G*T query rows.
        grouped = q.reshape(rows, self.kv_heads, group * length, d)
        if isinstance(part, Part):
            pool = part.pool
            pool.kv[layer].view(-1, d).index_copy_(0, where.write, kv.reshape(-1, d))
            keys = pool.k[layer, part.first : part.first + rows, :, : part.kv_len]
            values = pool.v[layer, part.first : part.first + rows, :, : part.kv_len]
        else:
            cache = part.cache
            cache.kv[layer].view(-1, d).index_copy_(0, where.write, kv.reshape(-1, d))
            if where.mask is None:  # a decoding step on a GPU: the pages read in place
                out = paged_decode_attention(
                    grouped, cache.kv[layer], where.pages, where.positions, self.scaling
                )
                return out.reshape(rows, self.heads, length, d)
            kv_len = min(part.kv_len, cache.max_positions)
            keys, values = cache.gather(layer, where.pages, kv_len)
        mask = where.mask
        if length <= GEMM_ATTENTION_MAX_T and rows <= GEMM_ATTENTION_MAX_ROWS:
            out = decode_attention(grouped, keys, values, mask, self.scaling, self._probs)
        else:
            out = F.scaled_dot_product_attention(
                grouped, keys, values, attn_mask=mask, scale=self.scaling
            )
        return out.reshape(rows, self.heads, length, d)


def decode_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    probs_fn: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attention of a few query rows per KV head: q [R, Hkv, Q, D], keys/values [R, Hkv, L, D]
    (views of a pool), additive mask [R, 1, Q, L] -> [R, Hkv, Q, D].

    Two batched GEMMs around a softmax, as `transformers`' eager attention computes it (scores
    kept in fp32 here). SDPA's kernels split the work over rows x heads only: a decoding step of
    one request scans thousands of keys on a few dozen thread blocks, while a GEMM spreads the
    keys over the whole card (`python -m v2bgm.bench.attention` measures both). `probs_fn`:
    `attention_probs` or a compiled copy of it."""
    rows, kv_heads, queries, dim = q.shape
    length = keys.shape[2]
    q3 = q.reshape(rows * kv_heads, queries, dim)
    k3 = keys.reshape(rows * kv_heads, length, dim).transpose(1, 2)
    if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        scores = torch.bmm(q3, k3, out_dtype=torch.float32)  # the fp32 accumulator kept
    else:
        scores = torch.bmm(q3, k3).float()
    scores = scores.view(rows, kv_heads, queries, length)
    probs = (probs_fn or attention_probs)(scores, mask, scale, q.dtype)
    out = torch.bmm(
        probs.view(rows * kv_heads, queries, length), values.reshape(rows * kv_heads, length, dim)
    )
    return out.view(rows, kv_heads, queries, dim)


def attention_probs(
    scores: torch.Tensor, mask: torch.Tensor, scale: float, dtype: torch.dtype
) -> torch.Tensor:
    return torch.softmax(scores * scale + mask, dim=-1).to(dtype)


def _pre_attention(
    h: torch.Tensor,
    delta: torch.Tensor,
    norm: torch.Tensor,
    qkv_weight: torch.Tensor,
    qkv_scale: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    kv_heads: int,
    head_dim: int,
    eps: float,
    gemv: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual add, RMSNorm, fused q/k/v projection and rotary embedding of one layer:
    h, q [R, heads, T, D] and keys/values [R, 2, kv_heads, T, D] in the cache's layout."""
    h = h + delta
    rows, length, _ = h.shape
    qkv = linear(_rms_norm(h, norm, eps), qkv_weight, qkv_scale, gemv)
    qkv = qkv.view(rows, length, heads + 2 * kv_heads, head_dim).transpose(1, 2)
    q, k, v = qkv.split([heads, kv_heads, kv_heads], dim=1)  # [R, heads, T, D]
    # contiguous: the cache takes k/v and SDPA q in this layout, without a copy of their own
    return h, _rope(q, cos, sin).contiguous(), torch.stack([_rope(k, cos, sin), v], dim=1)


def _post_attention(
    h: torch.Tensor,
    attn: torch.Tensor,
    attn_more: torch.Tensor | None,
    o_weight: torch.Tensor,
    o_scale: torch.Tensor | None,
    norm: torch.Tensor,
    gate_up_weight: torch.Tensor,
    gate_up_scale: torch.Tensor | None,
    down_weight: torch.Tensor,
    down_scale: torch.Tensor | None,
    eps: float,
    gemv: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output projection and residual, RMSNorm and the SiLU MLP (its residual is added by the
    next `_pre_attention`, where it fuses with the norm). `attn_more`: the next rows' attention
    (another cache pool's), joined here where the join fuses with the layout change. Scales:
    FP8 matrices' (v2bgm.engine.linear), else None."""
    if attn_more is not None:
        attn = torch.cat([attn, attn_more])
    rows, heads, length, head_dim = attn.shape
    flat = attn.transpose(1, 2).reshape(rows, length, heads * head_dim)
    h = h + linear(flat, o_weight, o_scale, gemv)
    normed = _rms_norm(h, norm, eps)
    gate, up = linear(normed, gate_up_weight, gate_up_scale, gemv).chunk(2, dim=-1)
    return h, linear(F.silu(gate) * up, down_weight, down_scale, gemv)


def _fuse(linears: list[torch.nn.Linear]) -> torch.Tensor:
    """One weight matrix for several projections of the same input; the modules' own weights
    become views of it, so the model keeps working and no weight is held twice."""
    with torch.no_grad():
        fused = torch.cat([linear.weight for linear in linears]).contiguous()
        start = 0
        for linear in linears:
            rows = linear.weight.shape[0]
            linear.weight.data = fused[start : start + rows]
            start += rows
    return fused


def _starts(parts: list[AnyPart]) -> list[tuple[AnyPart, int]]:
    out, start = [], 0
    for part in parts:
        out.append((part, start))
        start += part.rows
    return out


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`LlamaRMSNorm`: statistics in fp32, scaled in the input dtype."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _rotary_tables(model: PreTrainedModel, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [positions, D] from the model's own rotary embedding (its theta and scaling)."""
    probe = torch.zeros(1, dtype=model.dtype, device=model.device)
    ids = torch.arange(positions, device=model.device)[None]
    with torch.no_grad():
        cos, sin = model.model.rotary_emb(probe, ids)
    return cos[0].contiguous(), sin[0].contiguous()
