"""Faults on a dedicated server (these tests break it): a Python-backend stub killed mid-request,
what Triton 2.51 reports about it, the image's health check (docker/health.py) that sees it, and
`v2bgm-serve`, which restarts the server."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_contract import interface as contract

from tests.conftest import ROOT
from tests.reliability.probes import stub_pids, wait_until_composing
from tests.reliability.servers import (
    ADMIN_KEY,
    Launched,
    launch_serve,
    render_repository,
    start_server,
    stop_launched,
)
from v2bgm import admin_api
from v2bgm.serve import SHM_DIR, STUB_SHM_ARG, TritonServer, stub_args

pytestmark = pytest.mark.server

ADMIN = admin_api.grpc_headers(ADMIN_KEY)  # model control is an administrative API

ZOMBIE = "Z"
UNANSWERED_S = 20.0  # a killed stub's request is answered at once; this long means never
REQUEST_TIMEOUT_S = 300.0  # so that a request left unanswered does not outlive the test


def load_health():
    """docker/health.py (v2bgm-health in the image), a script rather than a package module."""
    spec = importlib.util.spec_from_file_location("v2bgm_health", ROOT / "docker" / "health.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


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

    client.async_infer(
        contract.COMPOSER_MODEL,
        compose_inputs(duration_s),
        callback=callback,
        client_timeout=REQUEST_TIMEOUT_S,
    )
    return done, answer


@pytest.fixture
def server(weights: Path, tmp_path: Path) -> Iterator[TritonServer]:
    repo = render_repository(tmp_path / "repo", (contract.COMPOSER_MODEL,))
    # Explicit model control, for the reload that recovers a killed stub (never exposed in
    # production: see docs/security.md).
    control = ["--model-control-mode=explicit", f"--load-model={contract.COMPOSER_MODEL}"]
    triton = start_server(repo, weights, tmp_path / "tritonserver.log", control)
    yield triton
    triton.stop(timeout_s=5)  # a broken server may sit out its exit timeout: no need


def kill_stub(server: TritonServer, model: str) -> int:
    assert server.process is not None
    return kill_pid(server.process.pid, model)


def kill_pid(server_pid: int, model: str) -> int:
    """SIGKILL the stub of `model` of tritonserver `server_pid`; its pid."""
    (stub,) = stub_pids(server_pid, model)
    os.kill(stub, signal.SIGKILL)
    return stub


@pytest.fixture
def launcher(weights: Path, tmp_path: Path, monkeypatch) -> Iterator[Callable[..., Launched]]:
    """`v2bgm-serve` (the image's entrypoint) on a repository holding the composer alone."""
    repo = render_repository(tmp_path / "repo", (contract.COMPOSER_MODEL,))
    started: list[subprocess.Popen] = []
    monkeypatch.setenv("V2BGM_STARTING_FILE", str(tmp_path / "starting"))

    def start(*args: str) -> Launched:
        launched = launch_serve(weights, repo, tmp_path / f"serve{len(started)}.err", *args)
        started.append(launched.process)
        return launched

    yield start
    for process in started:
        stop_launched(process)


def test_a_stub_death_restarts_the_server_and_its_request_gets_an_error(launcher, monkeypatch):
    """Triton 2.51 alone never answers the requests of a composer stub that died (they are held by
    response senders): v2bgm-serve sees the dead stub, kills tritonserver (the caller gets
    UNAVAILABLE at once) and starts it again; `live` passes while it reloads, `ready` fails; then
    the same address serves again."""
    health = load_health()
    launched = launcher()
    monkeypatch.setenv("V2BGM_HTTP_PORT", str(launched.http_port))
    monkeypatch.setenv("V2BGM_DRAIN_FILE", str(launched.stderr.parent / "no-drain"))
    first_server = launched.server_pid
    (dead_region,) = (
        SHM_DIR / Path(args[STUB_SHM_ARG]).name for args in stub_args(first_server).values()
    )
    client = grpcclient.InferenceServerClient(launched.grpc_url)
    client.infer(contract.COMPOSER_MODEL, compose_inputs(1.0))  # loaded and warm
    done, answer = start_request(client, 20.0)
    wait_until_composing(launched.metrics_port)
    kill_pid(first_server, contract.COMPOSER_MODEL)
    assert done.wait(UNANSWERED_S), "the request of a killed stub was never answered"
    (error,) = answer
    assert isinstance(error, InferenceServerException), error
    assert error.status() == "StatusCode.UNAVAILABLE", error
    starting = restart_begun(launched)
    assert health.check("live") is None  # reloading: alive, not ready
    assert health.check("ready") is not None
    assert "ready again" in launched.next_line()
    assert "died: restarting tritonserver" in stderr_of(launched)
    assert launched.server_pid != first_server
    assert not dead_region.exists()  # the dead stub's shared memory went with its server
    assert not starting.exists()
    assert health.check("ready") is None
    again = grpcclient.InferenceServerClient(launched.grpc_url)
    assert again.infer(contract.COMPOSER_MODEL, compose_inputs(1.0)).as_numpy("AUDIO").size > 0
    assert launched.process.poll() is None


def test_without_restarts_a_stub_death_stops_the_launcher(launcher):
    """`--no-restart`: the launcher kills tritonserver (the request in flight gets an error at
    once), leaves no stub and exits 1, for an orchestrator to restart it."""
    launched = launcher("--no-restart")
    server = launched.server_pid
    client = grpcclient.InferenceServerClient(launched.grpc_url)
    done, answer = start_request(client, 20.0)
    wait_until_composing(launched.metrics_port)
    kill_pid(server, contract.COMPOSER_MODEL)
    assert done.wait(UNANSWERED_S), "the request of a killed stub was never answered"
    (error,) = answer
    assert isinstance(error, InferenceServerException), error
    assert launched.process.wait(UNANSWERED_S) == 1
    assert "restarts off" in stderr_of(launched)
    assert stub_pids(server) == []


def test_sigterm_while_restarting_stops_the_launcher_cleanly(launcher):
    """A stop signal during the restart's reload ends it: exit 0, no stub of either server."""
    launched = launcher()
    first_server = launched.server_pid
    kill_pid(first_server, contract.COMPOSER_MODEL)
    starting = restart_begun(launched)
    second_server = new_server(launched, first_server)
    launched.process.send_signal(signal.SIGTERM)
    assert launched.process.wait(UNANSWERED_S) == 0, stderr_of(launched)
    assert stub_pids(first_server) == [] and stub_pids(second_server) == []
    assert not starting.exists()


def restart_begun(launched: Launched) -> Path:
    """Wait until the launcher writes its starting file (the restart then loads the models for
    seconds, even tiny ones); the file."""
    starting = Path(os.environ["V2BGM_STARTING_FILE"])
    deadline = time.monotonic() + UNANSWERED_S
    while not starting.exists():
        assert time.monotonic() < deadline, stderr_of(launched)
        time.sleep(0.02)
    return starting


def new_server(launched: Launched, old: int) -> int:
    """The tritonserver the launcher started after `old` (the starting file comes first)."""
    deadline = time.monotonic() + UNANSWERED_S
    while True:
        with contextlib.suppress(ValueError):  # none yet
            if (pid := launched.server_pid) != old:
                return pid
        assert time.monotonic() < deadline, stderr_of(launched)
        time.sleep(0.02)


def stderr_of(launched: Launched) -> str:
    return launched.stderr.read_text()


def test_a_dead_stub_is_reported_by_the_health_check_and_an_explicit_reload_recovers(
    server, monkeypatch
):
    """What Triton 2.51 does after a stub dies: every later request to that model gets INTERNAL
    "Stub process ... is not healthy" at once (no hang); it does not start a new stub by itself,
    nor reap the dead one (a zombie child), and it keeps reporting the server and the model
    ready: so the image's health check (docker/health.py) looks for the dead stub itself.
    Unloading and loading the model (model control, explicit mode: tests only) starts a new
    stub."""
    health = load_health()
    monkeypatch.setenv("V2BGM_HTTP_PORT", str(server.http_port))
    monkeypatch.setenv("V2BGM_DRAIN_FILE", str(Path(server.repository) / "no-drain"))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    client.infer(contract.COMPOSER_MODEL, compose_inputs(1.0))  # loaded and warm
    assert health.check("ready") is None
    stub = kill_stub(server, contract.COMPOSER_MODEL)
    start = time.monotonic()
    with pytest.raises(InferenceServerException, match="not healthy"):
        client.infer(contract.COMPOSER_MODEL, compose_inputs(1.0), client_timeout=60)
    assert time.monotonic() - start < 10  # answered at once, not queued behind a dead stub
    assert client.is_server_live()
    # Triton 2.51 still reports everything ready, and leaves the stub a zombie child.
    assert client.is_server_ready() and client.is_model_ready(contract.COMPOSER_MODEL)
    (index,) = client.get_model_repository_index(headers=ADMIN).models
    assert (index.name, index.state) == (contract.COMPOSER_MODEL, "READY")
    assert process_state(stub) == ZOMBIE
    problem = health.check("ready")
    assert problem is not None and f"stub process {stub} died" in problem, problem
    assert health.main(["ready"]) == 1
    assert health.check("live") is None  # the server itself is alive
    # Loading a loaded model with an unchanged config keeps the dead stub: unload first.
    client.unload_model(contract.COMPOSER_MODEL, headers=ADMIN)
    deadline = time.monotonic() + 60
    while client.is_model_ready(contract.COMPOSER_MODEL) and time.monotonic() < deadline:
        time.sleep(0.2)
    client.load_model(
        contract.COMPOSER_MODEL, headers=ADMIN
    )  # a new stub, the weights loaded again
    result = client.infer(contract.COMPOSER_MODEL, compose_inputs(1.0), client_timeout=120)
    assert result.as_numpy("AUDIO").size > 0
    # The zombie outlives the reload (Triton never reaps it), so the health check keeps failing
    # until the server restarts: the only recovery in production (model control mode none).
    assert process_state(stub) == ZOMBIE and health.main(["ready"]) == 1
    assert client.is_server_ready() and client.is_model_ready(contract.COMPOSER_MODEL)
