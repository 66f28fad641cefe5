"""xcodec_mini_infer (YuE's X-Codec and 44.1 kHz vocoders) and the Python environment it needs.

YuE's `inference/xcodec_mini_infer` is a git submodule hosted on the Hugging Face hub, which this
workplace cannot reach. The same code is in YuE's own GitHub history: commit 14153f7 ("upload
upsampler", 2025-01-27) holds the whole folder, the commit after it (7b764be) moved it out into
the submodule. Put that folder in `reference/xcodec_mini_infer` (git-ignored) or point
$V2BGM_XCODEC_REFERENCE at a copy. Their code imports torchaudio, omegaconf, descript-audiotools,
tensorboard and more, which this repository does not need, so it runs in a scratch venv,
`reference/.venv-xcodec` (or the interpreter $V2BGM_XCODEC_PYTHON names), driven through
`xcodec_runner.py` in a subprocess. tests/reference/README.md says how to make both.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tests.reference import yue_code
from tests.reference.scratch_run import run_in_venv, venv_python

ROOT = Path(__file__).resolve().parents[2]
CODE_ENV = "V2BGM_XCODEC_REFERENCE"
PYTHON_ENV = "V2BGM_XCODEC_PYTHON"
FULL_ENV = "V2BGM_XCODEC_REFERENCE_FULL"  # "1": also the full-size check (~100 s, 3.3 GB)
MODEL_CODE = Path("models/soundstream_hubert_new.py")
RUNNER = Path(__file__).with_name("xcodec_runner.py")
RUN_TIMEOUT_S = 900


def code_dir() -> Path | None:
    """Their xcodec_mini_infer folder, or None when it is not there."""
    root = Path(os.environ.get(CODE_ENV) or ROOT / "reference" / "xcodec_mini_infer")
    return root if (root / MODEL_CODE).is_file() and (root / "vocoder.py").is_file() else None


def python() -> Path | None:
    """The scratch venv's interpreter, or None."""
    return venv_python(PYTHON_ENV, ".venv-xcodec")


def missing() -> str | None:
    """Why the X-Codec reference tests cannot run here, or None."""
    if code_dir() is None:
        return (
            f"xcodec_mini_infer's code is not in reference/xcodec_mini_infer nor ${CODE_ENV} "
            "(tests/reference/README.md)"
        )
    if yue_code.inference_dir() is None:
        return f"YuE's infer.py is not in reference/YuE nor ${yue_code.ENV} (its save_audio runs)"
    if python() is None:
        return (
            "no Python environment for xcodec_mini_infer's code (torchaudio, omegaconf, "
            f"descript-audiotools, ...) at reference/.venv-xcodec nor ${PYTHON_ENV} "
            "(tests/reference/README.md)"
        )
    return None


def run(request: dict, work: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Run xcodec_runner.py in their environment; returns its arrays and its report."""
    interpreter, code = python(), code_dir()
    assert interpreter is not None and code is not None
    request = {**request, "code": str(code), "infer": str(yue_code.inference_dir() / "infer.py")}
    mpl = {"MPLCONFIGDIR": str(work / "mpl")}  # their utils import matplotlib
    return run_in_venv(interpreter, RUNNER, request, work, RUN_TIMEOUT_S, env=mpl)
