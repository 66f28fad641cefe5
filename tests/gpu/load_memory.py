"""Host memory and time of loading each checkpoint onto a device, the previous way (the whole model
on the host, then `.to(device)`) against `device_map` (`v2bgm.devices.placed_on`, as served),
each load in a fresh process:

    python tests/gpu/load_memory.py --weights models/full --device cuda:0 --out $OUT
    python tests/gpu/load_memory.py --weights /tmp/full --device cpu --only yue-s2 --dtype bfloat16

Per part and path: seconds, the process's VmHWM after the load, the peaks of RssAnon (its own
memory) and RssFile (mapped file pages) sampled every 5 ms, and on a GPU the CUDA memory
allocated. JSON lines on stdout, all of them in OUT/load_memory.json. (The machine's own Python
is enough: PYTHONPATH=src:contract.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

PARTS = ("yue-s2", "xcodec", "yue-vocoder", "yue-s1", "videollama3")
PATHS = ("old", "device_map")


def status_mib() -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "RssAnon", "RssFile"):
            found[name] = int(value.split()[0]) // 1024
    return found


def load_one(weights: Path, part: str, path: str, device: str, dtype_name: str | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, VideoLlama3ForConditionalGeneration, XcodecModel

    from v2bgm.devices import model_dtype, placed_on
    from v2bgm.yue.vocoder import CONFIG_FILE, DECODER_FILES, Upsampler
    from v2bgm.yue.vocos import VocosConfig, VocosDecoder

    with torch.device("meta"):
        torch.nn.Linear(1, 1)  # the meta context's one-time set-up, which a stub pays anyway
    peak = {"RssAnon": 0, "RssFile": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = status_mib()
            for key in peak:
                peak[key] = max(peak[key], now[key])
            time.sleep(0.005)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    before = status_mib()
    folder = weights / part
    dtype = getattr(torch, dtype_name) if dtype_name else model_dtype(device)
    start = time.perf_counter()
    if part == "yue-vocoder":
        dtype = torch.float32
        if path == "device_map":
            Upsampler.from_pretrained(folder, device)
        else:  # the loader before device_map: built on the host, each state read whole
            config = VocosConfig.from_yaml(folder / CONFIG_FILE)
            for name in DECODER_FILES.values():
                decoder = VocosDecoder(config)
                state = torch.load(folder / name, map_location="cpu", weights_only=True)
                decoder.load_state_dict(state, strict=True)
                decoder.to(device=device, dtype=torch.float32)
    else:
        cls = {
            "yue-s1": AutoModelForCausalLM,
            "yue-s2": AutoModelForCausalLM,
            "xcodec": XcodecModel,
            "videollama3": VideoLlama3ForConditionalGeneration,
        }[part]
        dtype = torch.float32 if part == "xcodec" else dtype
        if path == "device_map":
            cls.from_pretrained(folder, dtype=dtype, **placed_on(device))
        else:
            cls.from_pretrained(folder, dtype=dtype).to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    time.sleep(0.02)
    stop.set()
    watcher.join()
    report = {
        "part": part,
        "path": path,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": round(seconds, 2),
        "before_mib": before,
        "vm_hwm_mib": status_mib()["VmHWM"],
        "peak_rss_anon_mib": peak["RssAnon"],
        "peak_rss_file_mib": peak["RssFile"],
    }
    if device.startswith("cuda"):
        report["cuda_allocated_mib"] = torch.cuda.memory_allocated() // 2**20
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("models/full"))
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--dtype", default=None, help="default: the device's (bf16 on a GPU)")
    parser.add_argument("--only", action="append", choices=PARTS, help="repeatable")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("PART", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        report = load_one(args.weights, *args.one, args.device, args.dtype)
        print(json.dumps(report), flush=True)
        return 0
    reports = []
    for part in args.only or PARTS:
        if not (args.weights / part).exists():
            print(f"{args.weights / part}: missing, skipped", file=sys.stderr)
            continue
        for path in PATHS:
            command = [
                sys.executable,
                __file__,
                "--one",
                part,
                path,
                "--weights",
                str(args.weights),
            ]
            command += ["--device", args.device] + (["--dtype", args.dtype] if args.dtype else [])
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(reports[-1]), flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "load_memory.json").write_text(json.dumps(reports, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
