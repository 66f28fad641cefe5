"""The composer's decoding (X-Codec + vocoder + recombination) in torch against ONNX Runtime, for
N seconds of music of one track, in one process, as a JSON report.

    python -m v2bgm.bench.decode_onnx --weights models/full --device cuda --music-s 30

- torch: `YuEComposer.decode_tracks` as served (`load_decoder` on --device, fp32 as the
  composer loads X-Codec and the vocoder), whole and by part (X-Codec, vocoder);
- onnxruntime: the graphs of `v2bgm.yue.onnx_export`, exported here from a CPU copy of the same
  weights, on every execution provider `onnxruntime.get_available_providers()` lists (each with
  the CPU provider behind it for nodes it lacks), the same decode around them (clamp, recombine);
- max |ONNX - torch| of the 16 kHz audio, the 44.1 kHz stem and the final mix, and each signal's
  peak, so the difference reads as a fraction of it.

Imports only what the composer's decoding needs (torch, transformers' XcodecModel, numpy, yaml),
so it runs under the GPU machine's stock Python with PYTHONPATH=src.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from v2bgm.bench.report import finish
from v2bgm.yue import onnx_export, tokens
from v2bgm.yue.composer import CLAMP, YuEComposer, load_decoder
from v2bgm.yue.postprocess import recombine

TRACK = "instrumental"  # background music: one track


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def timed(
    fn: Callable[[], object], device: torch.device, repeats: int
) -> tuple[object, list[float]]:
    """fn() once to warm up, then `repeats` timed calls (synchronised on a GPU): last result, s."""
    fn()
    runs = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        runs.append(time.perf_counter() - start)
    return result, runs


def summary(runs: list[float]) -> dict:
    return {"seconds": min(runs), "median_s": statistics.median(runs), "runs": runs}


def torch_decode(weights: Path, device: str, codes: np.ndarray, repeats: int) -> dict:
    """The served decoding on `device`: results and timings, whole and by part."""
    composer = YuEComposer(None, None, *load_decoder(weights, device))  # type: ignore[arg-type]
    dev = torch.device(device)
    (mix, stems), runs = timed(lambda: composer.decode_tracks({TRACK: codes}), dev, repeats)
    low, low_runs = timed(lambda: composer.codec.decode(codes), dev, repeats)
    vocode = lambda: composer.upsampler(composer.codec.embeddings(codes), track=TRACK)[0]  # noqa: E731
    _, vocoder_runs = timed(vocode, dev, repeats)
    report = {
        "device": device,
        "dtype": str(next(composer.codec.model.parameters()).dtype).removeprefix("torch."),
        **summary(runs),
        "parts_s": {"xcodec": min(low_runs), "vocoder": min(vocoder_runs)},
    }
    signals = {"audio_16k": np.asarray(low), "audio_44k": stems[TRACK], "mix": mix}
    return {"report": report, "signals": signals}


def onnx_decode(decoder: onnx_export.OnnxTrackDecoder, codes: np.ndarray) -> dict:
    """`YuEComposer.decode_tracks` for one track, the ONNX graphs in place of torch modules."""
    low, stem = decoder(codes, TRACK)
    mix = recombine(np.clip(low, -CLAMP, CLAMP), np.clip(stem, -CLAMP, CLAMP))
    return {"audio_16k": low, "audio_44k": stem, "mix": mix}


def provider_run(
    folder: Path, provider: str, codes: np.ndarray, reference: dict, repeats: int
) -> dict:
    providers = (
        [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    )
    try:
        decoder = onnx_export.OnnxTrackDecoder.from_folder(folder, providers)
    except Exception as error:  # a provider listed but unusable here (missing libraries)
        return {"error": f"{type(error).__name__}: {error}"}
    cpu = torch.device("cpu")
    signals, runs = timed(lambda: onnx_decode(decoder, codes), cpu, repeats)
    _, low_runs = timed(lambda: decoder.xcodec_decode(codes), cpu, repeats)
    embeddings = decoder.xcodec_decode(codes)[1]
    _, vocoder_runs = timed(lambda: decoder.vocode(embeddings, TRACK), cpu, repeats)
    diff = {}
    for name, ref in reference.items():
        got = signals[name]  # type: ignore[index]
        n = min(len(got), len(ref))
        diff[name] = {
            "max_abs_diff": float(np.max(np.abs(got[:n] - ref[:n]))),
            "peak": float(np.max(np.abs(ref))),
            "samples": [len(got), len(ref)],
        }
    return {
        "session_providers": decoder.xcodec.get_providers(),
        **summary(runs),
        "parts_s": {"xcodec": min(low_runs), "vocoder": min(vocoder_runs)},
        "parity": diff,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("models/full"))
    parser.add_argument("--device", default="cuda", help="torch's device")
    parser.add_argument("--music-s", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--onnx-dir", type=Path, help="keep the .onnx files here (else a temp dir)")
    parser.add_argument(
        "--torch-cpu", action="store_true",
        help="also time torch on the CPU (the same hardware as ONNX Runtime's CPU provider)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    import onnxruntime

    rng = np.random.default_rng(0)
    frames = math.ceil(args.music_s * tokens.FRAME_RATE)
    codes = rng.integers(0, tokens.CODEBOOK_SIZE, (tokens.STAGE2_CODEBOOKS, frames))
    dev = torch.device(args.device)
    report: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "available_providers": onnxruntime.get_available_providers(),
        "music_s": args.music_s,
        "frames": frames,
        "track": TRACK,
    }
    ref = torch_decode(args.weights, args.device, codes, args.repeats)
    report["torch"] = ref["report"]
    if args.torch_cpu and dev.type != "cpu":
        report["torch_cpu"] = torch_decode(args.weights, "cpu", codes, args.repeats)["report"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.onnx_dir or Path(tmp)
        start = time.perf_counter()
        paths = onnx_export.export_all(args.weights, folder, "cpu", tracks=[TRACK])
        report["export_s"] = time.perf_counter() - start
        report["onnx_mib"] = {k: p.stat().st_size / 2**20 for k, p in paths.items()}
        report["onnxruntime"] = {
            provider: provider_run(folder, provider, codes, ref["signals"], args.repeats)
            for provider in report["available_providers"]
        }
    timings = {"torch": report["torch"]["seconds"]} | {
        provider: r["seconds"] for provider, r in report["onnxruntime"].items() if "seconds" in r
    }
    report["fastest"] = min(timings, key=timings.__getitem__)
    report["seconds_by_runtime"] = timings
    return finish(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
