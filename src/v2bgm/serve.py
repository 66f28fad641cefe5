"""`v2bgm-serve`: start tritonserver on model_repository/, wait until ready, stop cleanly.

It also restarts tritonserver when a Python-backend stub dies (killed by the kernel's OOM killer,
a crash in native code): Triton 2.51 neither restarts the stub nor answers the requests it held
(the composer answers through response senders), so those would wait for their deadlines. The
restart drops every connection at once (callers get UNAVAILABLE and may retry) and loads the
models again; a server whose stubs keep dying is given up on (exit 1) so that the orchestrator
takes over. While it restarts, `v2bgm-health live` passes (the starting file below).

Works with the server of NVIDIA's container (/opt/tritonserver) and with the one shipped in the
`nvidia-pytriton` wheel (unpacked by `make setup` into .cache/pytriton_wheel). For the wheel the
Python-backend stub of this interpreter is copied next to the backend, and the environment is set
so that the stub runs this virtual environment's Python (the stub ignores PYTHONPATH: it finds the
venv through the `python3` first on PATH). $V2BGM_STUB_PYTHON names another Python for the stubs,
e.g. when the launcher runs in a client's venv (`make test-latest`; see `find_install`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from v2bgm import admin_api, checkpoints
from v2bgm.triton.model_configs import CPU_CONFIG_NAME
from v2bgm.triton.progress_channel import channel_root

CONTAINER_HOME = Path("/opt/tritonserver")
WHEEL_HOME_ENV = "V2BGM_TRITON_HOME"
DEFAULT_WHEEL_HOME = Path(".cache/pytriton_wheel")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# Loopback unless told otherwise: the chart binds it to the pod's address, for Prometheus.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
RESTRICTION_FLAGS = ("--grpc-restricted-protocol", "--http-restricted-api")
READY_TIMEOUT_S = 600.0  # 7B weights can take minutes to load
EXIT_TIMEOUT_S = 30  # in-flight requests get this long to finish after SIGTERM
EXIT_TIMEOUT_FLAG = "--exit-timeout-secs="
# Past its exit timeout, tritonserver 2.51 says "Exiting immediately" but lingers until the
# compositions in flight end (86 s for one of 120 s of music, then a segfault): the launcher kills
# it this long after the timeout. The chart's grace period leaves room for it (15 s drain + 300 s
# timeout + 15 s < 360 s).
KILL_MARGIN_S = 15.0
WAIT_POLL_S = 0.5
# Explicit: with "none" the repository is loaded once at start and the model control API (load,
# unload) refuses every call, so a caller that reaches the ports cannot swap models. Extra
# arguments may choose another mode (tests/reliability uses "explicit" to reload a dead stub).
MODEL_CONTROL_MODE = "none"
# Python-backend stubs outlive a tritonserver that crashed, or whose exit timeout ran out with a
# request in flight (seen with Triton 2.51: the composer's and the streaming model's stubs stayed,
# reparented to PID 1, holding their models' memory). Their command line names the server:
# triton_python_backend_stub MODEL.py SHM_REGION SIZE GROWTH SERVER_PID ...
STUB_NAME = "triton_python_backend_stub"
STUB_SHM_ARG, STUB_PARENT_ARG = 2, 5
STUB_EXIT_WAIT_S = 2.0  # a stub that notices its server is gone may exit by itself meanwhile
SHM_DIR = Path("/dev/shm")
STUB_COMM = STUB_NAME[:15]  # /proc/PID/stat cuts names to the kernel's 15 characters
DEAD_STATES = ("Z", "X")  # exited and not reaped (Triton never reaps a dead stub), dead
MAX_RESTARTS = 3  # within RESTART_WINDOW_S; one more stub death and the launcher exits 1
RESTART_WINDOW_S = 600.0
# Exists while tritonserver (re)starts, holding the Unix time by which it must be ready; read by
# docker/health.py (`live` passes meanwhile: a restart reloads weights for minutes).
STARTING_FILE_ENV = "V2BGM_STARTING_FILE"
DEFAULT_STARTING_FILE = "/tmp/v2bgm-starting"
# Before the instances' stubs, the Python backend starts one stub per model only to let model.py
# complete its config (`auto_complete_config`, which no model here has): it imports model.py, so
# torch and transformers, one more time, and the instances wait for it (17 s of a 49-s cold start
# on a 2-core CPU, 2026-12-05). Every config here is complete (rendered by
# v2bgm.triton.model_configs), so it is skipped; extra arguments may ask for it again.
NO_AUTO_COMPLETE_FLAG = "--disable-auto-complete-config"
AUTO_COMPLETE_FLAGS = (NO_AUTO_COMPLETE_FLAG, "--strict-model-config")
# A directory for what torch.compile builds at load (Inductor's graphs, Triton's kernels). Unset:
# torch's default under /tmp, which a restart of the same container finds again; on a volume
# that outlives the pod (the chart's `compileCache`), a new pod finds it too. One H200,
# 2026-12-04: ready in 114 s on a machine that had never compiled, 56 s with the cache warm.
COMPILE_CACHE_ENV = "V2BGM_COMPILE_CACHE"


def compile_cache_env(root: str | None) -> dict[str, str]:
    """The variables that put torch.compile's caches under `root` (none when unset)."""
    if not root:
        return {}
    root_path = Path(root)
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(root_path / "inductor"),
        "TRITON_CACHE_DIR": str(root_path / "triton"),
    }


