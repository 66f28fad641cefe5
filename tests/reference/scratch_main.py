"""The scratch-venv runners' entry point (`xcodec_runner.py`, `yue_infer_runner.py`): read the
request, run it, write its arrays (.npz) and its report (.json), or the traceback as the report.
Standard library and numpy only: the runners run as scripts in venvs that see nothing of this
repository but the folder they are in."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Run = Callable[[dict[str, Any]], tuple[dict[str, np.ndarray], dict[str, Any]]]


def main(run: Run, argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text())
    out = Path(request["out"])
    try:
        arrays, report = run(request)
    except Exception:
        out.with_suffix(".json").write_text(json.dumps({"error": traceback.format_exc()}))
        raise
    np.savez(out, **arrays)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    return 0
