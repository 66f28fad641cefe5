"""The client's options on generated videos, against the real server: the CLI as a user runs it
(a separate process), batch mode (the asyncio API) and resuming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
from v2bgm_client.mux import mux_audio

from tests import videos
from v2bgm import plan

pytestmark = pytest.mark.server
LOUDNESS_TOLERANCE_LU = 1.0


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "v2bgm_client", *args], capture_output=True, text=True, timeout=900
    )


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio track as float [samples, channels], and its rate."""
    with av.open(str(path)) as f:
        stream = f.streams.audio[0]
        parts = []
        for fr in f.decode(stream):
            data = fr.to_ndarray()  # planar: [channels, n]; packed: [1, n * channels]
            channels = len(fr.layout.channels)
            parts.append(data if fr.format.is_planar else data.reshape(-1, channels).T)
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(parts, axis=-1).astype(np.float64)
    if samples.dtype.kind != "f" or np.abs(samples).max() > 1.5:  # integer PCM
        samples = samples / 2 ** (31 if np.abs(samples).max() > 2**16 else 15)
    return samples.T, rate


def lufs(path: Path) -> float:
    samples, rate = decoded_audio(path)
    return pyloudnorm.Meter(rate).integrated_loudness(samples)


def test_candidates_mix_loudness_keep_audio_json(tmp_path, grpc_url):
    src = videos.make_video(tmp_path / "clip.mp4", seconds=2, with_audio=True)
    out = tmp_path / "scored.mp4"
    args = ["--seed", "3", "--candidates", "2", "--duration", "1", "--mode", "mix"]
    args += ["--lufs", "-16", "--keep-audio", "--json", "--url", grpc_url]
    done = run_cli(str(src), "-o", str(out), *args)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # --json: nothing else on stdout
    assert report["caption"].strip() and report["tags"].strip() and report["seed"] == 3
    assert (report["mode"], report["target_lufs"], report["music_s"]) == ("mix", -16.0, 1.0)
    assert {"read_video", "captioning", "stage1", "stage2", "decode", "server", "write"} <= set(
        report["timings"]
    )
    outputs = report["outputs"]
    assert [o["seed"] for o in outputs] == [3, 4]
    assert [Path(o["path"]).name for o in outputs] == ["scored-1.mp4", "scored-2.mp4"]
    assert not out.exists()
    for o in outputs:
        path, music = Path(o["path"]), Path(o["audio_path"])
        assert music.suffix == ".flac" and music.exists()
        # The picture is untouched; the track as loud as asked, measured on the file.
        assert [p.data for p in videos.video_packets(path)] == [
            p.data for p in videos.video_packets(src)
        ]
        assert lufs(path) == pytest.approx(-16.0, abs=LOUDNESS_TOLERANCE_LU)
        assert lufs(music) == pytest.approx(-16.0, abs=LOUDNESS_TOLERANCE_LU)
        samples, rate = decoded_audio(path)
        assert np.abs(samples).max() < 1.0  # no clipping
        assert (samples.shape[1], rate) == (2, 48_000)  # stereo, 48 kHz
        assert (o["audio_channels"], o["audio_sample_rate"]) == (2, 48_000)
    # Two seeds, two soundtracks.
    assert not np.array_equal(
        decoded_audio(Path(outputs[0]["audio_path"]))[0],
        decoded_audio(Path(outputs[1]["audio_path"]))[0],
    )


def test_duck_quiet_default_loudness(tmp_path, grpc_url):
    # The original: silent for 1 s, then a loud tone; the music ducks under it.
    silent = videos.make_video(tmp_path / "silent.mp4", seconds=2)
    t = np.arange(48_000) / 48_000
    sound = np.concatenate([np.zeros(48_000), 0.5 * np.sin(2 * np.pi * 220 * t)])
    src = mux_audio(silent, sound.astype(np.float32), 48_000, tmp_path / "talk.mp4").output_path
    out = tmp_path / "ducked.mkv"
    done = run_cli(str(src), "-o", str(out), "--mode", "duck", "--quiet", "--url", grpc_url)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    assert lufs(out) == pytest.approx(-14.0, abs=LOUDNESS_TOLERANCE_LU)
    assert videos.audio_duration(out) == pytest.approx(videos.video_duration(src), abs=0.03)


