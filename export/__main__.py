"""Build random-weight checkpoints with the real architectures: `python -m export --size tiny`.

    python -m export --size tiny --out models/tiny --seed 0
    python -m export --size full --out models/full --device cuda     # on the GPU machine
    python -m export --size full --dry-run                            # parameter counts only
    python -m export --only yue-tokenizer --out models/tiny

The same seed gives byte-identical files (torch is seeded right before each part).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from transformers.utils import logging as hf_logging

from export.parts import PART_NAMES, Part, select_parts
from export.weights import Size

DEFAULT_SEED = 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=[s.value for s in Size], default=Size.TINY.value)
    parser.add_argument("--out", type=Path, help="weights folder (default: models/<size>)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--only", action="append", choices=PART_NAMES, metavar="NAME",
        help=f"build only this part (repeatable): {', '.join(PART_NAMES)}",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where weights are initialised (cpu/cuda)")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print parameter counts of models built on the meta device; write nothing",
    )  # fmt: skip
    return parser.parse_args(argv)


def dry_run(parts: Sequence[Part], size: Size) -> dict[str, int]:
    counts = {p.name: p.parameter_count(size) for p in parts if p.parameter_count is not None}
    for name, count in counts.items():
        print(f"{name:15s} {count:>16,d} parameters ({count / 1e9:.2f}B)")
    return counts


def build(parts: Sequence[Part], size: Size, root: Path, *, seed: int, device: str) -> None:
    print(f"building {size.value} checkpoints into {root} (seed {seed}, device {device})")
    hf_logging.disable_progress_bar()  # one line per part instead of shard-writing bars
    total_start = time.perf_counter()
    for part in parts:
        start = time.perf_counter()
        count = part.build(root, size, seed=seed, device=device)
        elapsed = time.perf_counter() - start
        print(f"{part.name:15s} {count:>16,d} parameters  {elapsed:6.1f} s  -> {part.folder(root)}")
    print(f"done in {time.perf_counter() - total_start:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = Size(args.size)
    parts = select_parts(args.only)
    if args.dry_run:
        dry_run(parts, size)
        return 0
    build(parts, size, args.out or Path("models") / size.value, seed=args.seed, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
