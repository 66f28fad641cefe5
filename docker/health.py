#!/usr/bin/env python3
"""`v2bgm-health live|ready [--model NAME]`: exit 0 when Triton's health endpoint answers 200.

Used by the image's HEALTHCHECK, the chart's readiness probe and its `helm test` pod. `ready`
also fails while the drain file exists: the chart's preStop hook creates it, so the pod turns
unready (and leaves the Service) before SIGTERM makes Triton stop taking new requests.
`--model NAME` asks for that model's readiness instead of the server's.

`ready` also fails while a Python-backend stub of the server on this HTTP port is dead. Triton
2.51 keeps answering ready (server and model) after a stub dies, while every request to that
model fails at once with "Stub process ... is not healthy"; it neither restarts nor reaps the
stub, which stays a zombie child of tritonserver (tests/reliability/test_faults.py). Only a
restart of the server recovers it (the model control API is off; even an explicit-mode reload
leaves the zombie, so this check fails until the restart): `v2bgm-serve` does that restart by
itself. While it (re)starts tritonserver it keeps a starting file holding the time by which the
server must be ready: `live` passes until then (a restart reloads weights for minutes; the
liveness probe must not kill the pod meanwhile), `ready` fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ENDPOINTS = {"live": "/v2/health/live", "ready": "/v2/health/ready"}
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = "8000"
DEFAULT_DRAIN_FILE = "/tmp/v2bgm-draining"
TIMEOUT_S = 3.0
HTTP_OK = 200
PROC = Path("/proc")
SERVER_COMM = "tritonserver"
STUB_COMM = "triton_python_b"  # triton_python_backend_stub, cut to the kernel's 15 characters
DEAD_STATES = ("Z", "X")  # zombie (exited, not reaped), dead
DEFAULT_STARTING_FILE = "/tmp/v2bgm-starting"  # v2bgm.serve.DEFAULT_STARTING_FILE


def http_port() -> str:
    return os.environ.get("V2BGM_HTTP_PORT", DEFAULT_HTTP_PORT)


def url_for(kind: str, model: str | None) -> str:
    host = os.environ.get("V2BGM_HTTP_HOST", DEFAULT_HTTP_HOST)
    port = http_port()
    path = f"/v2/models/{model}/ready" if model else ENDPOINTS[kind]
    return f"http://{host}:{port}{path}"


def process_stat(pid_dir: Path) -> tuple[str, str, int] | None:
    """(comm, state, parent pid) from /proc/PID/stat; None if the process is gone."""
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
    return comm, state, int(ppid)


def serves_port(pid_dir: Path, port: str) -> bool:
    """Is this tritonserver the one on HTTP `port`? (without --http-port it is on 8000)"""
    try:
        args = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    ports = [a.split("=", 1)[1] for a in args if a.startswith("--http-port=")]
    return (ports[-1] if ports else DEFAULT_HTTP_PORT) == port


def dead_stubs(port: str, proc: Path = PROC) -> list[int]:
    """Pids of the dead Python-backend stubs of the tritonserver on HTTP `port`."""
    stats = {}
    for pid_dir in proc.iterdir():
        if pid_dir.name.isdigit() and (stat := process_stat(pid_dir)) is not None:
            stats[int(pid_dir.name)] = stat
    servers = {
        pid
        for pid, (comm, _, _) in stats.items()
        if comm == SERVER_COMM and serves_port(proc / str(pid), port)
    }
    return sorted(
        pid
        for pid, (comm, state, ppid) in stats.items()
        if comm == STUB_COMM and ppid in servers and state in DEAD_STATES
    )


def check(kind: str, model: str | None = None) -> str | None:
    """None when healthy, else why not."""
    drain_file = Path(os.environ.get("V2BGM_DRAIN_FILE", DEFAULT_DRAIN_FILE))
    if kind == "ready" and drain_file.exists():
        return f"draining ({drain_file} exists)"
    url = url_for(kind, model)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        if kind == "live" and starting():
            return None
        return f"{url}: {exc}"
    if status != HTTP_OK:
        return f"{url}: HTTP {status}"
    dead = dead_stubs(http_port()) if kind == "ready" else []
    if dead:
        pids = ", ".join(map(str, dead))
        return f"Python-backend stub process {pids} died; restart the server to recover"
    return None


def starting() -> bool:
    """Is v2bgm-serve (re)starting tritonserver, within the time it allows itself?"""
    path = Path(os.environ.get("V2BGM_STARTING_FILE", DEFAULT_STARTING_FILE))
    try:
        return time.time() < float(path.read_text())
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v2bgm-health", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(ENDPOINTS))
    parser.add_argument("--model", help="this model's readiness instead of the server's")
    args = parser.parse_args(argv)
    problem = check(args.kind, args.model)
    if problem:
        print(f"v2bgm-health: not {args.kind}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
