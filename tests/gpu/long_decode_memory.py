"""GPU check of decoding long music: X-Codec and the vocoder at full size (random weights), a
track decoded whole against window by window (`v2bgm.yue.windows`); not in `make test`.

    PYTHONPATH=src:contract:client:. python tests/gpu/long_decode_memory.py --out $OUT

Not yet run on a GPU (the session that wrote it had no device time left); on the CPU,
`--device cpu --size tiny --seconds 400` checks it runs.

Prints and writes a JSON report: per length, each decoder's peak CUDA memory above what the
models hold and its seconds, whole and windowed, and how far the windowed audio is from the
whole track's (largest difference over the largest sample).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import XcodecModel

from export.weights import Size
from export.xcodec import randomize_codebooks, xcodec_config
from export.yue_vocoder import vocoder_config
from v2bgm.yue.codec import XcodecDecoder
from v2bgm.yue.tokens import FRAME_RATE
from v2bgm.yue.vocos import VocosDecoder
from v2bgm.yue.windows import decode_in_windows

SECONDS = (30.0, 300.0, 1200.0)
CODEBOOKS = 8  # what stage 2 makes


def measure(
    cuda: bool, decode: Callable[..., np.ndarray], *args: object
) -> tuple[np.ndarray | None, dict]:
    """`decode(*args)`'s audio (None: out of memory) and its cost (peak memory on a GPU only)."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter()
    try:
        audio = decode(*args)
    except torch.OutOfMemoryError as exc:
        return None, {"error": str(exc).splitlines()[0]}
    cost: dict = {}
    if cuda:
        torch.cuda.synchronize()
        cost["peak_gib"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 2)
    cost["seconds"] = round(time.perf_counter() - clock, 2)
    return audio, cost


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--size", type=Size, default=Size.FULL)
    parser.add_argument("--seconds", type=float, nargs="+", default=list(SECONDS))
    parser.add_argument("--device", default="cuda")  # "cpu": a smoke run, times only
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    xcodec = XcodecModel(xcodec_config(args.size)).to(device, torch.float32).eval()
    randomize_codebooks(xcodec)
    codec = XcodecDecoder(xcodec)
    vocoder = VocosDecoder(vocoder_config(args.size)).to(device, torch.float32).eval()
    hop16, hop44 = codec.sample_rate // FRAME_RATE, vocoder.config.hop_length

    @torch.inference_mode()
    def vocode(codes: np.ndarray) -> np.ndarray:
        return vocoder(codec.embeddings(codes)).float().cpu().numpy()[0]

    name = torch.cuda.get_device_name() if cuda else "cpu"
    report: dict = {"device": name, "size": args.size.value, "torch": torch.__version__}
    rng = np.random.default_rng(0)
    for seconds in args.seconds:
        codes = rng.integers(0, 1024, (CODEBOOKS, int(seconds * FRAME_RATE)))
        row: dict = {}
        for name, decode, hop in (("xcodec", codec.decode, hop16), ("vocoder", vocode, hop44)):
            whole, row[f"{name}_whole"] = measure(cuda, decode, codes)
            parts, row[f"{name}_windowed"] = measure(cuda, decode_in_windows, decode, codes, hop)
            if whole is not None and parts is not None:
                assert len(whole) == len(parts), (len(whole), len(parts))
                scale = float(np.abs(whole).max()) or 1.0
                row[f"{name}_max_diff_rel"] = float(np.abs(whole - parts).max() / scale)
        report[f"{seconds:g}s"] = row
        print(f"{seconds:g} s: {json.dumps(row)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_decode_memory.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
