"""mux_audio on real files: video copied packet for packet, music as the only audio track."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from v2bgm_client import mux
from v2bgm_client.errors import MuxError
from v2bgm_client.mux import AUDIO_RATE, check_output_path, mux_audio
from v2bgm_client.video import probe, sample_frames

from tests import videos

SIZE = {"seconds": 3, "width": 322, "height": 182}
# (input name, make_video kwargs, music codec in the output)
CONTAINERS = [
    ("c.mp4", {}, "aac"),
    ("c.mov", {}, "aac"),
    ("c.mkv", {}, "aac"),
    ("c.avi", {}, "aac"),
    ("mjpeg.avi", {"codec": "mjpeg"}, "aac"),
    ("c.mpg", {}, "mp2"),  # MPEG program streams carry MPEG audio only
    ("mpeg2.mpg", {"codec": "mpeg2video"}, "mp2"),
    ("c.webm", {}, "opus"),  # WebM carries Opus or Vorbis only
    ("vp9.webm", {"codec": "libvpx-vp9"}, "opus"),
]
FRAME_SAMPLES = {"aac": 1024, "opus": 960, "mp2": 1152}


def _music(seconds: float, rate: int = 44_100, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _audio_streams(path: Path) -> list[tuple[str, int, int]]:
    with av.open(str(path)) as f:
        return [
            (s.codec_context.name, s.codec_context.sample_rate, s.channels) for s in f.streams.audio
        ]


def _decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as f:
        return np.concatenate([fr.to_ndarray()[0] for fr in f.decode(audio=0)])


def _relative_pts(packets: list[videos.Packet]) -> list[float]:
    start = min(p.pts_s for p in packets)
    return [p.pts_s - start for p in packets]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("case", CONTAINERS, ids=lambda c: c[0])
def test_video_copied_and_music_added(make_video, tmp_path, case):
    name, kwargs, codec = case
    src = make_video(f"audio-{name}", **SIZE, **kwargs, with_audio=True)
    out = tmp_path / f"out{src.suffix}"

    report = mux_audio(src, _music(2.0), 44_100, out)

    assert not report.reencoded and report.note is None
    assert report.replaced_audio
    before, after = videos.video_packets(src), videos.video_packets(out)
    assert [p.data for p in after] == [p.data for p in before]  # bytes, packet for packet
    assert _relative_pts(after) == pytest.approx(_relative_pts(before), abs=1e-3)
    # The music replaced the tone: one stereo track at 48 kHz.
    assert _audio_streams(out) == [(codec, AUDIO_RATE, 2)]
    assert report.audio_codec.endswith(codec) and report.sample_rate == AUDIO_RATE
    assert report.channels == 2
    # As long as the video, within one frame of the audio codec.
    video_s = videos.video_duration(src)
    assert videos.video_duration(out) == pytest.approx(video_s, abs=1e-3)
    assert videos.audio_duration(out) == pytest.approx(video_s, abs=FRAME_SAMPLES[codec] / 48_000)
    assert report.video_duration_s == pytest.approx(video_s, abs=1e-3)
    # And the result is a video the client itself can read again.
    assert [videos.frame_index(f) for f in sample_frames(out).frames] == [12, 36, 60]


@pytest.mark.parametrize("seconds", [0.5, 2.9, 3.0, 7.0], ids=["short", "almost", "exact", "long"])
@pytest.mark.parametrize("rate", [16_000, 44_100, 48_000])
def test_music_padded_or_cut_to_the_video(make_video, tmp_path, seconds, rate):
    src = make_video("c.mp4", **SIZE)
    out = tmp_path / "out.mp4"
    mux_audio(src, _music(seconds, rate), rate, out)
    assert videos.audio_duration(out) == pytest.approx(3.0, abs=1024 / 48_000)
    pcm = _decoded_audio(out)
    # The music is there at its level (a 0.5 sine: RMS 0.35) and silence after it ends.
    heard = pcm[: int(min(seconds, 3.0) * AUDIO_RATE) - 2048]
    assert np.sqrt(np.mean(heard[2048:] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    if seconds < 2.9:
        assert np.abs(pcm[int(seconds * AUDIO_RATE) + 2048 :]).max() < 1e-3


def test_mp4_into_mkv_and_mpg_into_mp4_copy(make_video, tmp_path):
    for name, kwargs, target in [
        ("c.mp4", {}, ".mkv"),
        ("c.mpg", {}, ".mp4"),
        ("c.mkv", {}, ".mov"),
    ]:
        src = make_video(name, **SIZE, **kwargs)
        out = tmp_path / f"{src.stem}{target}"
        report = mux_audio(src, _music(3.0), 44_100, out)
        assert not report.reencoded
        assert [p.data for p in videos.video_packets(out)] == [
            p.data for p in videos.video_packets(src)
        ]


@pytest.mark.skipif(videos.H264 != "libx264", reason="needs H.264 input")
def test_h264_into_avi_gets_start_codes_not_reencoded(make_video, tmp_path):
    src = make_video("c.mp4", **SIZE)
    report = mux_audio(src, _music(3.0), 44_100, tmp_path / "out.avi")
    assert not report.reencoded and report.video_codec == "h264"
    assert len(videos.video_packets(tmp_path / "out.avi")) == 72
    frames = sample_frames(tmp_path / "out.avi").frames
    assert [videos.frame_index(f) for f in frames] == [12, 36, 60]


@pytest.mark.parametrize(
    ("name", "kwargs", "target", "codec"),
    [
        ("c.webm", {}, ".mp4", "libx264" if videos.H264 == "libx264" else "mpeg4"),
        ("c.mp4", {}, ".webm", "libvpx-vp9"),
        ("c.webm", {}, ".mpg", "mpeg2video"),
    ],
    ids=["vp8-to-mp4", "h264-to-webm", "vp8-to-mpg"],
)
def test_reencode_where_the_container_cannot_hold_the_codec(
    make_video, tmp_path, name, kwargs, target, codec
):
    src = make_video(name, **SIZE, **kwargs)
    out = tmp_path / f"out{target}"
    report = mux_audio(src, _music(3.0), 44_100, out)
    assert report.reencoded and report.video_codec == codec
    assert report.note and "re-encoded" in report.note and probe(src).codec in report.note
    info = probe(out)
    assert info.frame_count == 72 and info.duration_s == pytest.approx(3.0, abs=2e-3)
    frames = sample_frames(out, info=info).frames
    assert [videos.frame_index(f) for f in frames] == [12, 36, 60]
    assert videos.audio_duration(out) == pytest.approx(3.0, abs=1152 / 48_000)


def test_rotation_kept(make_video, tmp_path):
    src = make_video("phone.mp4", seconds=2, width=160, height=96, rotation=-90)
    for target in (".mp4", ".webm"):  # copied, and re-encoded
        out = tmp_path / f"out{target}"
        mux_audio(src, _music(2.0), 44_100, out)
        assert probe(out).rotation == 270


def test_output_replaced_atomically_with_usual_mode(make_video, tmp_path):
    src = make_video("c.mp4", **SIZE)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    mux_audio(src, _music(1.0), 44_100, out)
    assert out.stat().st_size > 1000
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("interrupt", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing(make_video, tmp_path, monkeypatch, interrupt):
    src = make_video("c.mp4", **SIZE)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")  # an earlier result must survive a failed run
    real = mux._interleave

    def failing(video, audio):
        for i, packet in enumerate(real(video, audio)):
            if i == 20:  # a header and some packets are on disk by now
                raise interrupt
            yield packet

    monkeypatch.setattr(mux, "_interleave", failing)
    with pytest.raises(MuxError if isinstance(interrupt, Exception) else KeyboardInterrupt) as err:
        mux_audio(src, _music(3.0), 44_100, out)
    if isinstance(interrupt, Exception):
        assert "disk on fire" in str(err.value) and "\n" not in str(err.value)
    assert out.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.full(100, np.nan, np.float32), 48_000, "NaN"),
        (np.zeros((3, 100), np.float32), 48_000, "1 or 2 channels"),
        (np.zeros((1, 2, 100), np.float32), 48_000, "1 or 2 channels"),
        (np.zeros(100, np.int16), 48_000, "float"),
        (np.zeros(100, np.float32), 0, "sample rate"),
    ],
    ids=["nan", "three-channels", "3-d", "int", "rate"],
)
def test_bad_audio_rejected_before_writing(make_video, tmp_path, audio, rate, message):
    src = make_video("c.mp4", **SIZE)
    with pytest.raises(MuxError, match=message):
        mux_audio(src, audio, rate, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_bad_output_paths(make_video, tmp_path):
    src = make_video("c.mp4", **SIZE)
    cases = [
        (tmp_path / "out.xyz", "unknown video container"),
        (tmp_path / "out", "unknown video container"),
        (tmp_path / "missing" / "out.mp4", "no such directory"),
        (tmp_path, "is a directory"),
        (src, "overwrite the input"),
    ]
    for path, message in cases:
        with pytest.raises(MuxError, match=message):
            check_output_path(path, src)
        with pytest.raises(MuxError, match=message):
            mux_audio(src, _music(1.0), 44_100, path)
    assert list(tmp_path.iterdir()) == []
    assert check_output_path(tmp_path / "ok.MKV") == "matroska"


@pytest.mark.parametrize("out_rate", mux.SAMPLE_RATES)
def test_stereo_music_keeps_its_channels_at_either_rate(make_video, tmp_path, out_rate):
    src = make_video("c.mp4", **SIZE)
    out = tmp_path / "out.mp4"
    left, right = _music(3.0, 44_100, 0.5), _music(3.0, 44_100, 0.1)
    report = mux_audio(src, np.stack([left, right]), 44_100, out, out_rate=out_rate)
    assert _audio_streams(out) == [("aac", out_rate, 2)] and report.sample_rate == out_rate
    assert videos.audio_duration(out) == pytest.approx(3.0, abs=1024 / out_rate)
    with av.open(str(out)) as f:
        pcm = np.concatenate([fr.to_ndarray() for fr in f.decode(audio=0)], axis=1)  # planar
    rms = np.sqrt(np.mean(pcm[:, 4096 : out_rate * 2] ** 2, axis=1))
    assert rms[0] == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert rms[1] == pytest.approx(0.1 / np.sqrt(2), rel=0.05)


def test_unsupported_output_rate_rejected(make_video, tmp_path):
    src = make_video("c.mp4", **SIZE)
    with pytest.raises(MuxError, match="44100 or 48000 Hz, got 32000"):
        mux_audio(src, _music(1.0), 44_100, tmp_path / "out.mp4", out_rate=32_000)
    assert list(tmp_path.iterdir()) == []