def test_cuts_given_make_the_sections_and_the_json_reports_them(tmp_path, grpc_url):
    src = videos.make_video(tmp_path / "cuts.mp4", seconds=10)
    out = tmp_path / "cut.mp4"
    done = run_cli(str(src), "-o", str(out), "--cuts", "4.5,5.5", "--json", "--url", grpc_url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cuts_s"] == [4.5, 5.5]  # as given; 5.5 is too close to carry a section
    assert report["cuts_source"] == "given" and report["timings"]["detect_cuts"] == 0
    (output,) = report["outputs"]
    assert output["sections"] == [
        {"label": "[verse]", "start_s": 0.0, "end_s": 4.5},
        {"label": "[outro]", "start_s": 4.5, "end_s": 10.0},
    ]
    samples, rate = decoded_audio(out)
    assert (samples.shape[1], rate) == (2, 48_000)
    assert videos.audio_duration(out) == pytest.approx(videos.video_duration(src), abs=0.05)
    bad = run_cli(str(src), "-o", str(tmp_path / "bad.mp4"), "--cuts", "12", "--url", grpc_url)
    assert bad.returncode != 0 and "CUTS_S" in bad.stderr and "10 s" in bad.stderr


def test_cuts_found_in_the_video_make_the_sections(tmp_path, grpc_url):
    # --cuts auto, the default: hard cuts at known times (5.6 too close to 4.3 to carry a
    # section) and a cross-fade, which is no cut.
    real = [4.3, 5.6, 8.6]
    src = videos.make_shots(
        tmp_path / "shots.mp4", 13, cuts_s=real, fades_s=[10.0], fade_s=1.0, fps=25, grain=4
    )
    done = run_cli(str(src), "-o", str(tmp_path / "scored.mp4"), "--json", "--url", grpc_url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cuts_source"] == "auto" and report["timings"]["detect_cuts"] > 0
    found = report["cuts_s"]
    assert len(found) == len(real) and all(
        abs(f - r) <= 0.25 for f, r in zip(found, real, strict=True)
    )
    (output,) = report["outputs"]
    sections = output["sections"]
    kept = plan.kept_cuts(report["music_s"], found)
    assert kept == [found[0], found[2]]
    assert [s["label"] for s in sections] == ["[verse]", "[chorus]", "[outro]"]
    boundaries = [s["start_s"] for s in sections[1:]]
    assert all(abs(b - c) <= 0.5 for b, c in zip(boundaries, kept, strict=True))
    assert sections[-1]["end_s"] == pytest.approx(13.0, abs=0.05)
    # --cuts none: no CUTS_S (2 s of music, too short for an outro: one section).
    args = ["--cuts", "none", "--duration", "2", "--json", "--url", grpc_url]
    none = run_cli(str(src), "-o", str(tmp_path / "plain.mp4"), *args)
    assert none.returncode == 0, none.stderr
    report = json.loads(none.stdout)
    assert (report["cuts_source"], report["cuts_s"]) == ("none", [])
    assert report["outputs"][0]["sections"] == [{"label": "[verse]", "start_s": 0.0, "end_s": 2.0}]


def test_batch_over_a_folder_then_resumed(tmp_path, grpc_url):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", "b.mkv"):
        videos.make_video(folder / name, seconds=1)
    (folder / "notes.txt").write_text("not a video")
    out_dir = tmp_path / "out"
    args = ["--batch", str(folder), "-o", str(out_dir), "--jobs", "2", "--url", grpc_url]
    first = run_cli(*args, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert [(Path(r["input_path"]).name, r["status"]) for r in report] == [
        ("a.mp4", "done"),
        ("b.mkv", "done"),
    ]
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.mp4", "b.mkv"]
    written = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "0 scored, 2 skipped, 0 failed" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == written


def test_batch_failure_is_one_line_and_the_others_go_on(tmp_path, grpc_url):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.mp4").write_text("not a video")
    out_dir = tmp_path / "out"
    done = run_cli("--batch", str(folder), "-o", str(out_dir), "--url", grpc_url)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("v2bgm: error: ") and "broken.mp4" in lines[0]
    assert list(out_dir.iterdir()) == []


def test_a_rejected_stream_reads_as_a_rejected_ensemble_call(grpc_url):
    """Both paths map the server's INVALID_ARGUMENT to the same one-line error."""
    from v2bgm_client import api, stream
    from v2bgm_client.errors import ServerError
    from v2bgm_client.options import SoundtrackOptions

    frames = np.zeros((2, 48, 64, 3), np.uint8)
    request = stream.build_stream_request(frames, 1.0, SoundtrackOptions(tags=("jaz",)))
    with pytest.raises(ServerError) as streamed:
        list(stream.stream_events(grpc_url, request, 120))
    unary = api.build_request(frames, 1.0, 2.0, seed=1, fixed_tags=("jaz",))
    with pytest.raises(ServerError) as called:
        api.infer(grpc_url, unary, 120)
    for err in (streamed, called):
        assert str(err.value).startswith("the server rejected the request: ")
        assert "'jazz'" in str(err.value)
