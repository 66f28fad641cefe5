"""Real video files for tests, written with PyAV.

Shared by the client tests and the server's integration tests; keep the API small. Import it as
`from tests import videos` with the repository root on sys.path (tests/conftest.py puts it there).

- `make_video(path, seconds, width, height, ...)` writes a video (optionally with a tone as audio),
  picking a codec the container can hold from the file extension.
- `make_shots(path, seconds, cuts_s, fades_s, ...)` writes one whose picture changes at known
  times: hard cuts and gradual cross-fades between solid colours and patterns (for cut detection).
- `make_audio(path, seconds)` writes an audio-only file (for "no video stream" errors).
- `frame_index(rgb)` reads back which source frame a decoded (possibly resized) frame was.
- `video_packets(path)`, `video_duration(path)`, `audio_duration(path)` inspect a file.

Every frame spells its own index in three gray digits across the top half (a white bar sweeps the
bottom half), so the content moves and a test can tell which source frame a sampler returned,
even after resizing and lossy compression. Gray, so chroma subsampling cannot blur it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

AUDIO_RATE = 48_000
_LEVELS = 16  # gray levels per digit
_DIGITS = 3  # 16**3 = 4096 distinct frame indices


def _can_encode(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV raises several types for an unknown encoder
        return False
    return True


H264 = "libx264" if _can_encode("libx264") else "mpeg4"

# extension -> (container format, video encoder, audio encoder)
FORMATS: dict[str, tuple[str, str, str]] = {
    ".mp4": ("mp4", H264, "aac"),
    ".mov": ("mov", H264, "aac"),
    ".mkv": ("matroska", H264, "aac"),
    # mp2, not mp3: an encoder delay (negative first pts) makes the AVI muxer shift video too.
    ".avi": ("avi", "mpeg4", "mp2"),
    ".mpg": ("mpeg", "mpeg1video", "mp2"),
    ".webm": ("webm", "libvpx", "libopus"),
}


def _index_frame(i: int, width: int, height: int, n_frames: int) -> np.ndarray:
    """RGB frame whose top half spells `i` in gray digits; a white bar sweeps the bottom half."""
    img = np.full((height, width, 3), 128, np.uint8)
    top = height // 2
    for d in range(_DIGITS):
        digit = (i // _LEVELS**d) % _LEVELS
        img[:top, d * width // _DIGITS : (d + 1) * width // _DIGITS] = digit * 256 // _LEVELS + 8
    bar = max(1, width // 8)
    x = (i * max(1, width - bar)) // max(1, n_frames - 1)
    img[top:, x : x + bar] = 255
    return img


def frame_index(rgb: np.ndarray) -> int:
    """Index of the `make_video` frame that `rgb` ([H, W, 3]) shows, modulo 4096."""
    h, w, _ = rgb.shape
    index = 0
    for d in range(_DIGITS):
        # The middle of each digit's cell, away from edges that scaling and compression smear.
        x0, x1 = d * w // _DIGITS, (d + 1) * w // _DIGITS
        cell = rgb[h // 8 : 3 * h // 8, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4]
        index += round((float(cell.mean()) - 8) * _LEVELS / 256) * _LEVELS**d
    return index


def _add_audio(out: av.container.OutputContainer, codec: str) -> av.audio.stream.AudioStream:
    stream = out.add_stream(codec, rate=AUDIO_RATE)
    stream.layout = "stereo"
    return stream


def _tone(stream: av.audio.stream.AudioStream, seconds: float):
    """AudioFrames of a 440 Hz tone, sized to the encoder's frame size."""
    n = round(seconds * AUDIO_RATE)
    size = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format.name
    for start in range(0, n, size):
        t = np.arange(start, min(n, start + size)) / AUDIO_RATE
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        if fmt.endswith("p"):  # planar: one row per channel
            frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp")
        else:  # packed: channels interleaved in one row
            frame = av.AudioFrame.from_ndarray(np.repeat(wave, 2)[None], format="flt")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        yield frame


