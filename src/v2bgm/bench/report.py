"""A benchmark's JSON report: printed, and written where the caller asked."""

from __future__ import annotations

import json
from pathlib import Path


def save(report: dict, out: Path | None) -> None:
    """Write `report` to `out` (None: nowhere), e.g. after each part of a long run."""
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")


def finish(report: dict, out: Path | None) -> int:
    """Print `report`, write it to `out`; the command's exit status."""
    print(json.dumps(report, indent=2))
    save(report, out)
    return 0
