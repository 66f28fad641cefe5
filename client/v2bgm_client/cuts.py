"""Find a video's cuts (its shot boundaries), where the music's sections may change.

The detector is PySceneDetect's ContentDetector, its default: every frame, decoded at a reduced
size, is compared with the one before in HSV (OpenCV's 8-bit scales); the frame's score is the
mean absolute change of hue, saturation and value, averaged over the three; a frame scoring at
least THRESHOLD starts a new shot unless the last cut was less than MIN_SHOT_S before it (the
library's "suppress" filter, on timestamps instead of frame counts). A gradual fade or a slow pan
changes each frame a little and makes no cut. One change from the library: hue is an angle, so
its difference is taken around the circle (the library's runs 0-179, which turns the slightest
change of a red, or of a skin tone, into a jump across the whole scale).

Why not the library itself: scenedetect 0.7 requires `opencv-python`, the GUI build, which needs
libGL at import and shares its `cv2` folder with `opencv-python-headless`, so pip's metadata
cannot keep it out; 0.6.7 offers a headless extra but caps click below 8.3, which the development
environment's huggingface-hub (click >= 8.4.2, for transformers) rules out; only 0.6.6 would
install, a release that could never be updated, plus 50 MB of OpenCV for one colour conversion.
The detector is this short; its scores match 0.6.6's to 0.15 where no hue crosses 0.

`python -m v2bgm_client.cuts VIDEO...` prints the cuts, their scores and the time taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from v2bgm_contract import interface as contract

from .errors import VideoError
from .video import VideoInfo, probe, video_stream

THRESHOLD = 27.0  # ContentDetector's default score for a cut (the scale: 0-255 per channel)
MIN_SHOT_S = 0.5  # no cut this soon after the last (ContentDetector: 15 frames, 0.5 s at 30 fps)
DETECT_SIDE = 256  # the longer side of the frames compared (PySceneDetect's default downscale)
HUE_SCALE = 180  # OpenCV's 8-bit hue: degrees / 2
_CHUNK = 32  # frames converted to HSV at once

AUTO = "auto"  # cuts found in the video: the value of --cuts and of SoundtrackOptions.cuts_s
SOURCES = ("auto", "given", "none")  # where a request's cuts came from (`--json`'s cuts_source)


@dataclass(frozen=True)
class DetectedCuts:
    """What `detect_cuts` found."""

    cuts_s: tuple[float, ...]  # seconds from the first frame, to the millisecond
    scores: tuple[float, ...]  # each cut's score (THRESHOLD or more)
    frames: int  # frames compared
    seconds: float  # the detection's own time (decoding included)
    dropped: int = 0  # cuts found beyond `max_cuts` and left out (`limit_cuts`)


def hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [..., 3] -> float32 planes [3, ...]: hue, saturation and value as OpenCV's
    COLOR_RGB2HSV gives them for 8-bit images (H in [0, 180), S and V in [0, 255]), unrounded.
    Integer arithmetic where it can: this runs on every frame."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    value = np.maximum(np.maximum(r, g), b)
    span = value - np.minimum(np.minimum(r, g), b)
    sat = span * np.float32(255) / np.maximum(value, 1).astype(np.float32)
    # The hue: which channel is largest picks the third of the circle, the other two the angle.
    is_r = value == r
    is_g = ~is_r & (value == g)
    turn = np.where(is_r, g - b, np.where(is_g, b - r, r - g))
    third = np.float32(HUE_SCALE / 3)
    start = np.where(is_r, np.float32(0), np.where(is_g, third, np.float32(2 * third)))
    hue = (start + turn * np.float32(HUE_SCALE / 6) / np.maximum(span, 1)) % HUE_SCALE
    return np.stack([hue, sat, value.astype(np.float32)])


def frame_scores(planes: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """ContentDetector's score of each frame of `planes` (`hsv` of [T, H, W, 3]: [3, T, H, W])
    against the one before it; the first frame's against `previous` ([3, H, W]), or 0."""
    if previous is None:
        stack, first = planes, [0.0]
    else:
        stack, first = np.concatenate([previous[:, None], planes], axis=1), []
    delta = np.abs(np.diff(stack, axis=1))
    delta[0] = np.minimum(delta[0], HUE_SCALE - delta[0])  # around the circle
    scores = delta.mean(axis=(2, 3)).mean(axis=0)  # each channel's mean, then their average
    return np.concatenate([first, scores])


def pick_cuts(
    times_s: np.ndarray, scores: np.ndarray, threshold: float, min_shot_s: float
) -> list[int]:
    """Indices of the frames that start a shot: score >= threshold, at least `min_shot_s` after
    the last cut (the first frame counts as one)."""
    cuts: list[int] = []
    last = float(times_s[0]) if len(times_s) else 0.0
    for i in np.flatnonzero(scores >= threshold):
        if i > 0 and times_s[i] - last >= min_shot_s:
            cuts.append(int(i))
            last = float(times_s[i])
    return cuts


def limit_cuts(
    cuts_s: Sequence[float], scores: Sequence[float], max_cuts: int = contract.MAX_CUTS
) -> tuple[list[float], list[float]]:
    """At most `max_cuts` cuts (CUTS_S's limit): while there are more, of the two closest
    neighbours the weaker goes. The cuts kept stay spread over the video; those dropped sit in
    flurries of quick cuts, which the section plan would merge into one section anyway."""
    cuts, kept = list(cuts_s), list(scores)
    while len(cuts) > max_cuts:
        gaps = np.diff(cuts)
        i = int(np.argmin(gaps))  # cuts i and i + 1 are the closest pair
        drop = i if kept[i] < kept[i + 1] else i + 1
        del cuts[drop], kept[drop]
    return cuts, kept


