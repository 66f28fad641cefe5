"""Probe a video with PyAV and sample frames from it with decord.

PyAV looks at every input first: decord can crash the process or print noise on bad bytes, so
only a file that PyAV opened, found a video stream in and decoded a frame of reaches decord.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import decord
import numpy as np
from v2bgm_contract import interface as contract

from .errors import VideoError

# Far beyond any real camera (8K is 7680); a header claiming more is corrupt or hostile.
MAX_SOURCE_SIDE = 16384
_DECORD_BAD_WIDTHS = {16, 24, 48, 72}
# decord's FFmpeg prints decoder complaints on stderr; its failures reach the caller as
# VideoError (or a PyAV retry) anyway.
decord.logging.set_level(decord.logging.QUIET)
# Containers without a seek index: decord's timestamps there are garbage and its seeks land on
# the wrong frames, so frames are read in order instead.
_UNINDEXED_FORMATS = {"mpeg", "mpegts", "mpegvideo", "m4v", "h264", "hevc", "mjpeg"}


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` found out about a video file."""

    path: Path
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
    codec: str  # video codec, e.g. "h264", "vp9", "mpeg4"
    width: int  # as displayed: after `rotation`, so a phone's portrait video is taller than wide
    height: int
    fps: float  # average frame rate of the video stream
    frame_count: int  # video packets, i.e. coded frames
    duration_s: float  # from the first frame's start to the last frame's end
    start_s: float  # timestamp of the first frame
    has_audio: bool
    rotation: int = 0  # degrees counterclockwise a player turns the coded frames: 0/90/180/270


@dataclass(frozen=True)
class SampledVideo:
    """Frames sampled from a video, ready for the FRAMES/FPS inputs."""

    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    fps: float  # the rate the frames represent: the sampling rate actually used
    indices: np.ndarray  # int64 [T], source frame index of each frame
    duration_s: float  # duration of the whole video
    decoder: str = "decord"  # "pyav" where decord could not decode a video PyAV could


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream: cover art in audio files is a one-picture "video" stream."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _is_image(container: av.container.InputContainer) -> bool:
    """FFmpeg opens JPEG, PNG, ... as one-frame videos; the service wants moving pictures."""
    name = container.format.name
    return name == "image2" or (name.endswith("_pipe") and name != "gif_pipe")


def _reason(exc: BaseException) -> str:
    """FFmpeg's short reason ("Invalid data found when processing input"), one line."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def probe(path: str | Path) -> VideoInfo:
    """Open `path` with PyAV, check it is a usable video and describe it.

    Reads every video packet (no decoding, except the first frame) to count frames and measure
    the duration exactly: container headers are often missing or wrong about both.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: not a readable video file ({_reason(exc)})") from None
    with container:
        if _is_image(container):
            raise VideoError(f"{path}: a still image, not a video")
        stream = video_stream(container)
        if stream is None:
            kind = "audio-only file" if container.streams.audio else "file without video"
            raise VideoError(f"{path}: no video stream ({kind})")
        ctx = stream.codec_context
        if ctx is None:  # a codec id FFmpeg does not know: a corrupt header, as often as not
            raise VideoError(f"{path}: video stream has no decoder (unknown or corrupt codec)")
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise VideoError(f"{path}: video stream has no frame size (corrupt header?)")
        if max(width, height) > MAX_SOURCE_SIDE:
            raise VideoError(
                f"{path}: frames are {width}x{height}; at most {MAX_SOURCE_SIDE} pixels a side"
            )
        _check_duration(path, _header_duration(container, stream), margin_s=1.0)
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        count, start, end, rotation = _scan(path, container, stream, rate)
        has_audio = bool(container.streams.audio)
        container_name = container.format.name
    if count == 0:
        raise VideoError(f"{path}: video stream holds zero frames")
    if start is None or end is None or end <= start:
        # No usable timestamps: fall back on the nominal rate.
        start, end = 0.0, count / (rate or 25.0)
    duration = end - start
    _check_duration(path, duration)
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        path=path,
        container=container_name,
        codec=ctx.name,
        width=width,
        height=height,
        fps=rate or count / duration,
        frame_count=count,
        duration_s=duration,
        start_s=start,
        has_audio=has_audio,
        rotation=rotation,
    )


def _header_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


def _check_duration(path: Path, duration_s: float, margin_s: float = 0.0) -> None:
    if duration_s > contract.MAX_DURATION_S + margin_s:
        raise VideoError(
            f"{path}: video lasts {duration_s:.1f} s; the service takes at most "
            f"{contract.MAX_DURATION_S:g} s ({contract.MAX_DURATION_S / 60:g} min)"
        )


