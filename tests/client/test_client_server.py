"""The client against a real tritonserver, in whatever environment runs it: the dev one (numpy
1.26, tritonclient 2.51) and, under `make test-latest`, the newest releases of the client's
dependencies (numpy 2, protobuf 6, the newest tritonclient) talking to the same 2.51 server.
Every path that crosses the wire once: the CLI (the blocking stream), the unary ensemble call,
the asyncio stream, and a gRPC error answered by the server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import av
import numpy as np
import pytest
from v2bgm_client.aio import make_soundtracks
from v2bgm_client.api import score_video
from v2bgm_client.errors import ServerError
from v2bgm_client.options import SoundtrackOptions

from tests import videos

pytestmark = pytest.mark.server
CLI_ARGS = ("--seed", "3", "--json", "--url")


def test_cli_scores_a_clip(make_video, tmp_path, grpc_url):
    src = make_video("roundtrip.mp4", seconds=2, width=320, height=180, with_audio=True)
    out = tmp_path / "scored.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "v2bgm_client", str(src), "-o", str(out), *CLI_ARGS, grpc_url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["caption"].strip() and report["tags"].strip() and report["seed"] == 3
    # The picture is untouched, the music covers it.
    assert [p.data for p in videos.video_packets(out)] == [
        p.data for p in videos.video_packets(src)
    ]
    assert videos.audio_duration(out) == pytest.approx(videos.video_duration(src), abs=0.05)


def test_unary_call_returns_caption_tags_and_music(make_video, tmp_path, grpc_url):
    src = make_video("unary.mp4", seconds=2, width=160, height=96)
    result = score_video(src, tmp_path / "out.mkv", url=grpc_url, seed=5)
    assert result.caption and result.tags and result.seed == 5
    assert result.audio_s == pytest.approx(2.0, abs=1 / result.sample_rate)
    with av.open(str(result.output_path)) as f:
        samples = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
    assert np.abs(samples).max() > 0  # the music, not silence


def test_asyncio_stream(make_video, tmp_path, grpc_url):
    src = make_video("aio.mp4", seconds=1, width=160, height=96)
    out = tmp_path / "aio.mp4"
    (item,) = asyncio.run(make_soundtracks([(src, out)], grpc_url, SoundtrackOptions(seed=7)))
    assert item.error is None and item.result is not None
    assert item.result.tags and [o.seed for o in item.result.outputs] == [7]
    assert out.is_file()


def test_server_rejection_is_one_clear_line(make_video, tmp_path, grpc_url):
    # A tag outside YuE's vocabulary: only the server knows it (INVALID_ARGUMENT).
    src = make_video("unary.mp4", seconds=2, width=160, height=96)
    with pytest.raises(ServerError, match=r"rejected the request.*jaz.*'jazz'") as caught:
        score_video(src, tmp_path / "no.mp4", url=grpc_url, fixed_tags=("jaz",))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "no.mp4").exists()
