"""One tiny build per test session, shared by every test in this folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from export.__main__ import main as export_main

SEED = 0


def build_tiny(out: Path, *extra: str, seed: int = SEED) -> Path:
    assert export_main(["--size", "tiny", "--out", str(out), "--seed", str(seed), *extra]) == 0
    return out


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="session")
def build() -> Callable[..., Path]:
    """`build(out, *extra_args, seed=0)`: run `python -m export --size tiny` into `out`."""
    return build_tiny


@pytest.fixture(scope="session")
def digests() -> Callable[[Path], dict[str, str]]:
    """`digests(root)`: sha256 of every file under root, by relative path."""
    return file_digests