def _scan(
    path: Path, container: av.container.InputContainer, stream: av.stream.Stream, rate: float | None
) -> tuple[int, float | None, float | None, int]:
    """Count the video packets, find the span they cover and decode one frame.

    Returns (packets, start_s, end_s, rotation). Decoding one frame proves FFmpeg has a decoder
    for the codec and the bytes make sense, before decord (which has its own FFmpeg) sees them.
    """
    count, start, end, first = 0, None, None, None
    tb = stream.time_base
    try:
        for packet in container.demux(stream):
            if not packet.size and packet.dts is None:  # the flush packet at the end
                continue
            count += 1  # empty packets with a timestamp too: AVI's "repeat the last frame"
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is not None and tb:
                t0 = float(ts * tb)
                dur = float(packet.duration * tb) if packet.duration else 1.0 / (rate or 25.0)
                start = t0 if start is None else min(start, t0)
                end = t0 + dur if end is None else max(end, t0 + dur)
            if first is None and packet.size:  # an empty packet would make the decoder drain
                first = _decode_one(stream, packet)
        if count and first is None:
            first = next(iter(stream.codec_context.decode(None)), None)  # frames held back
    except (av.FFmpegError, EOFError) as exc:
        raise VideoError(f"{path}: corrupt or truncated video ({_reason(exc)})") from None
    if count and first is None:
        raise VideoError(f"{path}: no video frame could be decoded (corrupt file?)")
    # FFmpeg stops quietly where a file is cut short. Frame counts alone can differ in a sound
    # file (AVI counts its empty "drop" chunks, which are not demuxed), so the span must too.
    header_s = float(stream.duration * tb) if stream.duration and tb else 0.0
    span_s = (end - start) if start is not None and end is not None else 0.0
    if stream.frames > count and span_s < 0.95 * header_s:
        raise VideoError(
            f"{path}: truncated video: the header lists {stream.frames} frames, "
            f"only {count} are in the file"
        )
    rotation = round(first.rotation / 90) % 4 * 90 if first is not None else 0
    return count, start, end, rotation


def _decode_one(stream: av.stream.Stream, packet: av.Packet) -> av.VideoFrame | None:
    try:
        frames = stream.codec_context.decode(packet)
    except av.FFmpegError:
        # A broken packet is not fatal yet: streams cut mid-GOP start with undecodable frames.
        return None
    return frames[0] if frames else None


def frame_size(width: int, height: int, max_side: int = contract.MAX_FRAME_SIDE) -> tuple[int, int]:
    """(width, height) after scaling the longer side down to `max_side`, keeping the aspect.

    Small videos are not scaled up, except that no side goes below MIN_FRAME_SIDE.
    """
    scale = min(1.0, max_side / max(width, height))
    w = min(max_side, max(contract.MIN_FRAME_SIDE, round(width * scale)))
    h = min(max_side, max(contract.MIN_FRAME_SIDE, round(height * scale)))
    return w, h


def _decord_width(width: int, max_side: int) -> int:
    """`width`, or a pixel more or less where decord 0.6 cannot resize to it.

    For these widths it pads the rows and then fails or returns 4 or 6 channels (found by trying
    every width from 16 to 448 against several heights).
    """
    if width not in _DECORD_BAD_WIDTHS:
        return width
    return width + 1 if width < max_side else width - 1


def sample_indices(
    n_frames: int,
    src_fps: float,
    fps: float = contract.SAMPLE_FPS,
    max_frames: int = contract.MAX_FRAMES,
) -> tuple[np.ndarray, float]:
    """Source frame indices to sample and the rate they represent.

    One frame from the middle of every 1/fps-second segment (as VideoLLaMA3 samples); when that
    would exceed `max_frames`, `max_frames` segments spread uniformly over the video instead.
    Never denser than the source: asking for more than `src_fps` gives every frame.
    """
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    step = max(1.0, src_fps / fps)  # source frames per sample
    count = math.ceil(n_frames / step)
    if count > max_frames:
        count, step = max_frames, n_frames / max_frames
    indices = np.minimum(((np.arange(count) + 0.5) * step).astype(np.int64), n_frames - 1)
    return indices, src_fps / step


