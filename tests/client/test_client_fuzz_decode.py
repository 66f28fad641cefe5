"""Hostile input to the client's decode: a fixed corpus of truncated, corrupted and mislabelled
files made from real videos. Each one is read or rejected with a VideoError, never another
exception and never a crash: the corpus runs in a child process, so a crash in FFmpeg or decord
shows as a failure naming the file instead of taking the test run down."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from tests import videos

SOURCES = (".mp4", ".mkv", ".avi", ".webm")
TRUNCATE_AT = (0.0, 0.02, 0.3, 0.7, 0.97)  # fractions of the file kept
CORRUPTIONS = 4  # seeded random corruptions per source
# Runs in the child: every file through probe, then sample_frames and the cut detection (`--cuts
# auto` reads every frame); one JSON line per file.
CHILD = """
import json, sys
from v2bgm_client.cuts import detect_cuts
from v2bgm_client.errors import VideoError
from v2bgm_client.video import probe, sample_frames
from v2bgm_contract.interface import check_cuts
for path in sys.argv[1:]:
    try:
        info = probe(path)
        sampled = sample_frames(path, info=info)
        check_cuts(list(detect_cuts(path, info).cuts_s), info.duration_s)
        outcome = "ok" if len(sampled.frames) >= 1 else "no frames returned"
    except VideoError as exc:
        outcome = "VideoError" if str(exc).strip() and "\\n" not in str(exc) else repr(exc)
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"path": path, "outcome": outcome}), flush=True)
"""


def corpus(root: Path) -> list[Path]:
    rng = random.Random(0)
    files = []
    for ext in SOURCES:
        source = videos.make_video(root / f"src{ext}", seconds=3.0, width=96, height=64)
        data = source.read_bytes()
        for fraction in TRUNCATE_AT:
            files.append(root / f"trunc{int(fraction * 100)}{ext}")
            files[-1].write_bytes(data[: int(len(data) * fraction)])
        for i in range(CORRUPTIONS):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 64)):  # flip bytes anywhere, header included
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            if i % 2:  # and overwrite a whole block
                start = rng.randrange(len(mutated))
                mutated[start : start + 512] = bytes(rng.randrange(256) for _ in range(512))
            files.append(root / f"corrupt{i}{ext}")
            files[-1].write_bytes(bytes(mutated))
        other = ".avi" if ext != ".avi" else ".mp4"  # mislabelled: the content of another format
        files.append(root / f"mislabelled_{ext[1:]}{other}")
        files[-1].write_bytes(data)
        files.append(root / f"doubled{ext}")  # two files glued together
        files[-1].write_bytes(data + data)
    for name, content in [
        ("random.mp4", bytes(rng.randrange(256) for _ in range(4096))),
        ("text.mp4", b"this is not a video\n" * 100),
        ("empty.mkv", b""),
        ("zeros.webm", bytes(65536)),
        ("mp4_header_only.mp4", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"),
    ]:
        files.append(root / name)
        files[-1].write_bytes(content)
    return files


def test_every_hostile_file_is_read_or_rejected_with_a_video_error(tmp_path):
    files = corpus(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    outcomes = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        outcomes[Path(record["path"]).name] = record["outcome"]
    crashed = [f.name for f in files if f.name not in outcomes]
    assert result.returncode == 0 and not crashed, (
        f"exit {result.returncode} at {crashed[:1]}: {result.stderr[-2000:]}"
    )
    bad = {name: o for name, o in outcomes.items() if o not in ("ok", "VideoError")}
    assert not bad, bad
    rejected = sum(o == "VideoError" for o in outcomes.values())
    assert rejected >= len(SOURCES) * 2, outcomes  # the test sees rejections, not only reads
