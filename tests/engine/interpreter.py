"""Triton kernels run on the CPU by Triton's interpreter, in a child process (the interpreter is
chosen when triton is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_interpreted(script: str, cases: list) -> Any:
    """Run `script` with the JSON of `cases` as its argument under TRITON_INTERPRET=1; the JSON
    its last line prints."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
