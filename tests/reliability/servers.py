"""Dedicated tritonservers for the reliability tests: these overload, kill and fuzz a server, so
each gets its own, started as the session fixture starts the shared one (tests/conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from v2bgm_contract import interface as contract

from tests.conftest import ROOT, free_port
from v2bgm.serve import TritonServer
from v2bgm.triton import model_configs

READY_TIMEOUT_S = 300.0
# The admin key of these servers: the tests that reload a model or read statistics send it.
ADMIN_KEY = "reliability-tests-admin-key"


def render_repository(
    out: Path, models: tuple[str, ...], changes: dict[str, dict[str, Any]] | None = None
) -> Path:
    """A model repository holding `models` (by name), their configs rendered by the real renderer
    with the `model_configs.PythonModel` fields that `changes` gives per model (queue, slots...);
    the real repository is left alone."""
    changes = changes or {}
    for model in model_configs.PYTHON_MODELS:
        name = model.spec.name
        if name not in models:
            continue
        shutil.copytree(ROOT / "model_repository" / name / "1", out / name / "1")
        model = replace(model, **changes.get(name, {}))
        for kind, relative in (
            ("KIND_GPU", "config.pbtxt"),
            ("KIND_CPU", f"configs/{model_configs.CPU_CONFIG_NAME}.pbtxt"),
        ):
            path = out / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(model_configs.python_model_config(model, kind))
    if contract.PIPELINE_MODEL in models:  # the ensemble's steps must be there too
        (out / contract.PIPELINE_MODEL / "1").mkdir(parents=True)
        (out / contract.PIPELINE_MODEL / "config.pbtxt").write_text(model_configs.pipeline_config())
    if contract.STREAM_MODEL in models:  # it calls the captioner and the composer
        shutil.copytree(
            ROOT / "model_repository" / contract.STREAM_MODEL / "1",
            out / contract.STREAM_MODEL / "1",
        )
        (out / contract.STREAM_MODEL / "config.pbtxt").write_text(model_configs.stream_config())
    return out


def start_server(
    repository: Path,
    weights: Path,
    log_path: Path,
    extra_args: list[str] | None = None,
    open_admin: bool = False,
) -> TritonServer:
    """A ready tritonserver; its administrative APIs need ADMIN_KEY, or, with `open_admin`,
    are open to every caller as Triton leaves them (to show what the restriction refuses)."""
    triton = TritonServer(
        repository=repository,
        weights=weights,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        admin_key=ADMIN_KEY,
        open_admin=open_admin,
        gpu=False,
        extra_args=extra_args or [],
        home=ROOT / ".cache" / "pytriton_wheel",
        log_path=log_path,
    )
    triton.start()
    try:
        triton.wait_ready(timeout_s=READY_TIMEOUT_S)
    except Exception:
        triton.stop()
        print(log_path.read_text()[-5000:])
        raise
    return triton


@dataclass
class Launched:
    """`v2bgm-serve` (the image's entrypoint) running on the tiny models."""

    process: subprocess.Popen
    grpc_url: str
    http_port: int
    metrics_port: int
    stderr: Path

    @property
    def server_pid(self) -> int:
        from tests.reliability.probes import tritonserver_of

        return tritonserver_of(self.process.pid)

    def next_line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()


def launch_serve(weights: Path, repository: Path, stderr: Path, *args: str) -> Launched:
    """`v2bgm-serve` on `repository` with fresh ports, once it says it is ready."""
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    process = subprocess.Popen(
        [sys.executable, "-m", "v2bgm.serve", "--device", "cpu", "--weights", str(weights),
         "--model-repository", str(repository), "--ready-timeout", str(READY_TIMEOUT_S),
         "--triton-home", str(ROOT / ".cache" / "pytriton_wheel"),
         *(f"--{name}-port={port}" for name, port in ports.items()), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True,
    )  # fmt: skip
    url = f"127.0.0.1:{ports['grpc']}"
    launched = Launched(process, url, ports["http"], ports["metrics"], stderr)
    line = launched.next_line()
    assert "ready on CPU" in line, (line, stderr.read_text()[-3000:])
    return launched


def stop_launched(process: subprocess.Popen, wait_s: float = 60.0) -> None:
    """SIGTERM, then SIGKILL past `wait_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