@dataclass(frozen=True)
class TritonInstall:
    server: Path
    backends: Path
    env: dict[str, str] = field(default_factory=dict)


def find_install(home: Path | None = None) -> TritonInstall:
    """The container's server, else the wheel's, prepared for this interpreter or for the
    Python that $V2BGM_STUB_PYTHON names: the Python-backend stubs run that Python's venv (so a
    client environment with numpy 2, `make test-latest`, can start a server whose stubs need
    numpy 1.x)."""
    if home is None and (CONTAINER_HOME / "bin" / "tritonserver").exists():
        return TritonInstall(CONTAINER_HOME / "bin" / "tritonserver", CONTAINER_HOME / "backends")
    home = Path(home or os.environ.get(WHEEL_HOME_ENV) or DEFAULT_WHEEL_HOME).resolve()
    root = home / "pytriton" / "tritonserver"
    server = root / "bin" / "tritonserver"
    if not server.exists():
        raise SystemExit(
            f"v2bgm-serve: no tritonserver at {server}; run `make setup` (it unpacks the "
            f"nvidia-pytriton wheel there) or set {WHEEL_HOME_ENV}"
        )
    python, version = sys.executable, f"{sys.version_info.major}.{sys.version_info.minor}"
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    if os.environ.get("V2BGM_STUB_PYTHON"):  # not resolved: that venv's bin/ goes on PATH
        python = os.path.abspath(os.environ["V2BGM_STUB_PYTHON"])
        query = (
            "import sys, sysconfig; print(*sys.version_info[:2], sep='.'); "
            "print(sysconfig.get_config_var('LIBDIR'))"
        )
        found = subprocess.run([python, "-c", query], capture_output=True, text=True, check=True)
        version, libdir = found.stdout.splitlines()
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = root / "backends" / "python" / "triton_python_backend_stub"
    if not target.exists() or target.read_bytes() != stub.read_bytes():
        shutil.copy2(stub, target)
    libs = [str(home / "nvidia_pytriton.libs"), libdir]
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]),
        "PATH": os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")]),
    }
    return TritonInstall(server, root / "backends", env)


def stub_args(server_pid: int) -> dict[int, list[str]]:
    """The live Python-backend stubs that tritonserver `server_pid` started, with their args."""
    stubs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        if (
            Path(args[0]).name == STUB_NAME
            and len(args) > STUB_PARENT_ARG
            and args[STUB_PARENT_ARG] == str(server_pid)
        ):
            stubs[int(entry.name)] = args
    return stubs


