"""YuE's stages on the static engine against the `generate` path and the weight-streaming floor,
all in one process on one device, as a JSON report.

    python -m v2bgm.bench.engine --weights models/full --device cuda

- floor: every stage-1 weight matrix read once per step (batch-2 GEMVs, one CUDA graph): the
  fastest a CFG step of one request can be on this card;
- reference: `GenerateStage1.generate` (`transformers` `generate` with CFG, as YuE's infer.py
  calls it; v2bgm.yue.reference);
- engine: YuE's `Stage1` on the CFG decoder, 1, 4 and 16 requests decoding together;
- stage 2 for N seconds of music (one track, and both tracks), X-Codec + vocoder for N seconds;
- parity: greedy tokens of the engine against the generate path on the same weights;
- fp8: the same engine on FP8 weights (`precision: fp8`): its floors, steps, the Triton kernels
  checked against the dequantized product, and its error against bf16 (v2bgm.bench.precision).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from v2bgm import checkpoints
from v2bgm.bench import floors, precision
from v2bgm.bench.report import finish, save
from v2bgm.devices import model_dtype
from v2bgm.engine.llama import StaticLlama
from v2bgm.yue import tokens
from v2bgm.yue.composer import STAGE2_ROWS
from v2bgm.yue.reference import GenerateStage1
from v2bgm.yue.stage1 import Stage1, Stage1Settings
from v2bgm.yue.stage2 import Stage2
from v2bgm.yue.tokenizer import YuETokenizer

TAGS = "cinematic orchestral piano uplifting"
SECTIONS = tokens.split_sections(tokens.INSTRUMENTAL_LYRICS)


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Clock:
        self.sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.sync()
        self.seconds = time.perf_counter() - self.start

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def settings_for(new_tokens: int, greedy: bool = False) -> Stage1Settings:
    """Exactly `new_tokens` per request: one segment, <EOA> blocked until its end."""
    return Stage1Settings(
        max_segment_tokens=new_tokens, min_segment_tokens=new_tokens, do_sample=not greedy
    )


@torch.inference_mode()
def reference_rate(model, tokenizer, new_tokens: int, device: torch.device) -> dict:
    stage1 = GenerateStage1(model, tokenizer, settings_for(new_tokens))
    with Clock(device) as clock:
        out = stage1.generate(TAGS, SECTIONS, new_tokens // 2, seed=0)
    return {
        "tokens": out.tokens,
        "seconds": clock.seconds,
        "tokens_per_s": out.tokens / clock.seconds,
    }


@torch.inference_mode()
def engine_rate(engine: Stage1, batch: int, new_tokens: int, device: torch.device) -> dict:
    jobs = [engine.job(TAGS, SECTIONS, new_tokens // 2, seed) for seed in range(batch)]
    engine.run([engine.job(TAGS, SECTIONS, 8, seed) for seed in range(batch)])  # warm prefill
    with Clock(device) as clock:
        engine.run(jobs)
    made = sum(job.result.tokens for job in jobs)
    return {
        "requests": batch,
        "tokens": made,
        "seconds": clock.seconds,
        "tokens_per_s_total": made / clock.seconds,
        "tokens_per_s_per_request": made / batch / clock.seconds,
        "ms_per_step": 1000 * clock.seconds / (made / batch),
    }


@torch.inference_mode()
def kernel_profile(engine: Stage1, steps: int = 3, top: int = 40) -> dict:
    """Kernels of eager decoding steps of one request (graphs off: the profiler sees each)."""
    from torch.profiler import ProfilerActivity, profile

    decoder = engine.decoder
    decoder.add(engine.job(TAGS, SECTIONS, 64, 0))
    decoder.graphs.enabled = False
    decoder.step()  # warm
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            decoder.step()
    torch.cuda.synchronize()
    decoder.graphs.enabled = True
    decoder.flush()
    for row in list(decoder.rows):
        if row is not None:
            decoder._release(row)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    total_us = sum(e.device_time_total for e in events) / steps
    return {
        "kernels_per_step": sum(e.count for e in events) / steps,
        "gpu_ms_per_step": total_us / 1000,
        "top": [
            {
                "name": e.key[:80],
                "per_step": e.count / steps,
                "us_per_step": e.device_time_total / steps,
            }
            for e in events[:top]
        ],
    }


@torch.inference_mode()
def stage2_profile(engine: Stage2, frames: int = 6, top: int = 25) -> dict:
    """Kernels of eager stage-2 frames (two chunks side by side), per forward."""
    from torch.profiler import ProfilerActivity, profile

    codes = np.random.default_rng(1).integers(0, tokens.CODEBOOK_SIZE, (2, frames))
    engine.graphs.enabled = False
    engine.fill_many(list(codes))  # warm
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.fill_many(list(codes))
    torch.cuda.synchronize()
    engine.graphs.enabled = True
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    forwards = frames * (tokens.STAGE2_CODEBOOKS - 1)
    return {
        "kernels_per_forward": sum(e.count for e in events) / forwards,
        "gpu_ms_per_forward": sum(e.device_time_total for e in events) / forwards / 1000,
        "top": [
            [e.key[:70], e.count / forwards, e.device_time_total / forwards] for e in events[:top]
        ],
    }


@torch.inference_mode()
def parity(model, engine_model, tokenizer, new_tokens: int) -> dict:
    """Greedy tokens of both paths on these weights: how many agree before the first mismatch
    (bf16 rounding differs between the two paths' kernels, and random weights give flat
    distributions, so a near-tie can flip late; fp32 tiny models agree exactly in make test)."""
    s = settings_for(new_tokens, greedy=True)
    reference = GenerateStage1(model, tokenizer, s)
    expected = reference.generate(TAGS, SECTIONS, new_tokens // 2, seed=0).ids
    got = (
        Stage1(engine_model, tokenizer, s, slots=1)
        .generate(TAGS, SECTIONS, new_tokens // 2, seed=0)
        .ids
    )
    n = min(len(got), len(expected))
    mismatch = np.flatnonzero(got[:n] != expected[:n])
    prompt = len(expected) - new_tokens - 1
    agree = (mismatch[0] if len(mismatch) else n) - prompt
    return {
        "generated": new_tokens,
        "equal_prefix": int(min(agree, new_tokens)),
        "identical": not len(mismatch),
    }


@torch.inference_mode()
def stage2_seconds(engine: Stage2, seconds: float, tracks: int, device) -> dict:
    rng = np.random.default_rng(0)
    frames = math.ceil(seconds * tokens.FRAME_RATE)
    codes = [rng.integers(0, tokens.CODEBOOK_SIZE, frames) for _ in range(tracks)]
    engine.capture()  # every shape's graph, as the served composer captures them at load
    engine.fill_many([c[: tokens.STAGE2_CHUNK_FRAMES] for c in codes])  # warm-up
    with Clock(device) as clock:
        engine.fill_many(codes)
    return {"music_s": seconds, "tracks": tracks, "seconds": clock.seconds}


@torch.inference_mode()
def decode_seconds(weights: Path, seconds: float, device: str) -> dict:
    from v2bgm.yue.composer import YuEComposer, load_decoder

    composer = YuEComposer(None, None, *load_decoder(weights, device))  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    codes = rng.integers(0, tokens.CODEBOOK_SIZE, (8, math.ceil(seconds * tokens.FRAME_RATE)))
    composer.decode_tracks({"instrumental": codes})  # warm-up
    with Clock(torch.device(device)) as clock:
        audio, _ = composer.decode_tracks({"instrumental": codes})
    return {"music_s": seconds, "seconds": clock.seconds, "samples": len(audio)}


@torch.inference_mode()
def kernel_check(model: StaticLlama, rows: tuple[int, ...] = (1, 2, 4, 32)) -> dict:
    """The Triton kernels against the dequantized product, per matrix shape and row count: the
    largest error relative to the product's largest magnitude."""
    from v2bgm.engine import skinny

    worst: dict[str, float] = {}
    seen = set()
    for m in floors.fused_matrices(model):
        if m.weight.shape in seen:
            continue
        seen.add(m.weight.shape)
        dense = m.dequantized(torch.float32)
        for r in rows:
            x = torch.randn(r, m.weight.shape[1], dtype=torch.bfloat16, device=m.weight.device)
            expected = x.float() @ dense.t()
            got = skinny.linear(x, m.weight, m.scale).float()
            error = ((got - expected).abs().max() / expected.abs().max()).item()
            key = f"rows {r}"
            worst[key] = max(worst.get(key, 0.0), error)
    return worst


