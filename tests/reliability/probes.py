"""What the reliability tests read off a running server: its Python-backend stub processes
(/proc) and its metrics."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from v2bgm_contract import interface as contract

STUB = "triton_python_backend_stub"
SERVER_COMM = "tritonserver"
PARENT_PID_ARG = 5  # the stub's arguments: model.py, shm region, two sizes, the server's pid, ...
IN_FLIGHT_WAIT_S = 300.0  # a request reaches the composer within this, even on a loaded machine


def stub_pids(server_pid: int, model: str | None = None) -> list[int]:
    """The live Python-backend stubs that tritonserver `server_pid` started (for `model`, or
    all): their command line names the server's pid, so they are found even once orphaned."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if (
            STUB in args[0].decode(errors="replace")
            and len(args) > PARENT_PID_ARG
            and args[PARENT_PID_ARG] == str(server_pid).encode()
            and (model is None or any(f"/{model}/".encode() in arg for arg in args))
        ):
            pids.append(int(entry.name))
    return pids


def tritonserver_of(launcher_pid: int) -> int:
    """The tritonserver that `v2bgm-serve` process `launcher_pid` runs (its child); raises
    ValueError while there is none (between a restart's kill and start)."""
    path = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
    children = [int(child) for child in path.read_text().split()]
    (pid,) = (child for child in children if _comm(child) == SERVER_COMM)
    return pid


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # gone meanwhile
        return ""


def metric(metrics_port: int, name: str, model: str) -> float:
    """The value of `name`{model=...} on the metrics port (0 when the series is absent)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf'^{name}{{model="{model}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_until_composing(metrics_port: int, requests: int = 1) -> None:
    """Until the composer is computing `requests` requests."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT_S
    while metric(metrics_port, "v2bgm_requests_in_generation", contract.COMPOSER_MODEL) < requests:
        assert time.monotonic() < deadline, "the requests never reached the composer"
        time.sleep(0.1)
