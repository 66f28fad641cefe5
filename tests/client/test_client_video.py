"""probe / sample_frames on real files of every container the service accepts."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from v2bgm_client.errors import VideoError
from v2bgm_client.video import frame_size, probe, sample_frames, sample_indices
from v2bgm_contract import interface as contract

from tests import videos

H264 = "h264" if videos.H264 == "libx264" else "mpeg4"
# (file name, make_video kwargs, expected codec, expected demuxer)
CONTAINERS = [
    ("c.mp4", {}, H264, "mov,mp4,m4a,3gp,3g2,mj2"),
    ("c.mov", {}, H264, "mov,mp4,m4a,3gp,3g2,mj2"),
    ("c.mkv", {}, H264, "matroska,webm"),
    ("c.avi", {}, "mpeg4", "avi"),
    ("mjpeg.avi", {"codec": "mjpeg"}, "mjpeg", "avi"),
    ("c.mpg", {}, "mpeg1video", "mpeg"),
    ("mpeg2.mpg", {"codec": "mpeg2video"}, "mpeg2video", "mpeg"),
    ("c.webm", {}, "vp8", "matroska,webm"),
    ("vp9.webm", {"codec": "libvpx-vp9"}, "vp9", "matroska,webm"),
]
ODD = {"seconds": 3, "width": 322, "height": 182}  # 3 s at 24 fps: 72 frames


def _ids(case: tuple) -> str:
    return case[0]


@pytest.mark.parametrize("with_audio", [False, True], ids=["silent", "audio"])
@pytest.mark.parametrize("case", CONTAINERS, ids=_ids)
def test_probe_and_sample_each_container(make_video, case, with_audio):
    name, kwargs, codec, demuxer = case
    path = make_video(f"{with_audio}-{name}", **ODD, **kwargs, with_audio=with_audio)

    info = probe(path)
    assert (info.codec, info.container) == (codec, demuxer)
    assert (info.width, info.height, info.rotation) == (322, 182, 0)
    assert info.fps == pytest.approx(24.0)
    assert info.frame_count == 72
    assert info.duration_s == pytest.approx(3.0, abs=2e-3)  # Matroska stores milliseconds
    assert info.has_audio is with_audio

    sampled = sample_frames(path, info=info)
    assert sampled.frames.dtype == np.uint8 and sampled.frames.flags.c_contiguous
    assert sampled.frames.shape == (3, 182, 322, 3)  # below MAX_FRAME_SIDE: kept as is
    assert sampled.indices.tolist() == [12, 36, 60]  # the middle of each second
    # The frames really are those frames (MPEG program streams defeat decord's seeking).
    assert [videos.frame_index(f) for f in sampled.frames] == [12, 36, 60]
    assert sampled.fps == pytest.approx(contract.SAMPLE_FPS)
    assert sampled.duration_s == info.duration_s
    contract.check_frames(sampled.frames)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((180, 320), (180, 320)), ((1920, 1080), (448, 252)), ((20, 12), (20, 16))],
    ids=["portrait", "full-hd", "tiny"],
)
def test_sample_resizes_keeping_aspect(make_video, size, expected):
    w, h = size
    path = make_video(f"size{w}x{h}.mp4", seconds=1, width=w, height=h)
    sampled = sample_frames(path)
    assert sampled.frames.shape == (1, expected[1], expected[0], 3)
    assert [videos.frame_index(f) for f in sampled.frames] == [12]
    contract.check_frames(sampled.frames)


def test_sample_avoids_widths_decord_cannot_produce(make_video):
    # decord 0.6 fails on a resize to 16, 24, 48 or 72 pixels wide; one more pixel works.
    path = make_video("w72.mp4", seconds=1, width=72, height=40)
    frames = sample_frames(path).frames
    assert frames.shape == (1, 40, 73, 3)
    assert videos.frame_index(frames[0]) == 12


def test_rotated_phone_video_comes_upright(make_video):
    # Stored landscape, shown portrait: a phone held upright records rotation -90 (= 270).
    path = make_video("phone.mp4", seconds=2, width=160, height=96, rotation=-90)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (96, 160, 270)
    frames = sample_frames(path, info=info).frames
    assert frames.shape == (2, 160, 96, 3)
    # Turning the upright frame back by the rotation gives the frame as drawn.
    assert [videos.frame_index(np.rot90(f, 1)) for f in frames] == [12, 36]


def test_thirty_seconds(make_video):
    path = make_video("long.mp4", seconds=30, width=96, height=64, fps=10)
    info = probe(path)
    assert (info.frame_count, info.duration_s) == (300, pytest.approx(30.0))
    sampled = sample_frames(path, info=info)
    assert sampled.indices.tolist() == list(range(5, 300, 10))
    assert [videos.frame_index(f) for f in sampled.frames] == sampled.indices.tolist()
    assert sampled.fps == pytest.approx(1.0)


def test_cap_spaces_frames_uniformly(make_video):
    path = make_video("long.mp4", seconds=30, width=96, height=64, fps=10)
    sampled = sample_frames(path, max_frames=8)
    assert len(sampled.frames) == 8
    steps = np.diff(sampled.indices)
    assert steps.min() >= 37 and steps.max() <= 38  # 300 frames / 8 = 37.5 apart
    assert sampled.indices[0] == 18  # the middle of the first eighth
    assert sampled.fps == pytest.approx(8 / 30)  # the rate the frames now represent
    assert [videos.frame_index(f) for f in sampled.frames] == sampled.indices.tolist()


def test_default_cap_is_max_frames(make_video):
    seconds = contract.MAX_FRAMES + 20
    path = make_video("over-cap.mp4", seconds=seconds, width=32, height=32, fps=2)
    sampled = sample_frames(path)
    assert len(sampled.frames) == contract.MAX_FRAMES
    assert sampled.fps == pytest.approx(contract.MAX_FRAMES / seconds)
    assert len(set(np.diff(sampled.indices).tolist()) - {2, 3}) == 0  # 400/180 = 2.2 apart
    contract.check_frames(sampled.frames)


def test_other_sampling_rates(make_video):
    path = make_video("c.mp4", **ODD)
    five = sample_frames(path, fps=5.0)
    assert len(five.frames) == 15 and five.fps == pytest.approx(5.0)
    assert [videos.frame_index(f) for f in five.frames] == five.indices.tolist()
    # Never denser than the source: every frame, at the source's rate.
    every = sample_frames(path, fps=100.0)
    assert every.indices.tolist() == list(range(72)) and every.fps == pytest.approx(24.0)


@pytest.mark.parametrize(("seconds", "indices"), [(1 / 24, [0]), (1.0, [12])])
def test_short_videos_give_a_frame(make_video, seconds, indices):
    path = make_video(f"short{len(indices)}-{seconds:.2f}.mp4", seconds=seconds)
    info = probe(path)
    assert info.duration_s == pytest.approx(seconds)
    assert sample_frames(path, info=info).indices.tolist() == indices


def test_sample_indices_rules():
    assert sample_indices(72, 24.0, 1.0, 180)[0].tolist() == [12, 36, 60]
    assert sample_indices(1, 24.0, 1.0, 180)[0].tolist() == [0]
    assert sample_indices(30, 24.0, 1.0, 180)[0].tolist() == [12, 29]  # partial last second
    idx, fps = sample_indices(1000, 10.0, 1.0, 10)
    assert idx.tolist() == [50, 150, 250, 350, 450, 550, 650, 750, 850, 950]
    assert fps == pytest.approx(0.1)
    with pytest.raises(ValueError):
        sample_indices(0, 24.0)


def test_frame_size_rules():
    side = contract.MAX_FRAME_SIDE
    assert frame_size(1920, 1080) == (side, round(1080 * side / 1920))
    assert frame_size(1080, 1920) == (round(1080 * side / 1920), side)
    assert frame_size(322, 182) == (322, 182)  # small videos are not scaled up...
    assert frame_size(8, 4) == (
        contract.MIN_FRAME_SIDE,
        contract.MIN_FRAME_SIDE,
    )  # ...except to the minimum
    assert frame_size(16384, 100) == (side, contract.MIN_FRAME_SIDE)  # extreme aspect
    assert frame_size(1000, 1000, max_side=100) == (100, 100)


# --- errors -------------------------------------------------------------------------------------


def _one_line_error(path: Path, *words: str) -> str:
    with pytest.raises(VideoError) as err:
        probe(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message
    return message


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.mp4", "no such file")
    with pytest.raises(VideoError, match="no such file"):
        sample_frames(tmp_path / "nope.mp4")
    assert issubclass(VideoError, ValueError)


def test_directory_and_empty_file(tmp_path):
    _one_line_error(tmp_path, "not a regular file")
    (tmp_path / "empty.mp4").touch()
    _one_line_error(tmp_path / "empty.mp4", "empty file")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    _one_line_error(path, "not a readable video")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 50)
    _one_line_error(path, "not a readable video")


def test_truncated_mp4(make_video, tmp_path):
    data = make_video("c.mp4", **ODD).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    _one_line_error(path, "not a readable video")


def test_truncated_faststart_mp4(tmp_path):
    # With the index first, FFmpeg reads what is there and stops quietly; decord then fails.
    full = tmp_path / "fast.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream(videos.H264, rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(48):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8))
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    data = full.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    _one_line_error(path, "truncated")


@pytest.mark.parametrize("name", ["tone.m4a", "tone.wav", "tone.mp3"])
def test_audio_only(tmp_path, name):
    _one_line_error(videos.make_audio(tmp_path / name, seconds=0.5), "no video stream")


def test_zero_frames(tmp_path):
    path = tmp_path / "empty.avi"  # AVI keeps a video stream that never got a frame
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    _one_line_error(path, "zero frames")


def test_too_long(make_video):
    path = make_video(
        "too-long.mp4", seconds=contract.MAX_DURATION_S + 1, width=32, height=32, fps=1
    )
    _one_line_error(path, "at most")


def test_absurd_resolution(make_video):
    path = make_video("wide.avi", seconds=1 / 24, width=16400, height=16, codec="mjpeg")
    _one_line_error(path, "16400x16")


def test_still_image(tmp_path):
    path = tmp_path / "still.png"
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8))))
        out.mux(stream.encode())
    _one_line_error(path, "still image")


def _write_ts(path: Path, n_frames: int = 75) -> Path:
    """H.264 with B-frames in MPEG-TS: PyAV decodes it, decord 0.6 cannot."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(videos.H264, rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(videos._index_frame(i, 320, 180, n_frames))
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_pyav_takes_over_where_decord_fails(tmp_path, capfd):
    path = _write_ts(tmp_path / "camcorder.ts")
    sampled = sample_frames(path)
    assert sampled.decoder in ("decord", "pyav")  # pyav with decord 0.6
    assert sampled.frames.shape == (3, 180, 320, 3)
    assert [videos.frame_index(f) for f in sampled.frames] == sampled.indices.tolist()
    assert capfd.readouterr().err == ""  # decord's FFmpeg kept quiet


def test_pyav_fallback_turns_frames_like_decord(make_video):
    from v2bgm_client.video import _sample_with_pyav

    path = make_video("phone.mp4", seconds=2, width=160, height=96, rotation=-90)
    info = probe(path)
    by_decord = sample_frames(path, info=info)
    by_pyav, _ = _sample_with_pyav(info, by_decord.indices, info.width, info.height)
    assert by_pyav.shape == by_decord.frames.shape
    assert np.abs(by_pyav.astype(int) - by_decord.frames).mean() < 2