def greedy_agreement(a: StaticLlama, b: StaticLlama, tokenizer, new_tokens: int) -> dict:
    """Greedy tokens of the engine on two weight sets: the steps before they first differ."""
    s = settings_for(new_tokens, greedy=True)
    ids = [
        Stage1(m, tokenizer, s, slots=1).generate(TAGS, SECTIONS, new_tokens // 2, seed=0).ids
        for m in (a, b)
    ]
    n = min(map(len, ids))
    mismatch = np.flatnonzero(ids[0][:n] != ids[1][:n])
    prompt = len(ids[0]) - new_tokens - 1
    return {
        "generated": new_tokens,
        "equal_prefix": int(min((mismatch[0] if len(mismatch) else n) - prompt, new_tokens)),
    }


def fp8_report(s1, static1: StaticLlama, tokenizer, args, device, bandwidth: float) -> dict:
    """Stage 1 on FP8 weights, measured as the bf16 engine is, beside it."""
    fp8 = StaticLlama(s1, precision="fp8")
    out: dict = {"kernel_check_max_relative_error": kernel_check(fp8)}
    out["kernel_check_bf16_max_relative_error"] = kernel_check(static1)
    out["floors"] = floors.floors(fp8, None, bandwidth)
    plain = out["floors"]["plain_read_ms"]
    bf16_plain = floors.step_bytes(static1) / bandwidth * 1000
    engine = Stage1(fp8, tokenizer, settings_for(args.tokens), slots=max(args.batches))
    out["engine"] = [engine_rate(engine, b, args.tokens, device) for b in args.batches]
    del engine
    music_tokens = int(args.music_s * tokens.STAGE1_TOKENS_PER_SECOND)
    engine = Stage1(fp8, tokenizer, settings_for(music_tokens), slots=max(args.long_batches))
    out["engine_music_length"] = [
        engine_rate(engine, b, music_tokens, device) for b in args.long_batches
    ]
    del engine
    for runs, n in ((out["engine"], args.tokens), (out["engine_music_length"], music_tokens)):
        out[f"step_over_own_plain_read_{n}"] = runs[0]["ms_per_step"] / plain
        out[f"step_over_bf16_plain_read_{n}"] = runs[0]["ms_per_step"] / bf16_plain
    out["profile_eager_step_batch1"] = kernel_profile(
        Stage1(fp8, tokenizer, settings_for(args.tokens), slots=1)
    )
    out["against_bf16"] = precision.fp8_against_bf16(static1, fp8, tokenizer, args.tokens)
    out["greedy_vs_bf16_engine"] = greedy_agreement(static1, fp8, tokenizer, 64)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("models/full"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per request")
    parser.add_argument("--reference-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--music-s", type=float, default=30.0)
    parser.add_argument(
        "--long-batches", type=int, nargs="+", default=[1, 16],
        help="requests decoding --music-s of music together",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument(
        "--floors-only", action="store_true", help="measure the floors of stages 1 and 2 only"
    )
    parser.add_argument(
        "--no-fp8", action="store_true", help="skip stage 1 on FP8 weights (GPU only)"
    )
    parser.add_argument(
        "--parity-fp32", type=int, default=0, metavar="N",
        help="also compare N greedy tokens with the stage-1 weights in fp32",
    )  # fmt: skip
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = model_dtype(args.device)
    tokenizer = YuETokenizer(args.weights / checkpoints.YUE_TOKENIZER)
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    }
    s1 = AutoModelForCausalLM.from_pretrained(args.weights / checkpoints.YUE_STAGE1, dtype=dtype)
    s1 = s1.to(device).eval()
    static1 = StaticLlama(s1)
    report["floor_ms_per_cfg_step"] = None  # the unfused GEMVs (floors (3)): for continuity
    bandwidth = None
    if device.type == "cuda":  # the floors of v2bgm.bench.floors; ratios use the plain read
        bandwidth = floors.read_bandwidth(device)
        report["floors"] = {"stage1": floors.floors(static1, s1, bandwidth)}
        report["floor_ms_per_cfg_step"] = report["floors"]["stage1"]["unfused_gemv_ms"]
        report["floor_tokens_per_s"] = 1000 / report["floor_ms_per_cfg_step"]
        if args.floors_only:
            s2 = AutoModelForCausalLM.from_pretrained(
                args.weights / checkpoints.YUE_STAGE2, dtype=dtype
            ).to(device)
            report["floors"]["stage2"] = floors.floors(StaticLlama(s2.eval()), s2, bandwidth)
            fp8 = StaticLlama(s1, precision="fp8")
            report["floors"]["stage1_fp8"] = floors.floors(fp8, None, bandwidth)
            return finish(report, args.out)
    report["reference"] = reference_rate(s1, tokenizer, args.reference_tokens, device)
    engine = Stage1(static1, tokenizer, settings_for(args.tokens), slots=max(args.batches))
    report["engine"] = [engine_rate(engine, b, args.tokens, device) for b in args.batches]
    report["engine_graphs"] = len(engine.decoder.graphs)
    one = report["engine"][0]["tokens_per_s_per_request"]
    report["speedup_vs_reference"] = one / report["reference"]["tokens_per_s"]
    if report.get("floor_tokens_per_s"):
        report["fraction_of_floor"] = one / report["floor_tokens_per_s"]
    report["stage1_kv_cache_gib"] = engine.decoder.cache.nbytes / 2**30
    if "floors" in report:  # a batch-1 CFG step against reading its weights once
        plain = report["floors"]["stage1"]["plain_read_ms"]
        report[f"step_over_plain_read_{args.tokens}"] = report["engine"][0]["ms_per_step"] / plain
    del engine
    # The same at the length of the music asked for (attention grows with the cache).
    music_tokens = int(args.music_s * tokens.STAGE1_TOKENS_PER_SECOND)
    engine = Stage1(static1, tokenizer, settings_for(music_tokens), slots=max(args.long_batches))
    report["engine_music_length"] = [
        engine_rate(engine, b, music_tokens, device) for b in args.long_batches
    ]
    if "floors" in report:
        plain = report["floors"]["stage1"]["plain_read_ms"]
        one = report["engine_music_length"][0]
        report[f"step_over_plain_read_{music_tokens}"] = one["ms_per_step"] / plain
    del engine
    engine = Stage1(static1, tokenizer, settings_for(args.tokens), slots=1)
    if device.type == "cuda":
        report["profile_eager_step_batch1"] = kernel_profile(engine)
        eager = Stage1(
            StaticLlama(s1, compile=False), tokenizer, settings_for(args.tokens), slots=1
        )
        report["engine_without_compile_batch1"] = engine_rate(eager, 1, args.tokens, device)
        del eager
        triton_gemv = Stage1(
            StaticLlama(s1, gemv="triton"), tokenizer, settings_for(args.tokens), slots=1
        )  # the other kernel for bf16's products of few rows (V2BGM_GEMV), for the ratio
        report["engine_triton_gemv_batch1"] = engine_rate(triton_gemv, 1, args.tokens, device)
        del triton_gemv
    del engine
    report["parity_greedy_bf16"] = parity(s1, static1, tokenizer, 64)
    save(report, args.out)  # so far, should a later part fail
    if device.type == "cuda" and not args.no_fp8:
        report["fp8"] = fp8_report(s1, static1, tokenizer, args, device, bandwidth)
        torch.cuda.empty_cache()
        save(report, args.out)
    if args.parity_fp32:  # the same weights in fp32: rounding no longer decides near-ties
        del s1, static1
        torch.cuda.empty_cache()
        s1 = (
            AutoModelForCausalLM.from_pretrained(
                args.weights / checkpoints.YUE_STAGE1, dtype=torch.float32
            )
            .to(device)
            .eval()
        )
        report["parity_greedy_fp32"] = parity(
            s1, StaticLlama(s1, compile=False), tokenizer, args.parity_fp32
        )
        del s1
        torch.cuda.empty_cache()
    s2 = AutoModelForCausalLM.from_pretrained(args.weights / checkpoints.YUE_STAGE2, dtype=dtype)
    static2 = StaticLlama(s2.to(device).eval())
    if bandwidth is not None:
        report["floors"]["stage2"] = floors.floors(static2, s2, bandwidth)
    stage2 = Stage2(static2, rows=STAGE2_ROWS)  # as served
    stage2_seconds(stage2, args.music_s, 1, device)  # compiles for these shapes
    report["stage2"] = [stage2_seconds(stage2, args.music_s, t, device) for t in (1, 2)]
    if device.type == "cuda":
        report["profile_eager_stage2"] = stage2_profile(stage2)
    report["decode"] = decode_seconds(args.weights, args.music_s, args.device)
    if device.type == "cuda":
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return finish(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
