"""Long videos on the client's side: a 6-minute video is sent (the interface takes 20 minutes;
a server's lower cap is that server's to report), with its duration and a deadline that grows
with the music asked for."""

from __future__ import annotations

import numpy as np
import pytest
from v2bgm_client import api, cli
from v2bgm_client.errors import ServerError
from v2bgm_client.options import SoundtrackOptions
from v2bgm_client.soundtrack import prepare
from v2bgm_client.stream import build_stream_request
from v2bgm_client.video import probe
from v2bgm_contract import interface as contract

SIX_MINUTES_S = 360.0


@pytest.fixture(scope="module")
def six_minutes(tmp_path_factory: pytest.TempPathFactory):
    from tests import videos

    path = tmp_path_factory.mktemp("long") / "six-minutes.mp4"
    return videos.make_video(path, seconds=SIX_MINUTES_S, width=32, height=32, fps=1)


def test_a_six_minute_video_goes_out_with_its_duration(six_minutes, tmp_path, monkeypatch):
    assert probe(six_minutes).duration_s == pytest.approx(SIX_MINUTES_S)
    prepared = prepare(six_minutes, tmp_path / "out.mp4", SoundtrackOptions())  # the stream's
    request = prepared.request
    assert request[contract.TARGET_DURATION_S.name].tolist() == [[SIX_MINUTES_S]]
    assert request[contract.FRAMES.name].shape[1] == contract.MAX_FRAMES  # one every 2 s
    assert request[contract.FPS.name].tolist() == [[0.5]]
    assert api.request_timeout_s(request) == 3 * SIX_MINUTES_S

    sent = {}

    def infer(url, request, timeout_s=None, tls=None):  # the ensemble's path, up to the call
        sent.update(request=request, timeout_s=timeout_s)
        raise ServerError("not sent: this test has no server")

    monkeypatch.setattr(api, "infer", infer)
    with pytest.raises(ServerError, match="no server"):
        api.score_video(six_minutes, tmp_path / "ensemble.mp4", cuts_s=())
    assert sent["request"][contract.DURATION_S.name].tolist() == [[SIX_MINUTES_S]]
    assert sent["timeout_s"] is None  # infer takes request_timeout_s of it: 1,080 s


def test_the_client_checks_the_interfaces_twenty_minutes():
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    api.build_request(frames, 0.01, contract.MAX_DURATION_S, seed=1)
    with pytest.raises(contract.InvalidInput, match=r"DURATION_S must be in \[1.0, 1200.0\]"):
        api.build_request(frames, 0.01, contract.MAX_DURATION_S + 1, seed=1)
    SoundtrackOptions(duration_s=contract.MAX_DURATION_S).check()


def test_the_deadline_grows_with_the_music_asked_for():
    assert api.default_timeout_s(30.0) == api.DEFAULT_TIMEOUT_S == 900.0
    assert api.default_timeout_s(300.0) == 900.0  # what every request had before
    assert api.default_timeout_s(SIX_MINUTES_S) == 1080.0
    assert api.default_timeout_s(1200.0) == 3600.0
    assert api.default_timeout_s(1200.0, candidates=2) == 7200.0  # composed one after the other
    frames = np.zeros((90, 32, 32, 3), np.uint8)
    options = SoundtrackOptions(candidates=3, cuts_s=())
    stream = build_stream_request(frames, 0.125, options, duration_s=720.0)
    assert api.request_timeout_s(stream) == 3 * 720.0 * 3
    without = {k: v for k, v in stream.items() if k != contract.TARGET_DURATION_S.name}
    assert api.request_timeout_s(without) == 3 * 720.0 * 3  # the server's default: frames / FPS


def test_the_cli_leaves_the_deadline_to_the_music_unless_told():
    args = cli.parser().parse_args(["in.mp4", "-o", "out.mp4"])
    assert args.timeout is None
    assert cli.parser().parse_args(["in.mp4", "-o", "out.mp4", "--timeout", "60"]).timeout == 60
