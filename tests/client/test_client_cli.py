"""`v2bgm`: every failure is one `v2bgm: error:` line on stderr, a non-zero exit, no OUTPUT."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from v2bgm_client.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_error_line(code: int, err: str, *words: str) -> None:
    assert code != 0
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("v2bgm: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


def test_missing_file(capsys, tmp_path):
    code, _, err = _run(capsys, str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "out.mp4"))
    _assert_one_error_line(code, err, "no such file", "nope.mp4")
    assert list(tmp_path.iterdir()) == []


def test_not_a_video(capsys, tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("hello\n")
    code, _, err = _run(capsys, str(bogus), "-o", str(tmp_path / "out.mp4"))
    _assert_one_error_line(code, err, "not a readable video")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_server_down(capsys, tmp_path, make_video, unused_url):
    src = make_video("c.mp4", seconds=3, width=322, height=182)
    out = tmp_path / "out.mp4"
    code, _, err = _run(capsys, str(src), "-o", str(out), "--url", unused_url, "--timeout", "5")
    _assert_one_error_line(code, err, "cannot reach the server", unused_url)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--seed", "-1"], ["--seed"]),
        (["--seed", "x"], ["not an integer"]),
        (["--timeout", "0"], ["must be positive"]),
        (["--sample-rate", "32000"], ["--sample-rate", "invalid choice"]),
    ],
)
def test_bad_arguments(capsys, tmp_path, make_video, args, words):
    src = make_video("c.mp4", seconds=3, width=322, height=182)
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "out.mp4"), *args)
    _assert_one_error_line(code, err, *words)
    assert code == 2


def test_bad_output(capsys, tmp_path, make_video):
    src = make_video("c.mp4", seconds=3, width=322, height=182)
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "out.xyz"))
    _assert_one_error_line(code, err, "unknown video container")


@pytest.mark.parametrize("entry", ["module", "script"])
def test_entry_points(tmp_path, unused_url, entry):
    # As a user runs it: a separate process, real stderr.
    if entry == "module":
        command = [sys.executable, "-m", "v2bgm_client"]
    else:
        command = [str(Path(sys.executable).parent / "v2bgm")]
    out = tmp_path / "out.mp4"
    done = subprocess.run(
        [*command, str(tmp_path / "nope.mov"), "-o", str(out), "--url", unused_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    _assert_one_error_line(done.returncode, done.stderr, "no such file")
    assert done.stdout == "" and not out.exists()


def test_success_output(capsys, tmp_path, monkeypatch):
    # The printing only: the round trip against a real server is an integration test.
    from v2bgm_client import cli
    from v2bgm_client.mux import MuxReport
    from v2bgm_client.soundtrack import Output, SoundtrackResult

    report = MuxReport(
        output_path=tmp_path / "out.mp4",
        container="mp4",
        video_codec="libx264",
        reencoded=True,
        note="re-encoded the video from vp8 to libx264: a mp4 file cannot hold vp8",
        audio_codec="aac",
        sample_rate=48_000,
        channels=2,
        video_duration_s=3.0,
        audio_duration_s=3.0,
        replaced_audio=False,
    )
    result = SoundtrackResult(
        input_path=tmp_path / "in.webm",
        caption="A dog surfs.",
        tags="surf rock upbeat",
        lyrics="",
        seed=5,
        music_s=3.0,
        sample_rate=44_100,
        frames_sent=3,
        mode="replace",
        target_lufs=-14.0,
        outputs=[Output(0, 5, report.output_path, None, -14.0, report)],
        timings={"total": 1.0},
    )
    monkeypatch.setattr(cli, "make_soundtrack", lambda *args, **kwargs: result)
    code, out, err = _run(capsys, "in.webm", "-o", str(report.output_path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == ["caption: A dog surfs.", "tags: surf rock upbeat", f"note: {report.note}"]
    assert str(report.output_path) in lines[3] and "seed 5" in lines[3]
