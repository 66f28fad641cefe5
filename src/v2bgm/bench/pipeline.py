"""The served pipeline on a GPU: videos of 10/30/60 s through Triton over gRPC, one at a time and
many at once, with the GPU memory every process holds.

    python -m v2bgm.bench.pipeline --weights models/full --out out/

Its cold start too: `ready_s` (start to ready), each model's cold-start line from the server log
(`cold_start`: seconds and host-memory peak per phase, v2bgm.triton.coldstart) and the host memory
of tritonserver and of each Python-backend stub from /proc/PID/status (`host_memory_mib`: VmHWM,
the process's peak so far, at ready and at the end of the run). `--device cpu` runs the same on
the CPU (small weights and short videos: `--weights models/tiny --durations 5 --concurrent 2
--concurrent-s 5`).

Many at once (`--concurrent`, `--concurrent-s`): what finished within `--deadline-s`, and every
5 s how many requests each stage had finished (`timeline`), so a run that does not finish still
says where its requests were; the benchmark stops its server itself either way.

The request is what the client sends for a video (`build_request`: one frame per second, 448x252,
random pixels so VideoLLaMA3 keeps every visual token: its worst case); the time is the gRPC call,
caption to 44.1 kHz music. The client's own work (decoding frames, muxing) runs where the client
runs; `python -m v2bgm.bench.client` measures it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from v2bgm_contract import interface as contract

from v2bgm.serve import STUB_NAME, TritonServer, stub_args
from v2bgm.triton import coldstart

ROOT = Path(__file__).resolve().parents[3]
FRAME_SHAPE = (252, 448, 3)  # a 16:9 video after the client's resize
TIMEOUT_S = 900
TIMELINE_STEP_S = 5.0  # how often the concurrent run reads where its requests are


def request(seconds: float, seed: int) -> list[grpcclient.InferInput]:
    frames = np.random.default_rng(seed).integers(0, 256, (int(seconds), *FRAME_SHAPE), np.uint8)
    values = {
        contract.FRAMES.name: frames[None],
        contract.FPS.name: np.array([[contract.SAMPLE_FPS]], np.float32),
        contract.DURATION_S.name: np.array([[seconds]], np.float32),
        contract.SEED.name: np.array([[seed]], np.int64),
    }
    specs = {t.name: t for t in contract.PIPELINE.inputs}
    tensors = []
    for name, value in values.items():
        tensor = grpcclient.InferInput(name, list(value.shape), specs[name].datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def call(url: str, seconds: float, seed: int) -> dict:
    client = grpcclient.InferenceServerClient(url)
    start = time.perf_counter()
    result = client.infer(contract.PIPELINE_MODEL, request(seconds, seed), client_timeout=TIMEOUT_S)
    took = time.perf_counter() - start
    rate = int(result.as_numpy(contract.SAMPLE_RATE.name).flat[0])
    audio_s = result.as_numpy(contract.AUDIO.name).size / rate
    return {"video_s": seconds, "seconds": round(took, 2), "audio_s": round(audio_s, 3)}


def stage_totals(text: str) -> dict[str, tuple[float, float]]:
    """(seconds, requests) per stage so far, summed over models, from /metrics' text."""
    from v2bgm.triton.metrics import STAGE_SECONDS

    sums: dict[str, list[float]] = {}
    pattern = re.compile(rf'^{STAGE_SECONDS}_(sum|count)\{{.*stage="(\w+)".*\}} ([0-9.e+-]+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            kind, stage, value = match.groups()
            sums.setdefault(stage, [0.0, 0.0])[kind == "count"] += float(value)
    return {stage: (total, count) for stage, (total, count) in sums.items()}


def read_totals(port: int) -> dict[str, tuple[float, float]]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return stage_totals(response.read().decode())


def stage_means(port: int) -> dict[str, float]:
    """Mean seconds per stage over every request so far, from the server's own histograms."""
    totals = read_totals(port)
    return {stage: round(total / count, 2) for stage, (total, count) in totals.items() if count}


def concurrent_run(url: str, port: int, count: int, seconds: float, deadline_s: float) -> dict:
    """`count` calls at once; what finished within `deadline_s`, and every TIMELINE_STEP_S how
    many requests each stage has finished since the start (from the server's histograms): where
    the requests are, should they not all finish."""
    base = read_totals(port)
    pool = ThreadPoolExecutor(count)
    start = time.perf_counter()
    futures: list[Future] = [pool.submit(call, url, seconds, 100 + i) for i in range(count)]
    pending, timeline, last = set(futures), [], start
    while pending and time.perf_counter() - start < deadline_s:
        done, pending = wait(pending, timeout=TIMELINE_STEP_S)
        if done:
            last = time.perf_counter()
        totals = read_totals(port)
        finished = {
            stage: int(n - base.get(stage, (0.0, 0.0))[1]) for stage, (_, n) in totals.items()
        }
        timeline.append({"t_s": round(time.perf_counter() - start, 1), "stages_done": finished})
    pool.shutdown(wait=False, cancel_futures=True)  # the server's stop ends the calls left
    results = [f.result() for f in futures if f.done() and f.exception() is None]
    errors = [repr(f.exception()) for f in futures if f.done() and f.exception() is not None]
    wall = (last if not pending else time.perf_counter()) - start
    return {
        "requests": count,
        "video_s": seconds,
        "finished": len(results),
        "failed": errors,
        "unfinished_at_deadline": len(pending),
        "wall_s": round(wall, 2),
        "each_s": [r["seconds"] for r in results],
        "music_s_per_wall_s": round(sum(r["audio_s"] for r in results) / wall, 3),
        "timeline": timeline,
    }


def timed_alone(url: str, port: int, seconds: float, seed: int) -> dict:
    """`call`, with the seconds each stage spent on it (the server's histograms before and after;
    nothing else runs meanwhile) and the rest of the call's time: queues, transfers, hand-offs."""
    before = read_totals(port)
    result = call(url, seconds, seed)
    after = read_totals(port)
    stages = {
        stage: round(total - before.get(stage, (0.0, 0.0))[0], 2)
        for stage, (total, _) in after.items()
        if total > before.get(stage, (0.0, 0.0))[0]
    }
    result["stages_s"] = stages
    result["outside_stages_s"] = round(result["seconds"] - sum(stages.values()), 2)
    return result


def host_memory(
    server_pid: int,
    stubs: Callable[[int], dict[int, list[str]]] = stub_args,
    proc: Path = Path("/proc"),
) -> dict[str, dict[str, int]]:
    """tritonserver's memory and each of its Python-backend stubs', by model (a stub's command
    line names its model.py: .../MODEL/VERSION/model.py), in MiB from /proc/PID/status."""
    found = {"tritonserver": coldstart.memory_mib(server_pid, proc)}
    for pid, args in sorted(stubs(server_pid).items()):
        model = Path(args[1]).parent.parent.name if len(args) > 1 else STUB_NAME
        found[model if model not in found else f"{model} (pid {pid})"] = coldstart.memory_mib(
            pid, proc
        )
    return found


class MemoryWatch:
    """The most GPU memory (MiB) each process held while the watch ran (nvidia-smi, 0.5 s)."""

    def __init__(self) -> None:
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        query = [
            "nvidia-smi",
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ]
        while not self.stop.wait(0.5):
            out = subprocess.run(query, capture_output=True, text=True, check=False).stdout
            for line in out.strip().splitlines():
                pid, mib = (p.strip() for p in line.split(","))
                self.peak[pid] = max(self.peak.get(pid, 0), int(mib))


def save(report: dict, out: Path) -> None:
    """Write the report so far: a run cut by a time limit still leaves what it measured."""
    text = json.dumps(report, indent=1)
    (out / "bench_pipeline.json").write_text(text + "\n")
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "models" / "full")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    parser.add_argument("--concurrent", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--concurrent-s", type=float, default=30.0, help="their video length")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument(
        "--deadline-s", type=float, default=600.0,
        help="stop waiting for the concurrent requests after this long (the report says how "
        "many finished and where the others were)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = args.device == "gpu"
    log_path = args.out / "tritonserver.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0  # the server appends to it
    server = TritonServer(
        repository=ROOT / "model_repository",
        weights=args.weights,
        gpu=gpu,
        log_path=log_path,
        home=ROOT / ".cache" / "pytriton_wheel",
    )
    report: dict = {"gpu": subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True, text=True, check=False).stdout.strip() if gpu else None}  # fmt: skip
    started = time.perf_counter()
    server.start()
    assert server.process is not None
    try:
        server.wait_ready(900)
        report["ready_s"] = round(time.perf_counter() - started, 1)  # loading + warm-up
        report["host_memory_mib"] = {"at_ready": host_memory(server.process.pid)}
        with log_path.open("rb") as log:  # this run's cold-start lines
            log.seek(log_start)
            report["cold_start"] = coldstart.read_lines(log.read().decode(errors="replace"))
        save(report, args.out)
        url = f"127.0.0.1:{server.grpc_port}"
        with MemoryWatch() if gpu else contextlib.nullcontext() as memory:
            # first request: anything not warmed up yet (its time says how much that is)
            report["first_call"] = call(url, 10.0, 99)
            save(report, args.out)
            report["one_at_a_time"] = []
            for i, seconds in enumerate(args.durations):
                report["one_at_a_time"].append(timed_alone(url, server.metrics_port, seconds, i))
                save(report, args.out)
            report["concurrent"] = concurrent_run(
                url, server.metrics_port, args.concurrent, args.concurrent_s, args.deadline_s
            )
        if memory is not None:
            report["gpu_memory_peak_mib"] = memory.peak
        report["stage_mean_s"] = stage_means(server.metrics_port)
        report["host_memory_mib"]["at_end"] = host_memory(server.process.pid)
    finally:
        report["exit_code"] = server.stop()
        save(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