def make_video(
    path: str | Path,
    seconds: float = 2.0,
    width: int = 160,
    height: int = 96,
    fps: int = 24,
    codec: str | None = None,
    with_audio: bool = False,
    audio_codec: str | None = None,
    rotation: int = 0,
    picture: Callable[[int], np.ndarray] | None = None,
) -> Path:
    """Write a `seconds`-long video of `width`x`height` at `fps` and return its path.

    The container comes from the extension (.mp4 .mov .mkv .avi .mpg .webm); `codec` and
    `audio_codec` override the defaults in `FORMATS` (e.g. "mjpeg" for .avi, "mpeg2video" for
    .mpg, "libvpx-vp9" for .webm). MPEG-1/2 allow only the usual rates (24, 25, 30, ...).
    `with_audio` adds a stereo 440 Hz tone as long as the video. `rotation` (degrees
    counterclockwise, as a phone records portrait video) goes into the display matrix, which only
    MP4/MOV/MKV/WebM store. `picture(i)` gives frame i (RGB uint8 [height, width, 3]) instead of
    the numbered frames.
    """
    path = Path(path)
    fmt, default_codec, default_audio = FORMATS[path.suffix.lower()]
    codec = codec or default_codec
    n_frames = max(1, round(seconds * fps))
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        if codec in ("mpeg1video", "mpeg2video", "mpeg4", "mjpeg"):
            video.codec_context.qmax = 4  # flat gray levels must survive; defaults smear them
        if codec.startswith("libvpx"):
            video.options = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        audio = _add_audio(out, audio_codec or default_audio) if with_audio else None
        for i in range(n_frames):
            rgb = picture(i) if picture else _index_frame(i, width, height, n_frames)
            frame = av.VideoFrame.from_ndarray(rgb)
            frame = frame.reformat(format=video.pix_fmt)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            for frame in _tone(audio, n_frames / fps):
                out.mux(audio.encode(frame))
            out.mux(audio.encode())
    return path


