"""The image's scripts, run here with fake servers and tools first on PATH.

docker/entrypoint.sh (v2bgm-entrypoint), docker/fetch-weights.sh (v2bgm-fetch-weights) and
docker/health.py (v2bgm-health) are what the container runs; the rest of the image is NVIDIA's.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.dockerfile import ROOT

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
FETCH_WEIGHTS = ROOT / "docker" / "fetch-weights.sh"
HEALTH = ROOT / "docker" / "health.py"
WAIT_S = 60.0  # generous: a loaded 2-core CI machine starts Python slowly; waits end early
SIGTERM_EXIT = 128 + signal.SIGTERM

# Records its pid, arguments and environment, then waits for a signal like the real launcher.
FAKE_SERVE = """#!/usr/bin/env bash
{ echo "pid=$$"; printf 'arg=%s\\n' "$@"; } > "$FAKE_LOG"
env | grep -E '^(V2BGM_|HF_HUB_OFFLINE)' | sed 's/^/env=/' >> "$FAKE_LOG"
trap 'echo signal=TERM >> "$FAKE_LOG"; exit 143' TERM
trap 'echo signal=INT >> "$FAKE_LOG"; exit 130' INT
echo started >> "$FAKE_LOG"
while true; do sleep 0.05; done
"""
# python3/hf stand-ins for the init step: log the call; answer the two `-c` snippets it runs.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "python cwd=$PWD args=$*" >> "$FAKE_LOG"
if [[ $1 == -c && $2 == *PART_NAMES* ]]; then echo "${FAKE_OTHER_PARTS:-}"; fi
if [[ $1 == -m && $2 == v2bgm.weights && $3 == fetch-tokenizer ]]; then
  mkdir -p "$4/yue-tokenizer" && echo token > "$4/yue-tokenizer/tokenizer.model"; exit 0
fi
if [[ $1 == -m && $2 == v2bgm.weights ]]; then exit "${FAKE_CHECK_RC:-0}"; fi
exit 0
"""
FAKE_HF = """#!/usr/bin/env bash
echo "hf args=$*" >> "$FAKE_LOG"
if [[ $2 == m-a-p/xcodec_mini_infer ]]; then
  out="${@: -1}/decoders"
  mkdir -p "$out" && touch "$out"/{config.yaml,decoder_131000.pth,decoder_151000.pth}
fi
"""


