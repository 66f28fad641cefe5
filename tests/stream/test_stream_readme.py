"""The streaming example of docs/streaming.md (moved there from the README) runs as printed,
against the real server."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- tested-stream-example -->"


def test_docs_stream_example_runs(grpc_url, capsys):
    page = (ROOT / "docs" / "streaming.md").read_text()
    code = page.split(MARKER)[1].split("```python")[1].split("```")[0]
    exec(compile(code.replace("localhost:8001", grpc_url), "docs/streaming.md", "exec"), {})
    out = capsys.readouterr().out
    assert "tags:" in out
    assert "soundtrack 0 seed 7 1.0 s" in out and "soundtrack 1 seed 8 1.0 s" in out
    assert " stage1 " in out  # progress arrived before the audio