def reap_stubs(server_pid: int, wait_s: float = STUB_EXIT_WAIT_S) -> list[int]:
    """Kill the stubs an exited tritonserver left running, and remove their shared-memory
    regions (the server removes them only on a clean exit). Returns the pids killed."""
    left = stub_args(server_pid)
    deadline = time.monotonic() + wait_s
    while (alive := stub_args(server_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for args in left.values():
        (SHM_DIR / Path(args[STUB_SHM_ARG]).name).unlink(missing_ok=True)
    return sorted(alive)


def dead_stubs(server_pid: int) -> list[int]:
    """Pids of the Python-backend stubs of tritonserver `server_pid` that died."""
    dead = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if comm == STUB_COMM and int(ppid) == server_pid and state in DEAD_STATES:
            dead.append(int(entry.name))
    return sorted(dead)


@dataclass
class RestartBudget:
    """At most `restarts` restarts within any `window_s` seconds."""

    restarts: int = MAX_RESTARTS
    window_s: float = RESTART_WINDOW_S
    times: list[float] = field(default_factory=list)

    def take(self, now: float) -> bool:
        """Count a restart at `now`; False if it is one too many."""
        self.times = [t for t in self.times if now - t < self.window_s] + [now]
        return len(self.times) <= self.restarts


class StubDied(Exception):
    """A Python-backend stub of the server died; the server was killed."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(f"Python-backend stub process {', '.join(map(str, pids))} died")
        self.pids = pids


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    result = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "GPU" in result.stdout


@dataclass
class TritonServer:
    """One tritonserver process serving the repository."""

    repository: Path
    weights: Path
    http_port: int = DEFAULT_PORTS["http"]
    grpc_port: int = DEFAULT_PORTS["grpc"]
    metrics_port: int = DEFAULT_PORTS["metrics"]
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    # None: $V2BGM_ADMIN_KEY, the file $V2BGM_ADMIN_KEY_FILE, or a random key for each start
    admin_key: str | None = None
    open_admin: bool = False  # every API open to every caller, as Triton starts (tests only)
    gpu: bool = False
    extra_args: list[str] = field(default_factory=list)
    home: Path | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    stub_regions: list[str] = field(default_factory=list)  # the stubs' shared-memory files

    def command(self, install: TritonInstall) -> list[str]:
        cmd = [
            str(install.server),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={install.backends}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--metrics-address={self.metrics_address}",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        ]
        own = any(arg.startswith(RESTRICTION_FLAGS) for arg in self.extra_args)
        if not (own or self.open_admin):
            cmd += admin_api.restriction_args(self.admin_key or admin_api.admin_key())
        if not self.gpu:
            cmd.append(f"--model-config-name={CPU_CONFIG_NAME}")
        if not any(arg.startswith("--model-control-mode") for arg in self.extra_args):
            cmd.append(f"--model-control-mode={MODEL_CONTROL_MODE}")
        if not any(arg.startswith(AUTO_COMPLETE_FLAGS) for arg in self.extra_args):
            cmd.append(NO_AUTO_COMPLETE_FLAG)
        return cmd + self.extra_args

    def environment(self, install: TritonInstall) -> dict[str, str]:
        """tritonserver's environment, which its stubs inherit."""
        env = {**os.environ, **install.env, checkpoints.WEIGHTS_ENV: str(self.weights.resolve())}
        return env | compile_cache_env(env.get(COMPILE_CACHE_ENV))

    def start(self) -> None:
        install = find_install(self.home)
        self.stub_regions = []
        env = self.environment(install)
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (lives with the process)
        self.process = subprocess.Popen(
            self.command(install), env=env, stdout=out, stderr=subprocess.STDOUT if out else None
        )

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v2/health/ready"

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode}")
            if self.is_ready():  # every stub runs now (the models are loaded): note their memory
                self.stub_regions = [
                    Path(args[STUB_SHM_ARG]).name for args in stub_args(self.process.pid).values()
                ]
                return
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s ({self.ready_url})")

    def stop(self, timeout_s: float = EXIT_TIMEOUT_S + 10) -> int:
        """SIGTERM (Triton lets in-flight requests finish), then SIGKILL after `timeout_s`;
        then no stub of the server is left running."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait()

    def exit_timeout_s(self) -> float:
        """The exit timeout tritonserver runs with: the last one on its command line."""
        given = [a for a in self.extra_args if a.startswith(EXIT_TIMEOUT_FLAG)]
        try:
            return float(given[-1].removeprefix(EXIT_TIMEOUT_FLAG)) if given else EXIT_TIMEOUT_S
        except ValueError:  # tritonserver refuses it and exits at once
            return EXIT_TIMEOUT_S

    def wait(self) -> int:
        """Wait for the server to exit, kill the stubs it left behind and remove the shared
        memory it leaves after a crash or a kill; its exit code."""
        assert self.process is not None
        code = self.process.wait()
        left = reap_stubs(self.process.pid)
        if left:
            print(f"v2bgm-serve: killed stubs left running by tritonserver: {left}", flush=True)
        for region in self.stub_regions:  # a dead stub's too: its command line is gone by now
            (SHM_DIR / region).unlink(missing_ok=True)
        shutil.rmtree(channel_root(self.process.pid), ignore_errors=True)
        return code


def wait_with_deadline(
    server: TritonServer, stop_signalled_at: list[float], watch_stubs: bool = False
) -> int:
    """Wait for tritonserver to exit; once a stop signal came (`stop_signalled_at`), at most its
    exit timeout + KILL_MARGIN_S, then kill it. Its stubs are reaped; the shell-style exit code.
    `watch_stubs`: until a stop signal, kill the server when one of its stubs dies and raise
    StubDied (its requests would never be answered)."""
    assert server.process is not None
    grace_s = server.exit_timeout_s() + KILL_MARGIN_S
    while True:
        try:
            server.process.wait(WAIT_POLL_S)
            break
        except subprocess.TimeoutExpired:
            if watch_stubs and not stop_signalled_at and (dead := dead_stubs(server.process.pid)):
                server.process.kill()
                server.wait()
                raise StubDied(dead) from None
            if stop_signalled_at and time.monotonic() - stop_signalled_at[0] > grace_s:
                print(
                    f"v2bgm-serve: tritonserver still running {grace_s:g} s after the stop "
                    "signal: killing it",
                    file=sys.stderr,
                    flush=True,
                )
                server.process.kill()
    code = server.wait()
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="v2bgm-serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--weights", type=Path, default=checkpoints.weights_root(), help="weights folder"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--http-port", type=int, default=DEFAULT_PORTS["http"])
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_PORTS["grpc"])
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_PORTS["metrics"])
    parser.add_argument(
        "--metrics-address", default=DEFAULT_METRICS_ADDRESS,
        help="address the metrics port binds to (default: loopback only)",
    )  # fmt: skip
    parser.add_argument("--triton-home", type=Path, default=None, help="unpacked pytriton wheel")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S)
    parser.add_argument(
        "--no-restart", dest="restart", action="store_false",
        help="exit when a Python-backend stub dies instead of restarting tritonserver",
    )  # fmt: skip
    parser.add_argument("extra", nargs="*", help="extra tritonserver arguments (after --)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        key = admin_api.admin_key()
    except admin_api.AdminKeyError as exc:
        print(f"v2bgm-serve: {exc}", file=sys.stderr)
        return 2
    if not weights_pass(args.weights):
        return 2
    gpu = has_gpu() if args.device == "auto" else args.device == "gpu"
    server = TritonServer(
        repository=args.model_repository,
        weights=args.weights,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        admin_key=key,
        gpu=gpu,
        extra_args=args.extra,
        home=args.triton_home,
    )

    stop_signalled_at: list[float] = []

    def forward(signum: int, _frame: object) -> None:
        stop_signalled_at.append(time.monotonic())  # also between a restart's kill and start
        if server.process and server.process.poll() is None:
            server.process.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    where = f"gRPC :{args.grpc_port}, HTTP :{args.http_port}, metrics :{args.metrics_port}"
    if not start_until_ready(server, args.ready_timeout, stop_signalled_at):
        return 1
    print(f"v2bgm-serve: ready on {'GPU' if gpu else 'CPU'}: {where}", flush=True)
    budget = RestartBudget()
    while True:
        try:
            return wait_with_deadline(server, stop_signalled_at, watch_stubs=True)
        except StubDied as died:
            if not args.restart or not budget.take(time.monotonic()):
                why = "restarts off" if not args.restart else f"{budget.restarts} restarts already"
                print(f"v2bgm-serve: {died}; tritonserver killed ({why})", file=sys.stderr)
                return 1
            if stop_signalled_at:  # asked to stop meanwhile: no restart
                return 0
            print(f"v2bgm-serve: {died}: restarting tritonserver", file=sys.stderr, flush=True)
            if not start_until_ready(server, args.ready_timeout, stop_signalled_at):
                return 1 if not stop_signalled_at else 0
            print(f"v2bgm-serve: ready again: {where}", flush=True)


def weights_pass(folder: Path) -> bool:
    """`v2bgm-weights check` on the weights folder, in its own process (it imports torch and
    transformers; this launcher stays small): its table and problems go to stderr on failure."""
    check = [sys.executable, "-m", "v2bgm.weights", "check", str(folder)]
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return True
    print(
        f"v2bgm-serve: the weights in {folder} fail the check; tritonserver not started:\n"
        f"{result.stdout}{result.stderr[-2000:]}",
        file=sys.stderr,
    )
    return False


def start_until_ready(
    server: TritonServer, timeout_s: float, stop_signalled_at: list[float] | None = None
) -> bool:
    """Start tritonserver and wait until it is ready (the starting file exists meanwhile);
    False, with the server stopped, if it is not. A stop signal that came before the process
    existed (`stop_signalled_at`) is passed on to it."""
    starting = Path(os.environ.get(STARTING_FILE_ENV, DEFAULT_STARTING_FILE))
    with contextlib.suppress(OSError):  # only the health check's `live` reads it
        starting.write_text(f"{time.time() + timeout_s:.0f}\n")
    try:
        server.start()
        if stop_signalled_at and server.process is not None:
            server.process.send_signal(signal.SIGTERM)
        server.wait_ready(timeout_s)
        return True
    except (RuntimeError, TimeoutError) as exc:
        print(f"v2bgm-serve: {exc}", file=sys.stderr)
        server.stop()
        return False
    finally:
        starting.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
