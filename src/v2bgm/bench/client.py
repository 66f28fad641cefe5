"""The client's own share of scoring a video: probing and sampling frames (decord), muxing the
music back in (PyAV), for 10/30/60-s H.264 videos. No server: this runs where the client runs.

    python -m v2bgm.bench.client [--size 1280x720] [--durations 10 30 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from v2bgm_client.mux import mux_audio
from v2bgm_client.video import probe, sample_frames

FPS = 30
SAMPLE_RATE = 44100


def make_video(path: Path, seconds: float, width: int, height: int) -> Path:
    """A moving gradient, H.264 at 30 fps (what a phone or an editor exports)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        for i in range(int(seconds * FPS)):
            rgb = np.broadcast_to((x + 4 * i) % 256, (height, width, 3)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def measure(path: Path, seconds: float, work: Path) -> dict:
    t0 = time.perf_counter()
    info = probe(path)
    sampled = sample_frames(path, info=info)
    t1 = time.perf_counter()
    music = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * SAMPLE_RATE))
    mux_audio(
        path, music.astype(np.float32), SAMPLE_RATE, work / f"scored_{seconds:g}.mp4", info=info
    )
    t2 = time.perf_counter()
    return {
        "video_s": seconds,
        "frames_sent": len(sampled.frames),
        "decode_sample_s": round(t1 - t0, 3),
        "mux_s": round(t2 - t1, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seconds in args.durations:
            video = make_video(work / f"in_{seconds:g}.mp4", seconds, width, height)
            report.append({"size": args.size, **measure(video, seconds, work)})
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