def write_tool(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    """Environment with fake v2bgm-serve, python3 and hf first on PATH; log in FAKE_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_tool(bin_dir, "v2bgm-serve", FAKE_SERVE)
    write_tool(bin_dir, "python3", FAKE_PYTHON)
    write_tool(bin_dir, "hf", FAKE_HF)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "yue-s1").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("V2BGM_", "HF_"))}
    return {
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
        "FAKE_LOG": str(tmp_path / "fake.log"),
        "V2BGM_WEIGHTS": str(weights),
        "V2BGM_HOME": str(tmp_path / "home"),
    }


def read_log(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def wait_for(env: dict[str, str], line: str) -> list[str]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        log = read_log(env)
        if line in log:
            return log
        time.sleep(0.02)
    raise AssertionError(f"{line!r} never logged: {read_log(env)}")


def _default_sigint() -> None:
    # A test run started in the background inherits SIGINT ignored, and a shell cannot trap a
    # signal ignored on entry: give the entrypoint the disposition a container's PID 1 has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(ENTRYPOINT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def test_entrypoint_execs_the_launcher_with_the_volume(fakes: dict[str, str]) -> None:
    process = start(fakes)
    try:
        log = wait_for(fakes, "started")
    finally:
        stop(process)
    # exec: the launcher *is* the entrypoint's process, so it gets the container's signals.
    assert f"pid={process.pid}" in log
    args = [line.removeprefix("arg=") for line in log if line.startswith("arg=")]
    assert args == [
        "--model-repository", "/opt/v2bgm/model_repository", "--weights", fakes["V2BGM_WEIGHTS"],
        "--device", "auto", "--ready-timeout", "1800", "--http-port", "8000",
        "--grpc-port", "8001", "--metrics-port", "8002", "--metrics-address", "0.0.0.0",
    ]  # fmt: skip
    assert f"env=V2BGM_WEIGHTS={fakes['V2BGM_WEIGHTS']}" in log
    assert "env=HF_HUB_OFFLINE=1" in log  # serving never downloads


def test_entrypoint_settings_from_env_and_extra_triton_args(fakes: dict[str, str]) -> None:
    env = {
        **fakes,
        "V2BGM_DEVICE": "cpu",
        "V2BGM_READY_TIMEOUT_S": "300",
        "V2BGM_GRPC_PORT": "9001",
        "V2BGM_METRICS_ADDRESS": "10.0.0.7",
    }
    process = start(env, "--", "--exit-timeout-secs=300", "--log-verbose=1")
    try:
        log = wait_for(env, "started")
    finally:
        stop(process)
    args = [line.removeprefix("arg=") for line in log if line.startswith("arg=")]
    assert args[args.index("--device") + 1] == "cpu"
    assert args[args.index("--ready-timeout") + 1] == "300"
    assert args[args.index("--grpc-port") + 1] == "9001"
    assert args[args.index("--metrics-address") + 1] == "10.0.0.7"
    assert args[-3:] == ["--", "--exit-timeout-secs=300", "--log-verbose=1"]


@pytest.mark.parametrize(
    ("sig", "name", "code"), [(signal.SIGTERM, "TERM", 143), (signal.SIGINT, "INT", 130)]
)
def test_entrypoint_signals_reach_the_launcher(fakes: dict[str, str], sig, name, code) -> None:
    process = start(fakes)
    try:
        wait_for(fakes, "started")
        process.send_signal(sig)
        assert process.wait(WAIT_S) == code
    finally:
        stop(process)
    assert f"signal={name}" in read_log(fakes)


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_entrypoint_refuses_to_serve_without_weights(
    fakes: dict[str, str], tmp_path, state
) -> None:
    weights = tmp_path / "nothing"
    if state == "empty":
        weights.mkdir()
    result = subprocess.run(
        [str(ENTRYPOINT)], env={**fakes, "V2BGM_WEIGHTS": str(weights)}, capture_output=True,
        text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"no weights in {weights}" in result.stderr and "v2bgm-fetch-weights" in result.stderr
    assert read_log(fakes) == []  # the launcher never started


def test_entrypoint_runs_another_command_instead(fakes: dict[str, str]) -> None:
    result = subprocess.run(
        [str(ENTRYPOINT), "printenv", "V2BGM_WEIGHTS"], env={**fakes, "V2BGM_WEIGHTS": ""},
        capture_output=True, text=True, timeout=WAIT_S, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "/weights"  # the default, exported for the command
    assert read_log(fakes) == []


def fetch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(FETCH_WEIGHTS), *args], env=env, capture_output=True, text=True, timeout=WAIT_S,
        check=False,
    )  # fmt: skip


def test_fetch_tiny_builds_once_into_the_volume(fakes: dict[str, str], tmp_path) -> None:
    Path(fakes["V2BGM_HOME"]).mkdir()
    volume = tmp_path / "volume"
    first = fetch(fakes, "tiny", str(volume))
    assert first.returncode == 0, first.stderr
    build, checked = read_log(fakes)
    assert build == f"python cwd={fakes['V2BGM_HOME']} args=-m export --size tiny --out {volume}"
    assert checked.endswith(f"args=-m v2bgm.weights check {volume}")  # before the marker
    assert (volume / ".v2bgm-tiny").exists()
    second = fetch(fakes, "tiny", str(volume))  # an initContainer runs it on every start
    assert second.returncode == 0 and "already holds" in second.stdout
    assert len(read_log(fakes)) == 2


def test_fetch_leaves_no_marker_when_the_weights_check_fails(fakes, tmp_path) -> None:
    Path(fakes["V2BGM_HOME"]).mkdir()
    volume = tmp_path / "volume"
    result = fetch({**fakes, "FAKE_CHECK_RC": "1"}, "tiny", str(volume))
    assert result.returncode == 1
    assert not (volume / ".v2bgm-tiny").exists()  # the next start tries again


def test_fetch_defaults_to_the_weights_env(fakes: dict[str, str]) -> None:
    Path(fakes["V2BGM_HOME"]).mkdir()
    assert fetch(fakes, "full").returncode == 0
    call, _check = read_log(fakes)
    assert f"--size full --out {fakes['V2BGM_WEIGHTS']} --device " in call


def test_fetch_hub_downloads_and_converts(fakes, tmp_path) -> None:
    Path(fakes["V2BGM_HOME"]).mkdir()
    volume = tmp_path / "volume"
    result = fetch(fakes, "hub", str(volume))
    assert result.returncode == 0, result.stderr
    log = read_log(fakes)
    hf = [line.removeprefix("hf args=download ") for line in log if line.startswith("hf ")]
    assert hf[0] == f"m-a-p/YuE-s1-7B-anneal-en-cot --local-dir {volume}/yue-s1"
    assert hf[1] == f"m-a-p/YuE-s2-1B-general --local-dir {volume}/yue-s2"
    assert hf[2].startswith("m-a-p/xcodec_mini_infer final_ckpt/ckpt_00360000.pth")
    assert hf[3] == f"DAMO-NLP-SG/VideoLLaMA3-7B --local-dir {volume}/.videollama3-src"
    assert (volume / "yue-tokenizer" / "tokenizer.model").read_text() == "token\n"
    home = fakes["V2BGM_HOME"]
    source = volume / ".xcodec_mini_infer"
    assert (
        f"python cwd={home} args=-m export.convert_xcodec --out {volume}/xcodec "
        f"--checkpoint {source}/final_ckpt/ckpt_00360000.pth "
        f"--config {source}/final_ckpt/config.yaml"
    ) in log
    assert (
        f"python cwd={home} args=-m export.convert_videollama3 "
        f"--src {volume}/.videollama3-src --out {volume}/videollama3"
    ) in log
    vocoder = sorted(p.name for p in (volume / "yue-vocoder").iterdir())
    assert vocoder == ["config.yaml", "decoder_131000.pth", "decoder_151000.pth"]
    assert sorted(p.name for p in volume.iterdir() if p.name.startswith(".")) == [".v2bgm-hub"]
    assert not any("-m export --size" in line for line in log)  # every part has a source
    assert "RANDOM" not in result.stderr


def test_fetch_hub_fills_parts_without_a_source_with_random_weights(fakes, tmp_path) -> None:
    Path(fakes["V2BGM_HOME"]).mkdir()
    volume = tmp_path / "volume"
    result = fetch({**fakes, "FAKE_OTHER_PARTS": "new-part"}, "hub", str(volume))
    assert result.returncode == 0, result.stderr
    assert read_log(fakes)[-2].endswith(
        f"-m export --size full --out {volume} --device cpu --only new-part"
    )
    assert "RANDOM weights in new-part" in result.stderr


@pytest.mark.parametrize("args", [[], ["s3"], ["tiny", "a", "b"]])
def test_fetch_usage_errors(fakes: dict[str, str], args: list[str]) -> None:
    result = fetch(fakes, *args)
    assert result.returncode == 2 and "v2bgm-fetch-weights tiny [DIR]" in result.stderr
    assert read_log(fakes) == []


class Triton(http.server.BaseHTTPRequestHandler):
    """Health endpoints: the server is live and ready, the model `loading` is not."""

    def do_GET(self) -> None:
        ok = self.path in ("/v2/health/live", "/v2/health/ready", "/v2/models/video_to_music/ready")
        self.send_response(200 if ok else 400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def triton_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Triton)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def health():
    spec = importlib.util.spec_from_file_location("v2bgm_health", HEALTH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_health(health, triton_port: int, tmp_path, monkeypatch) -> None:
    drain = tmp_path / "draining"
    monkeypatch.setenv("V2BGM_HTTP_PORT", str(triton_port))
    monkeypatch.setenv("V2BGM_DRAIN_FILE", str(drain))
    assert health.main(["live"]) == 0
    assert health.main(["ready"]) == 0
    assert health.main(["ready", "--model", "video_to_music"]) == 0
    assert health.main(["ready", "--model", "loading"]) == 1
    drain.touch()  # what the chart's preStop does
    assert health.main(["ready"]) == 1
    assert health.main(["live"]) == 0  # draining is not dead: no restart
    monkeypatch.setenv("V2BGM_HTTP_PORT", "1")  # nothing listens
    assert health.main(["live"]) == 1
    # v2bgm-serve restarting tritonserver: alive until the time in its starting file
    starting = tmp_path / "starting"
    monkeypatch.setenv("V2BGM_STARTING_FILE", str(starting))
    starting.write_text(f"{time.time() + 60:.0f}\n")
    assert health.main(["live"]) == 0
    assert health.main(["ready"]) == 1
    starting.write_text(f"{time.time() - 1:.0f}\n")  # past it: not alive
    assert health.main(["live"]) == 1
    starting.write_text("garbage")
    assert health.main(["live"]) == 1


def test_health_script_runs_as_a_command(triton_port: int) -> None:
    env = {**os.environ, "V2BGM_HTTP_PORT": str(triton_port)}
    ok = subprocess.run([str(HEALTH), "ready"], env=env, timeout=WAIT_S, check=False)
    assert ok.returncode == 0
