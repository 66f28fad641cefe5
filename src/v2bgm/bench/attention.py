"""Decode-step attention over the engine's cache layout: SDPA against plain batched matmuls.

    python -m v2bgm.bench.attention --device cuda

One query position per row (a decoding step), YuE stage 1's heads (32 query, 4 KV, dim 128),
rows reading slots of a [slots, kv_heads, length, dim] pool through views, as
`v2bgm.engine.llama.StaticLlama` does. Times 32 layers' worth of calls inside one CUDA graph, for
several cache lengths: SDPA (cuDNN/flash kernels) parallelises over (rows x heads) only, so one
request's step scans thousands of keys on a few dozen thread blocks; two GEMMs and a softmax
spread the keys over the whole card.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from v2bgm.engine.llama import attention_probs, decode_attention

HEADS, KV_HEADS, DIM, LAYERS = 32, 4, 128, 32


def sdpa(q, keys, values, mask, scale):
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)


def timed(fn, args, iters: int = 20) -> float:
    """ms for LAYERS calls, replayed as one CUDA graph."""
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(LAYERS):
            fn(*args)
    graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        graph.replay()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / iters


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 16, 32])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 3072, 6144, 12288])
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16
    group, scale = HEADS // KV_HEADS, DIM**-0.5
    pool_len = max(args.lengths)
    slots = max(args.rows)
    k = torch.randn(slots, KV_HEADS, pool_len, DIM, dtype=dtype, device=device)
    v = torch.randn_like(k)
    report = {"device": torch.cuda.get_device_name(device), "layers": LAYERS, "rows": []}
    for rows in args.rows:
        for length in args.lengths:
            q = torch.randn(rows, KV_HEADS, group, DIM, dtype=dtype, device=device)
            keys, values = k[:rows, :, :length], v[:rows, :, :length]
            seen = torch.arange(length, device=device) <= length - 5
            mask = torch.where(seen, 0.0, float("-inf")).to(dtype)
            mask = mask.expand(rows, 1, group, length)
            compiled = torch.compile(attention_probs, dynamic=True, fullgraph=True)

            def fused(q, keys, values, mask, scale, compiled=compiled):
                return decode_attention(q, keys, values, mask, scale, compiled)

            a = sdpa(q, keys, values, mask, scale)
            b = decode_attention(q, keys, values, mask, scale)
            entry = {
                "rows": rows,
                "kv_len": length,
                "sdpa_ms": round(timed(sdpa, (q, keys, values, mask, scale)), 4),
                "matmul_ms": round(timed(decode_attention, (q, keys, values, mask, scale)), 4),
                "matmul_compiled_ms": round(timed(fused, (q, keys, values, mask, scale)), 4),
                "max_abs_diff": float((a.float() - b.float()).abs().max()),
            }
            print(json.dumps(entry), flush=True)
            report["rows"].append(entry)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