def _small_size(width: int, height: int, side: int = DETECT_SIDE) -> tuple[int, int]:
    """(width, height) with the longer side at most `side`, even, keeping the aspect."""
    scale = min(1.0, side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _decode_small(info: VideoInfo) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds from the first frame, RGB uint8 [h, w, 3]) for every frame, in one pass, scaled
    down by FFmpeg (area average). The coded frames: rotation changes no score."""
    fallback_rate = info.fps or 25.0
    with av.open(str(info.path), metadata_errors="ignore") as container:
        stream = video_stream(container)
        if stream is None:  # probe found one; the file changed under us
            raise VideoError(f"{info.path}: no video stream")
        stream.thread_type = "AUTO"  # frame threads: decoding is most of the cost
        # Deblocking smooths block edges, which moves no frame's mean colour: skipped (-25 %).
        stream.codec_context.options = {"skip_loop_filter": "all"}
        size, last = None, None
        for frame in container.decode(stream):
            if size is None:
                size = _small_size(frame.width, frame.height)
            t = frame.time
            if t is None:  # no timestamp: one frame period after the last
                t = info.start_s if last is None else last + 1.0 / fallback_rate
            last = float(t)
            small = frame.reformat(size[0], size[1], format="rgb24", interpolation="AREA")
            yield last - info.start_s, small.to_ndarray()


def detect_cuts(
    path: str | Path,
    info: VideoInfo | None = None,
    threshold: float = THRESHOLD,
    min_shot_s: float = MIN_SHOT_S,
    max_cuts: int = contract.MAX_CUTS,
) -> DetectedCuts:
    """The cuts in the video at `path` (`info`: its `probe`, when the caller has it).

    The cut's time is the start of the first frame of the new shot, from the stream's timestamps,
    counted from the first frame. At most `max_cuts` (`limit_cuts`). Best effort past the probe:
    a decoding error midway ends the search, keeping the cuts found before it.
    """
    clock = time.perf_counter()
    info = info or probe(path)
    times: list[float] = []
    scores: list[np.ndarray] = []
    chunk: list[np.ndarray] = []
    previous: np.ndarray | None = None

    def flush() -> None:
        nonlocal previous
        frames = hsv(np.stack(chunk))
        scores.append(frame_scores(frames, previous))
        previous = frames[:, -1]
        chunk.clear()

    try:
        for t, rgb in _decode_small(info):
            if chunk and rgb.shape != chunk[0].shape:  # a size change mid-stream: a new start
                flush()
                previous = None
            times.append(t)
            chunk.append(rgb)
            if len(chunk) == _CHUNK:
                flush()
    except (av.FFmpegError, EOFError):
        pass  # keep what was decoded before the damage
    if chunk:
        flush()
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    all_times = np.asarray(times, dtype=np.float64)
    cut_times: list[float] = []
    cut_scores: list[float] = []
    for i in pick_cuts(all_times, all_scores, threshold, min_shot_s):
        t = round(float(all_times[i]), 3)
        # CUTS_S's rules: inside the video, increasing (timestamps that go back are broken).
        if 0 < t < info.duration_s and (not cut_times or t > cut_times[-1]):
            cut_times.append(t)
            cut_scores.append(round(float(all_scores[i]), 2))
    kept, kept_scores = limit_cuts(cut_times, cut_scores, max_cuts)
    return DetectedCuts(
        cuts_s=tuple(kept),
        scores=tuple(kept_scores),
        frames=len(all_times),
        seconds=time.perf_counter() - clock,
        dropped=len(cut_times) - len(kept),
    )


def resolve_cuts(
    cuts_s: tuple[float, ...] | str, path: str | Path, info: VideoInfo, music_s: float
) -> tuple[tuple[float, ...], str, float]:
    """The cuts to send for a request's `cuts_s` (AUTO, or the given seconds; () for none), where
    they came from (one of SOURCES) and the seconds spent finding them. Cuts found in the video
    are kept inside the music (`music_s`, shorter than the video with --duration); given ones
    are sent as they are, for the contract's check to judge."""
    if isinstance(cuts_s, str):
        if cuts_s != AUTO:
            raise contract.InvalidInput(f"cuts must be {AUTO!r} or seconds, not {cuts_s!r}")
        found = detect_cuts(path, info)
        return tuple(c for c in found.cuts_s if c < music_s), "auto", found.seconds
    return tuple(cuts_s), "given" if cuts_s else "none", 0.0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m v2bgm_client.cuts",
        description="Find the cuts in videos and time it (one JSON line per video).",
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help=f"(default {THRESHOLD:g})")
    p.add_argument(
        "--min-shot", type=float, default=MIN_SHOT_S, metavar="S", help=f"(default {MIN_SHOT_S:g})"
    )
    args = p.parse_args(argv)
    for name in args.videos:
        try:
            info = probe(name)
            found = detect_cuts(name, info, args.threshold, args.min_shot)
        except VideoError as exc:
            print(f"{p.prog}: error: {exc}", file=sys.stderr)
            return 1
        report = {
            "path": name,
            "width": info.width,
            "height": info.height,
            "fps": round(info.fps, 3),
            "duration_s": round(info.duration_s, 3),
            "frames": found.frames,
            "cuts_s": list(found.cuts_s),
            "scores": list(found.scores),
            "dropped": found.dropped,
            "detect_s": round(found.seconds, 3),
            "realtime_x": round(info.duration_s / found.seconds, 1),
        }
        print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
