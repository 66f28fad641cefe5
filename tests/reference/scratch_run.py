"""Running an authors' code in its own scratch venv: a runner script reads a JSON request, writes
its arrays to request["out"] (.npz) and a JSON report beside it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def venv_python(env: str, venv: str) -> Path | None:
    """The interpreter of a scratch venv: $`env`, else reference/`venv`; None when absent."""
    path = Path(os.environ.get(env) or ROOT / "reference" / venv / "bin" / "python")
    return path if path.is_file() else None


def run_in_venv(
    interpreter: Path,
    runner: Path,
    request: dict,
    work: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Run `runner` on `request` with `interpreter`, offline, with none of our PYTHONPATH;
    returns its arrays and its report. `env` adds to the environment."""
    path = work / "request.json"
    path.write_text(json.dumps(request))
    full_env = {
        **os.environ,
        "HF_HOME": str(work / "hf"),  # remote-code module caches, kept out of ~/.cache
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": "",
        **(env or {}),
    }
    done = subprocess.run(
        [str(interpreter), str(runner), str(path)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise RuntimeError(f"their code failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    out = Path(request["out"])
    with np.load(out) as arrays:
        results = {k: arrays[k] for k in arrays.files}
    return results, json.loads(out.with_suffix(".json").read_text())
