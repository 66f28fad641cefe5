"""DAMO-NLP-SG's VideoLLaMA3 inference code and the Python environment it asks for.

The code is not part of this repository: clone it into `reference/VideoLLaMA3` (git-ignored) or
point $V2BGM_VIDEOLLAMA3_REFERENCE at a clone. It needs transformers 4.46.3 (their README and
requirements.txt), not this repository's 5.x, so it runs in a scratch venv of its own,
`reference/.venv-vl3` (or the interpreter $V2BGM_VIDEOLLAMA3_PYTHON names), driven through
`videollama3_runner.py` in a subprocess. tests/reference/README.md says how to make both.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.reference.scratch_run import run_in_venv, venv_python

ROOT = Path(__file__).resolve().parents[2]
CODE_ENV = "V2BGM_VIDEOLLAMA3_REFERENCE"
PYTHON_ENV = "V2BGM_VIDEOLLAMA3_PYTHON"
REMOTE_CODE = Path("inference/transformers_api")  # what the hub repositories ship as remote code
TRAINING_PROCESSOR = Path("videollama3/model/processor.py")
RUNNER = Path(__file__).with_name("videollama3_runner.py")
RUN_TIMEOUT_S = 300


def code_dir() -> Path | None:
    """Their clone, or None when it is not there."""
    root = Path(os.environ.get(CODE_ENV) or ROOT / "reference" / "VideoLLaMA3")
    return root if (root / REMOTE_CODE / "modeling_videollama3.py").is_file() else None


def python() -> Path | None:
    """The scratch venv's interpreter, or None."""
    return venv_python(PYTHON_ENV, ".venv-vl3")


def missing() -> str | None:
    """Why the VideoLLaMA3 reference tests cannot run here, or None."""
    if code_dir() is None:
        return (
            f"DAMO's VideoLLaMA3 code is not in reference/VideoLLaMA3 nor ${CODE_ENV} "
            "(tests/reference/README.md)"
        )
    if python() is None:
        return (
            "no Python environment for DAMO's VideoLLaMA3 code (transformers 4.46.3) at "
            f"reference/.venv-vl3 nor ${PYTHON_ENV} (tests/reference/README.md)"
        )
    return None


def remote_code_files() -> list[Path]:
    """Their remote-code modules (`__init__.py`, which only registers Auto classes, left out)."""
    folder = code_dir()
    assert folder is not None
    return sorted(p for p in (folder / REMOTE_CODE).glob("*.py") if p.name != "__init__.py")


def add_remote_code(checkpoint: Path) -> None:
    """Lay their modules beside the weights, as their hub repositories hold them."""
    for path in remote_code_files():
        shutil.copy(path, checkpoint / path.name)


def run(request: dict, work: Path) -> tuple[dict, dict]:
    """Run videollama3_runner.py in their environment; returns its arrays and its report."""
    interpreter = python()
    assert interpreter is not None
    return run_in_venv(interpreter, RUNNER, request, work, RUN_TIMEOUT_S)
