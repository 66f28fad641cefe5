"""Batch mode: which videos to score and where each output goes; what is already done."""

from __future__ import annotations

from pathlib import Path

from .errors import VideoError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v", ".ts")


def list_inputs(source: str | Path) -> list[Path]:
    """The videos of a folder (by extension, sorted), or those a text file lists one per line
    (blank lines and lines starting with # skipped; relative paths from the file's folder)."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not source.is_file():
        raise VideoError(f"{source}: no such folder or list file")
    paths = []
    for line in source.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line)
            paths.append(path if path.is_absolute() else source.parent / path)
    return paths


def batch_outputs(inputs: list[Path], out_dir: str | Path, suffix: str | None = None) -> list[Path]:
    """OUT_DIR/<input name>, with `suffix` (".mp4") or the input's own extension. Two inputs
    with one name (from different folders) would overwrite each other: refused."""
    out_dir = Path(out_dir)
    outputs = [out_dir / (p.stem + (suffix or p.suffix)) for p in inputs]
    seen: dict[Path, Path] = {}
    for source, output in zip(inputs, outputs, strict=True):
        if output in seen:
            raise VideoError(f"{seen[output]} and {source} would both be written to {output}")
        seen[output] = source
    return outputs


def is_done(outputs: list[Path]) -> bool:
    """Whether a job's outputs all exist (outputs are written atomically: whole or absent)."""
    return all(p.is_file() for p in outputs)
