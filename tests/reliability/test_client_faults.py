"""The CLI, as a user runs it (a separate process), against a server that is down, and against
one that crashes (SIGKILL) mid-request and stays down past the client's restart wait: one clear
error line, no traceback, a non-zero exit, no output; run again once the server is back on the
same ports, it is served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from v2bgm_client.retry import RESTART_WAIT_ENV

from tests import videos
from tests.conftest import ROOT, free_port
from tests.reliability.probes import stub_pids, wait_until_composing
from tests.reliability.servers import READY_TIMEOUT_S, start_server
from v2bgm.serve import TritonServer

pytestmark = pytest.mark.server

CLI_TIMEOUT_S = 600.0
MUSIC_S = "30"  # long enough on the tiny models to still be composing when the server dies
RESTART_WAIT_S = 5.0


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "v2bgm_client", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("v2bgm: error: "), stderr
    return lines[0]


def test_cli_against_a_server_that_is_down(tmp_path):
    unused_url = f"127.0.0.1:{free_port()}"  # nothing listens there
    source = videos.make_video(tmp_path / "clip.mp4", seconds=1)
    out = tmp_path / "out.mp4"
    run = cli(str(source), "-o", str(out), "--url", unused_url)
    _, stderr = run.communicate(timeout=CLI_TIMEOUT_S)
    assert run.returncode == 1
    line = one_error_line(stderr)
    assert f"cannot reach the server at {unused_url}" in line, line
    assert not out.exists()


@pytest.fixture
def server(weights: Path, tmp_path: Path) -> Iterator[TritonServer]:
    triton = start_server(ROOT / "model_repository", weights, tmp_path / "tritonserver.log")
    yield triton
    triton.stop(timeout_s=10)


def test_cli_against_a_server_that_crashes_and_restarts(server, tmp_path, weights):
    source = videos.make_video(tmp_path / "clip.mp4", seconds=1)
    out = tmp_path / "out.mp4"
    url = f"127.0.0.1:{server.grpc_port}"
    args = [str(source), "-o", str(out), "--url", url, "--duration", MUSIC_S, "--quiet"]
    # The stream waits this long for a crashed server to come back (v2bgm_client.retry; 180 s by
    # default, so that a restart is ridden out: tests/reliability/test_stream_chaos.py); this
    # one does not come back until the CLI has given up.
    run = cli(*args, env={RESTART_WAIT_ENV: str(RESTART_WAIT_S)})
    wait_until_composing(server.metrics_port)
    assert server.process is not None
    crashed = server.process.pid
    server.process.kill()  # a crash: no drain, no answer
    # The composer's and the streaming model's stubs outlive a crashed tritonserver (Triton
    # 2.51); the launcher's wait kills what is left (v2bgm.serve.reap_stubs).
    assert server.wait() == -signal.SIGKILL
    assert stub_pids(crashed) == []
    _, stderr = run.communicate(timeout=CLI_TIMEOUT_S)
    assert run.returncode == 1
    line = one_error_line(stderr)
    assert f"lost the connection to the server at {url} during the request" in line, line
    assert not out.exists()

    restarted = replace(server, process=None)  # the same ports
    restarted.start()
    try:
        restarted.wait_ready(READY_TIMEOUT_S)
        again = cli(*args)
        _, stderr = again.communicate(timeout=CLI_TIMEOUT_S)
        assert again.returncode == 0, stderr
        assert videos.audio_duration(out) > 0
    finally:
        assert restarted.stop() == 0