def _looks(height: int, width: int) -> list[np.ndarray]:
    """The shots' pictures (float RGB): solid colours and patterns, each far from the next."""
    y, x = np.mgrid[0:height, 0:width]
    # Blotches of 8x8 pixels: a texture, but not one that a pan of a pixel changes everywhere.
    blotches = np.random.default_rng(0).normal(0.0, 40.0, (height // 8 + 1, width // 8 + 1, 1))
    texture = np.kron(blotches, np.ones((8, 8, 1)))[:height, :width]

    def two(mask: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
        return np.where(mask[..., None], np.array(a, float), np.array(b, float))

    def solid(rgb: tuple) -> np.ndarray:
        return np.broadcast_to(np.array(rgb, float), (height, width, 3))

    wave = (0.5 + 0.5 * np.sin(2 * np.pi * x / max(width, 1)))[..., None]
    return [
        solid((200, 40, 40)),  # red
        two((x // 16 + y // 16) % 2 == 0, (30, 60, 200), (240, 240, 240)),  # checkerboard
        solid((40, 150, 60)),  # green
        wave * np.array([230, 230, 230]) + (1 - wave) * np.array([110, 30, 150]),  # soft bands
        solid((240, 150, 30)),  # orange
        np.clip(np.array([60, 180, 190]) + texture, 0, 255),  # noise texture, cyan
        two((x // 24) % 2 == 0, (20, 20, 20), (250, 250, 250)),  # stripes
        solid((20, 30, 110)),  # dark blue
    ]


def make_shots(
    path: str | Path,
    seconds: float,
    cuts_s: Sequence[float] = (),
    fades_s: Sequence[float] = (),
    fade_s: float = 1.0,
    fps: int = 25,
    width: int = 160,
    height: int = 96,
    grain: float = 0.0,
    pan_px: float = 0.0,
    **kwargs: object,
) -> Path:
    """A video of shots (solid colours and patterns, in turn) that change at known times.

    At each of `cuts_s` a hard cut: the first frame at or after it (frame i shows i / fps) is the
    next shot. At each of `fades_s` a linear cross-fade to the next shot over `fade_s` seconds.
    `grain`: the standard deviation of fresh noise added to every frame (film grain);
    `pan_px`: pixels the picture moves right per frame. Other arguments go to `make_video`.
    """
    looks = _looks(height, width)
    changes = sorted([(t, 0.0) for t in cuts_s] + [(t, fade_s) for t in fades_s])

    def picture(i: int) -> np.ndarray:
        t = i / fps
        shot, blend = 0, 0.0
        for start, length in changes:
            if t >= start + length:
                shot += 1
            elif t >= start:  # in a fade
                blend = (t - start) / length
        img = looks[shot % len(looks)] * (1 - blend) + looks[(shot + 1) % len(looks)] * blend
        if pan_px:
            img = np.roll(img, round(i * pan_px), axis=1)
        if grain:
            img = img + np.random.default_rng(i + 1).normal(0.0, grain, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)

    return make_video(path, seconds, width, height, fps, picture=picture, **kwargs)


def make_audio(path: str | Path, seconds: float = 2.0) -> Path:
    """Write an audio-only file (.m4a AAC, .mp3, .wav, .ogg, .mka) holding a tone."""
    path = Path(path)
    codecs = {".m4a": "aac", ".mp3": "libmp3lame", ".wav": "pcm_s16le", ".ogg": "libopus"}
    with av.open(str(path), "w", format="ipod" if path.suffix == ".m4a" else None) as out:
        audio = _add_audio(out, codecs.get(path.suffix.lower(), "aac"))
        for frame in _tone(audio, seconds):
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


class Packet(NamedTuple):
    pts_s: float | None  # presentation time in seconds; None where the container has none
    data: bytes


def video_packets(path: str | Path) -> list[Packet]:
    """The first video stream's packets, in file order (empty packets left out).

    To check a remux, compare `data` for equality and `pts_s` relative to the first packet's:
    the muxer may start the output's timeline elsewhere (v2bgm's starts it at 0; MPEG program
    streams add 0.5 s of their own).
    """
    with av.open(str(path)) as f:
        stream = f.streams.video[0]
        tb = stream.time_base
        return [
            Packet(None if p.pts is None else float(p.pts * tb), bytes(p))
            for p in f.demux(stream)
            if p.size
        ]


def _span_s(path: str | Path, kind: str) -> float:
    """Seconds from the first packet's start to the last packet's end in one stream."""
    with av.open(str(path)) as f:
        stream = getattr(f.streams, kind)[0]
        rate = (stream.average_rate or stream.codec_context.framerate) if kind == "video" else None
        start, end = None, None
        for p in f.demux(stream):
            if not p.size:
                continue
            ts = p.pts if p.pts is not None else p.dts
            if ts is None:
                continue
            t0 = float(ts * stream.time_base)
            dur = float(p.duration * stream.time_base) if p.duration else 0.0
            if not dur and rate:
                dur = float(1 / rate)
            start = t0 if start is None else min(start, t0)
            end = t0 + dur if end is None else max(end, t0 + dur)
        return 0.0 if start is None else end - start


def video_duration(path: str | Path) -> float:
    """Duration of the first video stream in seconds, from its packets' timestamps."""
    return _span_s(path, "video")


def audio_duration(path: str | Path) -> float:
    """Duration of the first audio stream in seconds: decoded samples over the sample rate.

    Decoding honours the encoder delay and end padding the container records, so this is what a
    player plays, unlike packet timestamps.
    """
    with av.open(str(path)) as f:
        stream = f.streams.audio[0]
        samples = sum(frame.samples for frame in f.decode(stream))
        return samples / stream.codec_context.sample_rate
