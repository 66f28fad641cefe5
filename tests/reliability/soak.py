"""`make soak`: 1,000 ensemble requests (both models) to the tiny models on a dedicated server.

Measures the resident memory of tritonserver and of each Python-backend stub (/proc) after a
warm-up and at the end, and every `--sample-every` requests between; fails (exit 1) unless every
request was answered, none failed other than by a rejection, and no process grew more than 10 %
after the warm-up. Prints a JSON summary: sent, answered, ok, rejected, errors by gRPC code,
seconds, requests per minute, and memory per process. If tritonserver dies, it stops at once and
says so ("tritonserver died (signal 11) after N requests answered") and fails.

    python -m tests.reliability.soak [--requests 1000] [--concurrency 4] [--warmup 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.conftest import ROOT, TINY_WEIGHTS
from tests.reliability.probes import stub_pids

REQUESTS = 1000
CONCURRENCY = 4  # the composer's CPU slots; the captioner batches them (up to 8 a batch)
WARMUP = 100  # requests answered before the baseline: caches, allocator pools, lazy imports
SAMPLE_EVERY = 100
MAX_GROWTH = 0.10  # after the warm-up, per process
FRAMES_SHAPE = (1, 32, 32, 3)  # one small frame: the captioner's cost is its generation
MUSIC_S = 1.0  # the shortest the interface allows
REQUEST_TIMEOUT_S = 600.0
REJECTED = "UNAVAILABLE"  # a full queue or no free composer slot: shed, not failed
KIB = 1024
THREADS_ENV = "OMP_NUM_THREADS"
INSTANCE_ARG = 8  # the stub's model instance name, e.g. music_composer_0_0
POLL_S = 0.5  # how often a wait for answers checks that tritonserver still runs


class ServerDied(RuntimeError):
    """tritonserver exited during the soak."""


def death_message(code: int, answered: int) -> str:
    """'tritonserver died (signal 11) after N requests answered', from its exit code."""
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    with contextlib.suppress(ValueError):
        how = f"signal {-code}, {signal.Signals(-code).name}" if code < 0 else how
    return f"tritonserver died ({how}) after {answered} requests answered"


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise ValueError(f"no VmRSS for pid {pid}")


def processes(server_pid: int) -> dict[str, int]:
    """tritonserver and its stubs by name (the stub's model instance), to their pids."""
    named = {"tritonserver": server_pid}
    for pid in stub_pids(server_pid):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        named[args[INSTANCE_ARG].decode()] = pid
    return named


def growth(before: int, after: int) -> float:
    return (after - before) / before


def over_limit(before: dict[str, int], after: dict[str, int], limit: float) -> dict[str, float]:
    """The processes whose memory grew more than `limit` (a fraction), or that vanished."""
    return {
        name: growth(before[name], after[name]) if name in after else float("inf")
        for name in before
        if name not in after or growth(before[name], after[name]) > limit
    }


@dataclass
class Tally:
    """Answers as they come, from gRPC callback threads."""

    codes: Counter = field(default_factory=Counter)
    answered_event: threading.Condition = field(default_factory=threading.Condition)

    def add(self, code: str) -> None:
        with self.answered_event:
            self.codes[code] += 1
            self.answered_event.notify_all()

    @property
    def answered(self) -> int:
        return sum(self.codes.values())

    def wait_for(self, count: int, timeout_s: float, alive: Callable[[], None]) -> bool:
        """Until `count` requests are answered (True) or `timeout_s` passed (False); `alive`
        is called every POLL_S and raises when the server died."""
        deadline = time.monotonic() + timeout_s
        with self.answered_event:
            while self.answered < count:
                alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.answered_event.wait(min(left, POLL_S))
            return True


def request_inputs(index: int) -> list:
    """The ensemble's inputs for request `index`: its own frames and seed."""
    from v2bgm_client import api as client_api

    rng = np.random.default_rng(index)
    frames = rng.integers(0, 256, FRAMES_SHAPE, dtype=np.uint8)
    request = client_api.build_request(frames, 1.0, MUSIC_S, seed=index)
    return client_api.infer_inputs(request)


def run(args: argparse.Namespace) -> dict:
    import tritonclient.grpc as grpcclient
    from v2bgm_contract import interface as contract

    from tests.reliability.servers import start_server

    log = Path(tempfile.mkdtemp(prefix="v2bgm-soak-")) / "tritonserver.log"
    server = start_server(ROOT / "model_repository", args.weights, log)
    assert server.process is not None
    died: str | None = None
    baseline: dict[str, int] = {}
    warm_at = start = time.monotonic()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tally = Tally()
    samples: list[dict] = []
    try:
        outputs = [grpcclient.InferRequestedOutput(s.name) for s in contract.PIPELINE.outputs]
        slots = threading.Semaphore(args.concurrency)

        def answered(result: object, error: object) -> None:
            tally.add("OK" if error is None else error.status().rsplit(".", 1)[-1])
            slots.release()

        def alive() -> None:
            code = server.process.poll()
            if code is not None:
                raise ServerDied(death_message(code, tally.answered))

        def sample(label: str) -> dict[str, int]:
            alive()
            try:
                named = processes(server.process.pid).items()
                memory = {name: rss_bytes(pid) for name, pid in named}
            except (OSError, ValueError):  # a process vanished: the server's death is the news
                alive()
                raise
            samples.append({"after_requests": label, "rss_mib": mib(memory)})
            print(f"soak: {label} answered, {tally.codes}, {mib(memory)}", file=sys.stderr)
            return memory

        for index in range(args.requests):
            while not slots.acquire(timeout=POLL_S):
                alive()
            client.async_infer(
                contract.PIPELINE_MODEL,
                request_inputs(index),
                callback=answered,
                outputs=outputs,
                client_timeout=REQUEST_TIMEOUT_S,
            )
            sent = index + 1
            between = args.warmup < sent < args.requests and sent % args.sample_every == 0
            if sent == args.warmup or between:
                tally.wait_for(sent, REQUEST_TIMEOUT_S, alive)  # quiet: all sent are answered
                memory = sample(str(sent))
                if sent == args.warmup:
                    baseline, warm_at = memory, time.monotonic()
        all_answered = tally.wait_for(args.requests, REQUEST_TIMEOUT_S, alive)
        final = sample(str(args.requests)) if all_answered else {}
    except ServerDied as exc:
        died, final = str(exc), {}
        print(f"soak: {died}", file=sys.stderr)
    finally:
        elapsed = time.monotonic() - start
        client.close()
        server.stop()
    errors = {code: n for code, n in tally.codes.items() if code not in ("OK", REJECTED)}
    grown = over_limit(baseline, final, args.max_growth)
    return {
        "died": died,
        "sent": args.requests,
        "answered": tally.answered,
        "ok": tally.codes["OK"],
        "rejected": tally.codes[REJECTED],
        "errors_by_code": errors,
        "concurrency": args.concurrency,
        "warmup_requests": args.warmup,
        "seconds": round(elapsed, 1),
        "seconds_after_warmup": round(time.monotonic() - warm_at, 1),
        "requests_per_min": round(60 * tally.answered / elapsed, 1),
        "rss_mib": {
            name: memory_report(before, final.get(name)) for name, before in baseline.items()
        },
        "samples": samples,
        "max_growth_pct": 100 * args.max_growth,
        "passed": died is None and tally.answered == args.requests and not errors and not grown,
        "over_limit": grown,
        "server_log": str(log),
    }


def memory_report(before: int, after: int | None) -> dict[str, float | None]:
    return {
        "after_warmup": round(before / KIB / KIB, 1),
        "at_end": None if after is None else round(after / KIB / KIB, 1),
        "growth_pct": None if after is None else round(100 * growth(before, after), 2),
    }


def mib(memory: dict[str, int]) -> dict[str, float]:
    return {name: round(value / KIB / KIB, 1) for name, value in memory.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--sample-every", type=int, default=SAMPLE_EVERY)
    parser.add_argument("--max-growth", type=float, default=MAX_GROWTH)
    parser.add_argument("--weights", type=Path, default=TINY_WEIGHTS)
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.requests:
        parser.error("--warmup must be positive and below --requests")
    return args


def main(argv: list[str] | None = None) -> int:
    # One intra-op thread per stub (inherited by the server): the captioner and the composer
    # then run side by side on 2 cores, 1.5 requests/s instead of 1.3 (memory is not affected).
    os.environ.setdefault(THREADS_ENV, "1")
    summary = run(parse_args(argv))
    print(json.dumps(summary, indent=2))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
