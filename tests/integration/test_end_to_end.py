"""A video in, the same video with music out: the CLI and the Python API against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from v2bgm_client.api import score_video

from tests import videos

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]
AUDIO_FRAME_S = {"aac": 1024 / 48_000, "opus": 960 / 48_000, "mp2": 1152 / 48_000}

# (file name, make_video arguments, codec of the music track in the output)
CASES = [
    ("h264_audio.mp4", {"seconds": 3, "width": 320, "height": 180, "with_audio": True}, "aac"),
    ("portrait.mov", {"seconds": 2, "width": 180, "height": 320}, "aac"),
    ("odd_size.mkv", {"seconds": 1, "width": 322, "height": 182, "with_audio": True}, "aac"),
    ("mpeg4.avi", {"seconds": 2, "width": 160, "height": 96, "with_audio": True}, "aac"),
    ("mpeg2.mpg", {"seconds": 2, "width": 176, "height": 144, "codec": "mpeg2video"}, "mp2"),
    ("vp9.webm", {"seconds": 2, "width": 160, "height": 96, "codec": "libvpx-vp9"}, "opus"),
    ("long_30s.mp4", {"seconds": 30, "width": 160, "height": 96, "fps": 12}, "aac"),
    ("hd.mp4", {"seconds": 2, "width": 1920, "height": 1080, "fps": 10}, "aac"),
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "v2bgm_client", *args], capture_output=True, text=True, timeout=600
    )


def music_codec(path: Path) -> str:
    with av.open(str(path)) as f:
        (stream,) = f.streams.audio
        return stream.codec_context.name


@pytest.mark.parametrize(("name", "kwargs", "codec"), CASES, ids=[c[0] for c in CASES])
def test_cli_scores_a_video(tmp_path, grpc_url, name, kwargs, codec):
    src = videos.make_video(tmp_path / name, **kwargs)
    out = tmp_path / f"scored{src.suffix}"
    result = run_cli(str(src), "-o", str(out), "--url", grpc_url, "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert re.search(r"tags?:\s*\S+", result.stdout, re.IGNORECASE), result.stdout
    # The picture is untouched: the same packets, in the same order.
    assert [p.data for p in videos.video_packets(out)] == [
        p.data for p in videos.video_packets(src)
    ]
    video_s = videos.video_duration(src)
    assert videos.video_duration(out) == pytest.approx(video_s, abs=1e-3)
    assert music_codec(out) == codec
    assert videos.audio_duration(out) == pytest.approx(video_s, abs=AUDIO_FRAME_S[codec])


def test_python_api_returns_caption_tags_and_music(tmp_path, grpc_url):
    src = videos.make_video(tmp_path / "in.mp4", seconds=4, width=320, height=180)
    result = score_video(src, tmp_path / "out.mp4", url=grpc_url, seed=5)
    assert result.caption and result.tags
    assert result.audio_s == pytest.approx(4.0, abs=1 / result.sample_rate)
    assert not result.mux.reencoded
    # Cuts "auto" by default, as on the command line: none in this clip, one section.
    assert (result.cuts_source, result.cuts_s) == ("auto", ())
    assert [s["label"] for s in result.sections] == ["[verse]"]
    with av.open(str(result.output_path)) as f:
        samples = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
    assert np.abs(samples).max() > 0  # the track holds the music, not silence


@pytest.mark.parametrize(
    ("make_input", "needle"),
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: _write(d / "noise.mp4", np.random.default_rng(0).bytes(50_000)), "video"),
        (lambda d: _write(d / "notes.mp4", b"just some text\n" * 100), "video"),
        (lambda d: videos.make_audio(d / "song.m4a", seconds=2), "no video stream"),
    ],
    ids=["missing", "random-bytes", "text", "audio-only"],
)
def test_cli_bad_input_one_clear_line_and_no_output(tmp_path, grpc_url, make_input, needle):
    src = make_input(tmp_path)
    out = tmp_path / "out.mp4"
    result = run_cli(str(src), "-o", str(out), "--url", grpc_url)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("v2bgm: error:"), result.stderr
    assert needle in lines[0].lower(), lines[0]
    assert not out.exists()


def test_cli_server_down(tmp_path):
    from tests.conftest import free_port

    src = videos.make_video(tmp_path / "in.mp4", seconds=1)
    out = tmp_path / "out.mp4"
    result = run_cli(str(src), "-o", str(out), "--url", f"127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach the server" in result.stderr
    assert not out.exists()


def test_docs_interface_example_runs(grpc_url, capsys):
    """The raw-tritonclient example of docs/interface.md runs as printed."""
    page = (ROOT / "docs" / "interface.md").read_text()
    code = page.split("<!-- tested-example -->")[1].split("```python")[1].split("```")[0]
    exec(compile(code.replace("localhost:8001", grpc_url), "docs/interface.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip().endswith("4.0 s"), printed


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
