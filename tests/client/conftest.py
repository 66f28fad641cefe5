"""Fixtures for the client tests: real video files, generated once per session."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# tests/videos.py is shared with the integration tests, imported as `tests.videos` from the
# repository root (tests/conftest.py puts the root on sys.path too; this keeps ours standalone).
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import videos  # noqa: E402


@pytest.fixture(scope="session")
def make_video(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`make_video(name, **kwargs)`: `videos.make_video` into a session directory, cached by name
    (a name stands for its arguments, so keep one set of arguments per name)."""
    root = tmp_path_factory.mktemp("videos")
    made: dict[str, Path] = {}

    def make(name: str, **kwargs: object) -> Path:
        if name not in made:
            made[name] = videos.make_video(root / name, **kwargs)
        return made[name]

    return make


@pytest.fixture(scope="session")
def unused_url() -> str:
    """host:port on localhost where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"localhost:{port}"
