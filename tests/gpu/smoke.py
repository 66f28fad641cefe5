"""GPU smoke run of the served pipeline: tiny models, KIND_GPU configs, real gRPC.

Run on the lent GPU machine after tests/gpu/setup_device.sh (not part of `make test`):
    python tests/gpu/smoke.py --out $OUT
Prints and writes a JSON report: timings per call and the GPU memory of each stub process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from v2bgm_contract import interface as contract

from v2bgm.serve import TritonServer

ROOT = Path(__file__).resolve().parents[2]


def inputs(**arrays: np.ndarray) -> list[grpcclient.InferInput]:
    specs = {t.name: t for m in contract.MODELS.values() for t in m.inputs}
    out = []
    for name, value in arrays.items():
        tensor = grpcclient.InferInput(name, list(value.shape), specs[name].datatype)
        tensor.set_data_from_numpy(value)
        out.append(tensor)
    return out


def gpu_processes() -> str:
    query = ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv"]
    return subprocess.run(query, capture_output=True, text=True, check=False).stdout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--weights", type=Path, default=ROOT / "models" / "tiny")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = TritonServer(
        repository=ROOT / "model_repository",
        weights=args.weights,
        gpu=True,
        log_path=args.out / "tritonserver.log",
        home=ROOT / ".cache" / "pytriton_wheel",
    )
    report: dict = {}
    started = time.monotonic()
    server.start()
    try:
        server.wait_ready(600)
        report["ready_s"] = round(time.monotonic() - started, 1)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        frames = np.random.default_rng(0).integers(0, 256, (30, 252, 448, 3), dtype=np.uint8)
        calls = {
            "captioner_30_frames": (contract.CAPTIONER_MODEL, inputs(
                FRAMES=frames, FPS=np.array([1.0], np.float32))),
            "composer_10s": (contract.COMPOSER_MODEL, inputs(
                TAGS=np.array([b"pop piano calm"], np.object_),
                DURATION_S=np.array([10.0], np.float32), SEED=np.array([1], np.int64))),
            "ensemble_30s": (contract.PIPELINE_MODEL, inputs(
                FRAMES=frames, FPS=np.array([1.0], np.float32),
                DURATION_S=np.array([30.0], np.float32), SEED=np.array([1], np.int64))),
        }  # fmt: skip
        for name, (model, tensors) in calls.items():
            t0 = time.monotonic()
            result = client.infer(model, tensors, client_timeout=600)
            report[name] = {"seconds": round(time.monotonic() - t0, 2)}
            if model != contract.CAPTIONER_MODEL:
                rate = int(result.as_numpy("SAMPLE_RATE")[0])
                report[name]["audio_s"] = len(result.as_numpy("AUDIO")) / rate
            if model != contract.COMPOSER_MODEL:
                report[name]["tags"] = result.as_numpy("TAGS")[0].decode()
        report["gpu_processes"] = gpu_processes()
    finally:
        report["exit_code"] = server.stop()
    log = (args.out / "tritonserver.log").read_text()
    report["instances_on_gpu"] = [line for line in log.splitlines() if "loading" in line]
    text = json.dumps(report, indent=1)
    (args.out / "gpu_smoke.json").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
