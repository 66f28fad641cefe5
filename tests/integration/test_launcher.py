"""`v2bgm-serve` as an operator runs it: ready on the ports asked for, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.server


def test_serve_gets_ready_and_stops_on_sigterm(weights):
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        sys.executable, "-m", "v2bgm.serve", "--device", "cpu", "--weights", str(weights),
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        "--triton-home", str(ROOT / ".cache" / "pytriton_wheel"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = proc.stdout.readline()  # the launcher prints one line once the server is ready
        assert f"gRPC :{grpc}" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready") as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics") as response:
            assert b"nv_inference_request_success" in response.read()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - start < 60
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_reports_a_missing_server_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "v2bgm.serve", "--triton-home", str(tmp_path), "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no tritonserver" in result.stderr and "make setup" in result.stderr