def sample_frames(
    path: str | Path,
    fps: float = contract.SAMPLE_FPS,
    max_frames: int = contract.MAX_FRAMES,
    max_side: int = contract.MAX_FRAME_SIDE,
    info: VideoInfo | None = None,
) -> SampledVideo:
    """Sample RGB frames from `path` at `fps` (at most `max_frames`), resized to `max_side`.

    Frames come upright, as a player shows them (decord applies the rotation), at
    `frame_size(info.width, info.height, max_side)` give or take one pixel of width (see
    `_decord_width`). `info` is `probe(path)` when the caller already has it.
    """
    if not fps > 0 or max_frames < 1 or max_side < contract.MIN_FRAME_SIDE:
        raise ValueError(f"bad sampling parameters: {fps=}, {max_frames=}, {max_side=}")
    info = info or probe(path)
    width, height = frame_size(info.width, info.height, max_side)
    decoder = "decord"
    try:
        frames, indices, rate = _sample_with_decord(info, fps, max_frames, width, height, max_side)
    except decord.DECORDError:
        # PyAV decoded this file in `probe`, decord (an older FFmpeg) cannot: H.264 in MPEG-TS
        # with B-frames is one such. Better frames from another decoder than no music.
        decoder = "pyav"
        indices, rate = sample_indices(info.frame_count, info.fps, fps, max_frames)
        frames, indices = _sample_with_pyav(info, indices, width, height)
    return SampledVideo(
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        fps=rate,
        indices=indices,
        duration_s=info.duration_s,
        decoder=decoder,
    )


def _sample_with_decord(
    info: VideoInfo, fps: float, max_frames: int, width: int, height: int, max_side: int
) -> tuple[np.ndarray, np.ndarray, float]:
    width = _decord_width(width, max_side)
    reader = decord.VideoReader(str(info.path), ctx=decord.cpu(0), width=width, height=height)
    n_frames = len(reader)
    if n_frames < 1:
        raise VideoError(f"{info.path}: the decoder found zero video frames")
    indices, rate = sample_indices(n_frames, info.fps, fps, max_frames)
    if _seekable(reader, info, n_frames):
        frames = reader.get_batch(indices.tolist()).asnumpy()
    else:
        frames, indices = _read_in_order(info.path, reader, indices)
    return frames, indices, rate


def _sample_with_pyav(
    info: VideoInfo, indices: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decode in order with PyAV, keeping the wanted frames, resized and turned upright."""
    turns = info.rotation // 90  # np.rot90 turns counterclockwise, as the rotation does
    coded = (height, width) if turns % 2 else (width, height)
    wanted = set(indices.tolist())
    frames, got = [], []
    try:
        with av.open(str(info.path), metadata_errors="ignore") as container:
            stream = video_stream(container)
            if stream is None:  # probe found one; the file changed under us
                raise VideoError(f"{info.path}: no video stream")
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    rgb = frame.reformat(coded[0], coded[1], format="rgb24").to_ndarray()
                    frames.append(np.rot90(rgb, turns))
                    got.append(index)
                if index >= indices[-1]:
                    break
    except (av.FFmpegError, EOFError) as exc:
        raise VideoError(f"{info.path}: decoding failed ({_reason(exc)})") from None
    if not frames:
        raise VideoError(f"{info.path}: the decoder returned no video frames")
    return np.stack(frames), np.asarray(got, dtype=np.int64)


def _seekable(reader: decord.VideoReader, info: VideoInfo, n_frames: int) -> bool:
    """Whether decord's frame index can be trusted for random access."""
    if info.container in _UNINDEXED_FORMATS:
        return False
    ts = reader.get_frame_timestamp(range(n_frames))[:, 0]
    return bool(np.all(ts >= 0) and np.all(np.diff(ts) > 0))


def _read_in_order(
    path: Path, reader: decord.VideoReader, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every frame from the start, keeping the wanted ones.

    Not `skip_frames`: it seeks when it crosses a keyframe, which is what goes wrong here. A
    container without an index may also hold fewer frames than decord estimated, so the indices
    actually read are returned with the frames (at least one).
    """
    wanted = set(indices.tolist())
    frames, got = [], []
    for index in range(int(indices[-1]) + 1):
        try:
            frame = reader.next()
        except StopIteration:
            break
        except decord.DECORDError:
            if not frames:
                raise  # decord cannot decode this at all
            break
        if index in wanted:
            frames.append(frame.asnumpy())
            got.append(index)
    if not frames:
        raise VideoError(f"{path}: the decoder returned no video frames")
    return np.stack(frames), np.asarray(got, dtype=np.int64)
