"""Shared fixtures: the tiny weights and one real tritonserver for the whole test run."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.videos`, `export`

from v2bgm import checkpoints  # noqa: E402
from v2bgm.serve import TritonServer  # noqa: E402

TINY_WEIGHTS = ROOT / "models" / "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/tiny (built by `make test`), else a fresh build of it."""
    if (TINY_WEIGHTS / ".built").exists():
        return TINY_WEIGHTS
    out = tmp_path_factory.mktemp("weights") / "tiny"
    subprocess.run(
        [sys.executable, "-m", "export", "--size", "tiny", "--out", str(out), "--seed", "0"],
        cwd=ROOT,
        check=True,
    )
    return out


# The tiny YuE models and tokenizer, per test module: the engine fuses a model's weights into
# views of its own matrices, so a module gets fresh ones.
@pytest.fixture(scope="module")
def tokenizer(weights: Path):
    from v2bgm.yue.tokenizer import YuETokenizer

    return YuETokenizer(weights / checkpoints.YUE_TOKENIZER)


@pytest.fixture(scope="module")
def stage1_model(weights: Path):
    return _causal_lm(weights / checkpoints.YUE_STAGE1)


@pytest.fixture(scope="module")
def stage2_model(weights: Path):
    return _causal_lm(weights / checkpoints.YUE_STAGE2)


def _causal_lm(folder: Path):
    from transformers import AutoModelForCausalLM  # heavy: only for the tests that use it

    return AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.fixture(scope="session")
def server(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    triton = TritonServer(
        repository=ROOT / "model_repository",
        weights=weights,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        gpu=False,
        home=ROOT / ".cache" / "pytriton_wheel",
        log_path=log,
    )
    triton.start()
    try:
        triton.wait_ready(timeout_s=300)
    except Exception:
        triton.stop()
        print(log.read_text()[-5000:])
        raise
    yield triton
    code = triton.stop()
    assert code == 0, f"tritonserver exited with {code}; log: {log}"


@pytest.fixture(scope="session")
def grpc_url(server: TritonServer) -> str:
    return f"127.0.0.1:{server.grpc_port}"
