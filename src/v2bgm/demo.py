"""`make demo`: serve the models, score a sample video with the client, stop the server.

The sample is a 10-second clip made here (moving colour bands over a 440 Hz tone), so the demo
needs nothing from the network; pass `--video` to score a file of your own.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from v2bgm_client.api import score_video

from v2bgm import checkpoints
from v2bgm.serve import DEFAULT_PORTS, TritonServer, has_gpu

SAMPLE_SECONDS = 10
SAMPLE_SIZE = (640, 360)
SAMPLE_FPS = 25
AUDIO_RATE = 48000


def make_sample_video(path: Path) -> Path:
    """An H.264/AAC MP4 with motion and a tone, like a phone clip."""
    width, height = SAMPLE_SIZE
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=SAMPLE_FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        x = np.arange(width)[None, :, None]
        for i in range(SAMPLE_SECONDS * SAMPLE_FPS):
            phase = 2 * np.pi * (x / width + i / (2 * SAMPLE_FPS))
            rgb = (127 + 120 * np.sin(phase + np.array([0, 2, 4]))).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(rgb, height, axis=0), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode())
        t = np.arange(SAMPLE_SECONDS * AUDIO_RATE) / AUDIO_RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], "fltp", "mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts, frame.time_base = start, Fraction(1, AUDIO_RATE)
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m v2bgm.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--weights", type=Path, default=checkpoints.weights_root())
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--video", type=Path, default=None, help="score this file instead")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    video = args.video or make_sample_video(args.out / "sample.mp4")
    output = args.out / f"{video.stem}_scored.mp4"
    server = TritonServer(
        repository=Path("model_repository"),
        weights=args.weights,
        gpu=has_gpu(),
        log_path=args.out / "tritonserver.log",
    )
    started = time.monotonic()
    server.start()
    try:
        server.wait_ready()
        print(f"server ready in {time.monotonic() - started:.1f} s (log: {server.log_path})")
        started = time.monotonic()
        result = score_video(
            video, output, url=f"127.0.0.1:{DEFAULT_PORTS['grpc']}", seed=args.seed
        )
        print(f"scored in {time.monotonic() - started:.1f} s")
    finally:
        server.stop()
    print(f"caption: {result.caption}")
    print(f"tags:    {result.tags}")
    print(f"output:  {result.output_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
