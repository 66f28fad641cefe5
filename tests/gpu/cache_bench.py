"""Stage 1 at the music's length with many requests: the paged cache against the code before it.

Runs against whichever `v2bgm` is first on the path, so the same file times the commit before
the paged cache (its `src/` put first on PYTHONPATH) and this one, one process after the
other on the same card in one device call (tests/gpu/README.md). Full-size stage-1 weights,
bf16, CUDA graphs, `settings_for` as `python -m v2bgm.bench.engine` uses it; per batch of
requests x 3,000 tokens (30 s of music): tokens/s, ms per step, the step against reading the
weights once (`v2bgm.bench.floors`), the cache's bytes and the peak CUDA memory. Where the
paged kernel exists, it is also checked against attention over the gathered keys (bf16) and
timed against `decode_attention` on a contiguous pool of the same length.

    python tests/gpu/cache_bench.py --weights models/full --out $OUT/cache_new.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

import v2bgm
from v2bgm import checkpoints
from v2bgm.bench import floors
from v2bgm.bench.engine import engine_rate, settings_for
from v2bgm.engine.llama import StaticLlama
from v2bgm.yue import tokens
from v2bgm.yue.stage1 import Stage1
from v2bgm.yue.tokenizer import YuETokenizer


def cache_bytes(engine: Stage1) -> int:
    decoder = engine.decoder
    if hasattr(decoder, "cache"):
        return decoder.cache.nbytes
    return decoder.cond.nbytes + decoder.uncond.nbytes


def kernel_case(model: StaticLlama, rows: int, length: int) -> dict:
    """The paged kernel against attention over the same keys gathered (error), and against
    `decode_attention` on a contiguous pool (time of a step's worth of calls, one per layer,
    in a CUDA graph), for `rows` rows at `length` keys each."""
    from v2bgm.engine.llama import decode_attention
    from v2bgm.engine.paged import PAGE, PagedCache
    from v2bgm.engine.paged_attention import paged_decode_attention

    device, dtype = model.device, model.dtype
    kv_heads, dim, group = model.kv_heads, model.head_dim, model.heads // model.kv_heads
    layers = len(model.layers)
    c = PagedCache(1, rows * -(-length // PAGE) + 8, rows, kv_heads, dim, length + 1, dtype,
                   device)  # fmt: skip
    c.kv.normal_()
    for r in range(rows):
        c.allocate(r, length + 1)
    pos = torch.full((rows, 1), length, device=device)
    q = torch.randn(rows, kv_heads, group, dim, device=device, dtype=dtype)
    pages = c.table[:rows]
    got = paged_decode_attention(q, c.kv[0], pages, pos, dim**-0.5)
    keys, values = c.gather(0, pages, length + 1)
    keys, values = keys.contiguous(), values.contiguous()
    mask = torch.zeros(rows, 1, group, length + 1, device=device, dtype=dtype)
    want = decode_attention(q, keys, values, mask, dim**-0.5)

    def paged() -> None:
        for _ in range(layers):
            paged_decode_attention(q, c.kv[0], pages, pos, dim**-0.5)

    def gemm() -> None:
        for _ in range(layers):
            decode_attention(q, keys, values, mask, dim**-0.5)

    return {
        "max_abs_error_vs_gathered": float((got.float() - want.float()).abs().max()),
        "paged_ms_per_step": floors.graph_ms(paged),
        "decode_attention_ms_per_step": floors.graph_ms(gemm),
    }


def kernel_report(model: StaticLlama, lengths: tuple[int, ...] = (3000, 8000)) -> dict:
    out = {}
    for rows in (2, 32, 64):
        for length in lengths:
            out[f"rows{rows}_keys{length}"] = kernel_case(model, rows, length)
            torch.cuda.empty_cache()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("models/full"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--music-s", type=float, default=30.0)
    parser.add_argument("--cache-gib", type=float, default=None, help="paged code only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device("cuda")
    report: dict = {
        "device": torch.cuda.get_device_name(device),
        "v2bgm": str(Path(v2bgm.__file__).parent),
        "torch": torch.__version__,
    }
    start = time.perf_counter()
    s1 = (
        AutoModelForCausalLM.from_pretrained(
            args.weights / checkpoints.YUE_STAGE1, dtype=torch.bfloat16
        )
        .to(device)
        .eval()
    )
    static1 = StaticLlama(s1)
    tokenizer = YuETokenizer(args.weights / checkpoints.YUE_TOKENIZER)
    bandwidth = floors.read_bandwidth(device)
    plain_ms = floors.step_bytes(static1) / bandwidth * 1000
    report["read_bandwidth_tb_s"] = bandwidth / 1e12
    report["plain_read_ms"] = plain_ms
    report["load_s"] = time.perf_counter() - start
    paged = "cache_positions" in inspect.signature(Stage1).parameters
    if paged:
        report["kernel"] = kernel_report(static1)
    music_tokens = int(args.music_s * tokens.STAGE1_TOKENS_PER_SECOND)
    extra = {}
    if paged and args.cache_gib is not None:
        extra["cache_positions"] = int(args.cache_gib * 2**30) // static1.position_bytes()
    engine = Stage1(static1, tokenizer, settings_for(music_tokens), slots=max(args.batches),
                    **extra)  # fmt: skip
    report["cache_gib"] = cache_bytes(engine) / 2**30
    rates = []
    for batch in args.batches:
        torch.cuda.reset_peak_memory_stats(device)
        rate = engine_rate(engine, batch, music_tokens, device)
        rate["step_over_plain_read"] = rate["ms_per_step"] / plain_ms
        rate["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        rates.append(rate)
        print(json.dumps(rate), flush=True)
        args.out.write_text(json.dumps({**report, "engine_music_length": rates}, indent=1))
    report["engine_music_length"] = rates
    report["graphs"] = len(engine.decoder.graphs)
    report["seconds"] = time.perf_counter() - start
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
