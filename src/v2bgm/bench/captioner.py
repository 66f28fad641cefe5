"""How long VideoLLaMA3 takes to watch a video, at batch 1 and at the dynamic batcher's sizes.

    python -m v2bgm.bench.captioner --weights models/full --device cuda

Frames are what the client sends: 1 per second, 448x252 (a 16:9 video resized), random pixels so
that token compression keeps every visual token (the worst case). Each configuration is run once
after a warm-up at each length; the report gives seconds per call, per video, visual tokens and
peak memory.

On a GPU it also gives the language model's decoding floor (key `decoder`, as
`v2bgm.bench.floors` does for YuE): every byte a batch-1 decoding step reads (its layers, final
norm and lm_head; not the embedding table) over the card's measured read bandwidth, beside the
milliseconds a step of `generate` takes (greedy, text only: two lengths, so that the prefill
cancels out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from v2bgm.videollama3.captioner import CaptionRequest, VideoCaptioner

FRAME_SIZE = (252, 448)  # H, W after the client's resize
DEFAULT_PLAN = {30: (1, 2, 4, 8), 60: (1, 2, 4), 180: (1, 2, 4)}


def frames(seconds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (seconds, *FRAME_SIZE, 3), dtype=np.uint8)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(captioner: VideoCaptioner, seconds: int, batch: int, device: str) -> dict:
    requests = [CaptionRequest(frames(seconds, i), 1.0) for i in range(batch)]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    descriptions = captioner.describe_batch(requests)
    sync(device)
    elapsed = time.perf_counter() - start
    report = {
        "video_s": seconds,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "seconds_per_video": round(elapsed / batch, 3),
        "generated_tokens": [d.tokens for d in descriptions],
    }
    if device.startswith("cuda"):
        report["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return report


@torch.inference_mode()
def decoder_floor(captioner: VideoCaptioner, short: int = 16, long: int = 144) -> dict:
    """ms per batch-1 decoding step of the captioner's language model: its plain-read floor
    and what `generate` takes (the difference of a `long` and a `short` run, per token)."""
    from v2bgm.bench import floors

    model = captioner.model
    language = model.get_decoder()
    weights = [p for name, p in language.named_parameters() if "embed_tokens" not in name]
    nbytes = sum(p.numel() * p.element_size() for p in weights)
    nbytes += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    bandwidth = floors.read_bandwidth(model.device)
    ids = captioner.processor.tokenizer("Describe the music of a quiet harbour at dawn.",
                                        return_tensors="pt").input_ids.to(model.device)  # fmt: skip

    def seconds(new: int) -> float:
        sync("cuda")
        start = time.perf_counter()
        model.generate(input_ids=ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       pad_token_id=captioner.parts.eos)  # fmt: skip
        sync("cuda")
        return time.perf_counter() - start

    seconds(short)  # warm-up, at both lengths (a first long run was 2.7-3.7x slower per step)
    seconds(long)
    step = (seconds(long) - seconds(short)) / (long - short) * 1000
    plain = nbytes / bandwidth * 1000
    return {
        "step_weight_gb": round(nbytes / 1e9, 3),
        "read_tb_per_s": round(bandwidth / 1e12, 3),
        "plain_read_ms": round(plain, 3),
        "generate_ms_per_step": round(step, 3),
        "step_over_plain_read": round(step / plain, 2),
    }


def visual_tokens(captioner: VideoCaptioner, seconds: int) -> int:
    processor = captioner.processor
    video = frames(seconds, 0)
    out = processor.video_processor(videos=[video], return_tensors="pt")
    grid = out["video_grid_thw"][0]
    merge = processor.video_processor.merge_size
    return int(grid.prod()) // (merge * merge)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m v2bgm.bench.captioner")
    parser.add_argument("--weights", type=Path, default=Path("models/full"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--plan", nargs="+", metavar="SECONDS:B,B", default=None,
        help="videos of SECONDS at batch sizes B (default: 30:1,2,4,8 60:1,2,4 180:1,2,4)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    plan = DEFAULT_PLAN
    if args.plan:
        plan = {
            int(seconds): tuple(int(b) for b in batches.split(","))
            for seconds, batches in (item.split(":") for item in args.plan)
        }
    start = time.perf_counter()
    captioner = VideoCaptioner.from_pretrained(args.weights, args.device)
    report: dict = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "load_s": round(time.perf_counter() - start, 1),
        "runs": [],
    }
    for seconds in plan:  # warm-up: a video's first length pays its shapes' first-call costs
        run(captioner, seconds, 1, args.device)
    report["max_frames_per_forward"] = captioner.max_frames_per_forward
    if args.device.startswith("cuda"):
        report["decoder"] = decoder_floor(captioner)
        print(json.dumps(report["decoder"]), flush=True)
    for seconds, batches in plan.items():
        report.setdefault("visual_tokens_per_video", {})[seconds] = visual_tokens(
            captioner, seconds
        )
        for batch in batches:
            try:
                report["runs"].append(run(captioner, seconds, batch, args.device))
            except torch.OutOfMemoryError:
                report["runs"].append(
                    {"video_s": seconds, "batch": batch, "error": "out of memory"}
                )
                torch.cuda.empty_cache()
            print(json.dumps(report["runs"][-1]), flush=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
