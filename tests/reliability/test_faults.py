"""Faults on a dedicated server (this test breaks it): a Python-backend stub killed mid-request."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_client import interface as api

from tests.reliability.servers import render_repository, start_server
from v2bgm.serve import TritonServer

pytestmark = pytest.mark.server

STUB = "triton_python_backend_stub"
IN_GENERATION_S = 1.0  # after sending: the request has reached the stub (it runs for seconds)


def stub_pids(server_pid: int, model: str) -> list[int]:
    """The Python-backend stub processes serving `model`: children of tritonserver (/proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if (
            ppid == server_pid
            and STUB in cmdline[0].decode(errors="replace")
            and any(f"/{model}/".encode() in arg for arg in cmdline)
        ):
            pids.append(int(entry.name))
    return pids


def compose_inputs(duration_s: float) -> list[grpcclient.InferInput]:
    inputs = []
    for name, value, dtype in [
        ("TAGS", np.array([[b"pop piano calm"]], np.object_), "BYTES"),
        ("DURATION_S", np.array([[duration_s]], np.float32), "FP32"),
    ]:
        tensor = grpcclient.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def start_request(client, duration_s: float) -> tuple[threading.Event, list]:
    done, answer = threading.Event(), []

    def callback(result: object, error: InferenceServerException | None) -> None:
        answer.append(error if error is not None else result)
        done.set()

    client.async_infer(api.COMPOSER_MODEL, compose_inputs(duration_s), callback=callback)
    return done, answer


@pytest.fixture
def server(weights: Path, tmp_path: Path) -> Iterator[TritonServer]:
    repo = render_repository(tmp_path / "repo", (api.COMPOSER_MODEL,))
    # Explicit model control, for the reload that recovers a killed stub (never exposed in
    # production: see README, "Security").
    control = ["--model-control-mode=explicit", f"--load-model={api.COMPOSER_MODEL}"]
    triton = start_server(repo, weights, tmp_path / "tritonserver.log", control)
    yield triton
    triton.stop(timeout_s=5)  # a broken server may sit out its exit timeout: no need


def test_killed_stub_fails_its_request_and_an_explicit_reload_recovers(server):
    """What Triton 2.51 does: the request in flight gets INTERNAL "Stub process ... is not
    healthy", and so does every later request to that model, at once (no hang); it does not
    start a new stub by itself. Unloading and loading it (model control) starts a new stub."""
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    client.infer(api.COMPOSER_MODEL, compose_inputs(1.0))  # loaded and warm
    assert server.process is not None
    (stub,) = stub_pids(server.process.pid, api.COMPOSER_MODEL)
    done, answer = start_request(client, 20.0)
    time.sleep(IN_GENERATION_S)
    os.kill(stub, signal.SIGKILL)
    assert done.wait(60), "the request of a killed stub was never answered"
    (error,) = answer
    assert isinstance(error, InferenceServerException), error
    assert error.status() == "StatusCode.INTERNAL" and "not healthy" in error.message(), error
    start = time.monotonic()
    with pytest.raises(InferenceServerException, match="not healthy"):
        client.infer(api.COMPOSER_MODEL, compose_inputs(1.0), client_timeout=60)
    assert time.monotonic() - start < 10  # answered at once, not queued behind a dead stub
    assert client.is_server_live()
    # Loading a loaded model with an unchanged config keeps the dead stub: unload first.
    client.unload_model(api.COMPOSER_MODEL)
    deadline = time.monotonic() + 60
    while client.is_model_ready(api.COMPOSER_MODEL) and time.monotonic() < deadline:
        time.sleep(0.2)
    client.load_model(api.COMPOSER_MODEL)  # a new stub, the weights loaded again
    result = client.infer(api.COMPOSER_MODEL, compose_inputs(1.0), client_timeout=120)
    assert result.as_numpy("AUDIO").size > 0
    assert client.is_server_ready() and client.is_model_ready(api.COMPOSER_MODEL)
