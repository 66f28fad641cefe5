"""Put generated music into a video: copy the video packets, encode the music as the audio track.

The output is written to a temporary file beside OUTPUT and renamed over it only once complete,
so a failure never leaves a partial OUTPUT behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import MuxError, VideoError
from .video import VideoInfo, probe, video_stream

AUDIO_RATE = 48_000  # the default: every audio codec below takes it; AAC's usual rate for video
SAMPLE_RATES = (44_100, 48_000)  # what a user may ask of the music track (`--sample-rate`)
CHANNELS = 2  # the music track is stereo, as editors expect (mono music plays on both sides)
# The music track's codec: the first the output container holds. WebM takes only Opus/Vorbis,
# MPEG program streams only MPEG audio.
_AUDIO_CODECS = ("aac", "libopus", "mp2")
# Stereo rates as music for video is delivered (AAC 256k: ~20 kHz of bandwidth; at 160k the
# encoder cuts near 16 kHz, -1.5 LU on the tiny models' noise-like music).
_AUDIO_BIT_RATES = {"aac": 256_000, "libopus": 160_000, "mp2": 320_000}
# Only where the container cannot hold the input's video codec: the first it holds.
_VIDEO_CODECS = ("libx264", "mpeg4", "libvpx-vp9", "mpeg2video")
_VIDEO_OPTIONS = {
    "libx264": {"crf": "18", "preset": "fast"},  # near-transparent: this is the user's picture
    "libvpx-vp9": {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
}
# Muxers without a codec list vouch only for their default codecs (yet accept anything, writing
# files nobody can play); these are other codecs they are known to carry.
_UNLISTED_MUXERS = {
    "mpeg": {"mpeg1video", "mpeg2video"},  # h264 in a program stream: FFmpeg cannot read it back
    "vob": {"mpeg1video", "mpeg2video"},
    "mpegts": {"mpeg1video", "mpeg2video", "h264", "hevc", "aac"},
}


@dataclass(frozen=True)
class MuxReport:
    """How the output was written."""

    output_path: Path
    container: str  # FFmpeg muxer name, e.g. "mp4", "matroska", "webm"
    video_codec: str  # codec of the output's video stream
    reencoded: bool  # False: video packets copied unchanged
    note: str | None  # one line saying why the video was re-encoded, for the user
    audio_codec: str
    sample_rate: int  # of the output's audio track
    channels: int  # of the output's audio track (CHANNELS)
    video_duration_s: float
    audio_duration_s: float
    replaced_audio: bool  # the input had an audio track, which the music replaced


def mux_audio(
    video_path: str | Path,
    audio: np.ndarray,
    sample_rate: int,
    out_path: str | Path,
    info: VideoInfo | None = None,
    out_rate: int = AUDIO_RATE,
) -> MuxReport:
    """Write `out_path`: the video of `video_path` with `audio` (float32, mono [samples] or
    [channels, samples] with 1 or 2 channels) as its soundtrack, a stereo track at `out_rate`
    (SAMPLE_RATES; mono audio plays on both channels).

    The audio is padded with silence or cut to the video's duration. The container comes from
    `out_path`'s extension. `info` is `probe(video_path)` when the caller already has it.
    """
    video_path, out_path = Path(video_path), Path(out_path)
    samples = _check_audio(audio, sample_rate)
    check_sample_rate(out_rate)
    check_output_path(out_path, video_path)
    info = info or probe(video_path)
    tmp = _create_temp(out_path)
    try:
        report = _write(video_path, info, samples, sample_rate, out_rate, tmp, out_path)
        os.replace(tmp, out_path)  # atomic on one file system, which the same directory is
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (MuxError, VideoError)) or not isinstance(exc, Exception):
            raise
        raise MuxError(f"{out_path}: writing the output failed ({_reason(exc)})") from exc
    return report


def check_output_path(out_path: str | Path, video_path: str | Path | None = None) -> str:
    """Raise MuxError unless a video can be written to `out_path`; return the muxer's name.

    Cheap, so callers run it before spending time on inference.
    """
    out_path = Path(out_path)
    if video_path is not None and out_path.resolve() == Path(video_path).resolve():
        raise MuxError(f"{out_path}: the output would overwrite the input video")
    if out_path.is_dir():
        raise MuxError(f"{out_path}: is a directory; give a file name for the output")
    if not out_path.parent.is_dir():
        raise MuxError(f"{out_path.parent}: no such directory for the output")
    if not os.access(out_path.parent, os.W_OK):
        raise MuxError(f"{out_path.parent}: directory is not writable")
    try:
        # Opening for writing only picks the muxer; no file is created until a header is written.
        with av.open(str(out_path.parent / f".v2bgm-check{out_path.suffix}"), "w") as out:
            return out.format.name
    except ValueError:
        raise MuxError(
            f"{out_path}: unknown video container for extension {out_path.suffix!r} "
            "(use .mp4, .mov, .mkv, .webm, .avi or .mpg)"
        ) from None


def check_sample_rate(rate: int) -> int:
    if rate not in SAMPLE_RATES:
        rates = " or ".join(str(r) for r in SAMPLE_RATES)
        raise MuxError(f"the music track's sample rate must be {rates} Hz, got {rate}")
    return rate


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """[CHANNELS, samples] float32 in [-1, 1] (mono repeated on both channels)."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or not 1 <= audio.shape[0] <= CHANNELS:
        raise MuxError(
            f"audio must be mono [samples] or [channels, samples] with 1 or {CHANNELS} "
            f"channels, got shape {list(audio.shape)}"
        )
    if not np.issubdtype(audio.dtype, np.floating):
        raise MuxError(f"audio must be float samples in [-1, 1], got {audio.dtype}")
    if not 0 < sample_rate <= 384_000:
        raise MuxError(f"bad audio sample rate {sample_rate}")
    if not np.all(np.isfinite(audio)):
        raise MuxError("audio holds NaN or infinite samples")
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    return np.repeat(audio, CHANNELS, axis=0) if audio.shape[0] == 1 else audio


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _create_temp(out_path: Path) -> Path:
    """A new empty file beside `out_path`, hidden, with the same extension (it picks the muxer).

    Not `tempfile.mkstemp`: its files are owner-only, and OUTPUT should get the usual mode from
    the umask like any new file.
    """
    while True:
        tmp = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}{out_path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def _holds(out: av.container.OutputContainer, codec: str) -> bool:
    """Whether `out`'s container can carry a `codec` stream."""
    return codec in out.supported_codecs or codec in _UNLISTED_MUXERS.get(out.format.name, ())


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def _pick(out: av.container.OutputContainer, codecs: tuple[str, ...], kind: str) -> str:
    for name in codecs:
        if _holds(out, name) and _encoder_available(name):
            return name
    raise MuxError(f"cannot write {kind} into a {out.format.name} file (no suitable encoder)")


def _write(
    video_path: Path,
    info: VideoInfo,
    samples: np.ndarray,
    sample_rate: int,
    out_rate: int,
    tmp: Path,
    out_path: Path,
) -> MuxReport:
    with (
        av.open(str(video_path), metadata_errors="ignore") as inp,
        av.open(str(tmp), "w") as out,
    ):
        in_v = video_stream(inp)
        if in_v is None:  # probe checked this; the file changed under us
            raise VideoError(f"{video_path}: no video stream")
        copy = _holds(out, in_v.codec_context.name)
        if copy:
            out_v, note = out.add_stream_from_template(in_v, opaque=True), None
            if out.format.name == "avi" and (rate := in_v.average_rate or in_v.guessed_rate):
                # AVI counts frames: in the input's finer time base (MP4: 1/12288) it would
                # fill every unused tick with an empty "drop" frame.
                out_v.time_base = 1 / Fraction(rate)
        else:
            out_v = _add_video_encoder(out, in_v, info.rotation)
            note = (
                f"re-encoded the video from {in_v.codec_context.name} to "
                f"{out_v.codec_context.name}: a {out.format.name} file cannot hold "
                f"{in_v.codec_context.name}"
            )
        out_a = _add_audio_encoder(out, out_rate)
        n_samples = round(info.duration_s * out_rate)
        pcm = _fit(resample(samples, sample_rate, out_rate), n_samples, out_a)
        audio_packets = _encode_audio(out_a, pcm, out_rate)
        if not _records_encoder_delay(out):
            audio_packets = _delay_priming(audio_packets, info.duration_s)
        # The output's timeline starts at 0 with the video's first frame, whatever the input's
        # started at: MP4 can then express the audio's priming as a negative start.
        shift = round(info.start_s / in_v.time_base) if in_v.time_base else 0
        if copy:
            bsf = _annexb_filter(out, in_v, out_v)
            video_packets = _copy_video(inp, in_v, out_v, bsf, shift)
        else:
            video_packets = _encode_video(inp, in_v, out_v, shift)
        for packet in _interleave(video_packets, audio_packets):
            out.mux(packet)
        report = MuxReport(
            output_path=out_path,
            container=out.format.name,
            video_codec=out_v.codec_context.name,
            reencoded=not copy,
            note=note,
            audio_codec=out_a.codec_context.name,
            sample_rate=out_rate,
            channels=pcm.shape[0],
            video_duration_s=info.duration_s,
            audio_duration_s=pcm.shape[1] / out_rate,
            replaced_audio=info.has_audio,
        )
    return report


def _add_audio_encoder(out: av.container.OutputContainer, rate: int) -> av.audio.stream.AudioStream:
    name = _pick(out, _AUDIO_CODECS, "audio")
    stream = out.add_stream(name, rate=rate)
    stream.layout = "stereo"
    stream.bit_rate = _AUDIO_BIT_RATES[name]
    return stream


def _add_video_encoder(
    out: av.container.OutputContainer, in_v: av.video.stream.VideoStream, rotation: int
) -> av.video.stream.VideoStream:
    name = _pick(out, _VIDEO_CODECS, f"{in_v.codec_context.name} video")
    rate = in_v.average_rate or in_v.guessed_rate or Fraction(25)
    stream = out.add_stream(name, rate=rate, options=_VIDEO_OPTIONS.get(name, {}))
    ctx = in_v.codec_context
    # 4:2:0 needs even sides; dropping an odd last row or column is invisible.
    stream.width, stream.height = ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
    stream.pix_fmt = "yuv420p"
    if rotation:  # frames are re-encoded as coded; players turn them as they did the input's
        stream.set_display_rotation(rotation)
    if name in ("libx264", "libvpx-vp9"):
        stream.codec_context.time_base = in_v.time_base  # keeps variable frame timing as it was
    else:
        # MPEG-4 part 2 and MPEG-1/2 want 1/frame-rate; frames get re-timed on that grid.
        stream.codec_context.time_base = 1 / Fraction(rate).limit_denominator(65535)
    if name in ("mpeg4", "mpeg2video"):
        stream.bit_rate = max(1_000_000, int(ctx.width * ctx.height * float(rate) * 0.2))
    return stream


def resample(samples: np.ndarray, sample_rate: int, rate: int = AUDIO_RATE) -> np.ndarray:
    """float32 mono [samples] or [channels, samples] at `sample_rate` -> the same at `rate`
    (each channel on its own, so a stereo image is kept)."""
    if samples.ndim == 2:
        return np.stack([resample(channel, sample_rate, rate) for channel in samples])
    if sample_rate == rate or samples.size == 0:
        return samples
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks = []
    for start in range(0, samples.size, sample_rate):  # one second at a time
        frame = av.AudioFrame.from_ndarray(
            samples[None, start : start + sample_rate], format="flt", layout="mono"
        )
        frame.sample_rate = sample_rate
        chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else samples[:0]


def _fit(pcm: np.ndarray, n_samples: int, stream: av.audio.stream.AudioStream) -> np.ndarray:
    """Cut or pad `pcm` [channels, samples] with silence to `n_samples`; to whole frames where
    the codec needs it."""
    ctx = stream.codec_context
    ctx.open()  # frame_size is known only once the encoder is open
    frame_size = ctx.frame_size or 1
    if not ctx.codec.capabilities & av.codec.Capabilities.small_last_frame:
        n_samples = -(-n_samples // frame_size) * frame_size
    n_samples = max(n_samples, 1)
    if pcm.shape[1] >= n_samples:
        return pcm[:, :n_samples]
    return np.pad(pcm, ((0, 0), (0, n_samples - pcm.shape[1])))


def _encode_audio(
    stream: av.audio.stream.AudioStream, pcm: np.ndarray, rate: int
) -> list[av.Packet]:
    """All packets of the music track [channels, samples], which starts at 0 with the video's
    first frame."""
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="fltp", layout="stereo")
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = 0
    # PyAV cuts the frame to the encoder's frame size and converts the sample format itself.
    return [*stream.encode(frame), *stream.encode(None)]


def _delay_priming(packets: list[av.Packet], duration_s: float) -> list[av.Packet]:
    """Start the audio packets with the video, and end them with it, in a container that cannot
    record the encoder's priming samples (AVI, MPEG).

    Left before the video's start, the priming (AAC: 1024 samples) makes such muxers shift every
    stream, the copied video too; the decoder plays it as a short silence instead. So the music
    starts about 20 ms late (nobody hears that under a video) and the packets that would now
    run past the video's end are dropped.
    """
    if not packets:
        return packets
    tb = packets[0].time_base
    lead = -min(p.dts if p.dts is not None else p.pts for p in packets)
    if lead <= 0:
        return packets
    for p in packets:
        p.pts = None if p.pts is None else p.pts + lead
        p.dts = None if p.dts is None else p.dts + lead
    end = round(duration_s / tb)
    return [p for p in packets if p.pts is None or p.pts < end] or packets[:1]


def _records_encoder_delay(out: av.container.OutputContainer) -> bool:
    """Whether the container can say "skip the first N decoded samples" (encoder priming).

    MP4/MOV do it with negative timestamps and an edit list, Matroska with CodecDelay.
    """
    flags = out.format.flags & av.format.Flags.ts_negative.value
    return bool(flags) or out.format.name in ("matroska", "webm")


def _annexb_filter(
    out: av.container.OutputContainer,
    in_v: av.video.stream.VideoStream,
    out_v: av.video.stream.VideoStream,
) -> av.bitstream.BitStreamFilterContext | None:
    """A filter giving MP4-style H.264/HEVC packets start codes, where the output needs them.

    AVI and MPEG-TS carry H.264 as a byte stream; MP4 and Matroska store it length-prefixed. The
    rewrite is lossless: the coded pictures stay the same, only their framing changes.
    """
    codec = in_v.codec_context.name
    extradata = in_v.codec_context.extradata or b""
    if codec not in ("h264", "hevc") or out.format.name not in ("avi", "mpegts"):
        return None
    if not extradata or extradata[0] != 1:  # already a byte stream
        return None
    return av.bitstream.BitStreamFilterContext(f"{codec}_mp4toannexb", in_v, out_v)


def _copy_video(
    inp: av.container.InputContainer,
    in_v: av.video.stream.VideoStream,
    out_v: av.video.stream.VideoStream,
    bsf: av.bitstream.BitStreamFilterContext | None,
    shift: int,
) -> Iterator[av.Packet]:
    for packet in inp.demux(in_v):
        if not packet.size:  # the demuxer's flush packet
            continue
        for filtered in bsf.filter(packet) if bsf else (packet,):
            yield _rebased(filtered, out_v, shift)
    if bsf:
        for filtered in bsf.filter(None):
            yield _rebased(filtered, out_v, shift)


def _rebased(packet: av.Packet, stream: av.stream.Stream, shift: int) -> av.Packet:
    packet.stream = stream
    packet.pts = None if packet.pts is None else packet.pts - shift
    packet.dts = None if packet.dts is None else packet.dts - shift
    return packet


def _encode_video(
    inp: av.container.InputContainer,
    in_v: av.video.stream.VideoStream,
    out_v: av.video.stream.VideoStream,
    shift: int,
) -> Iterator[av.Packet]:
    ctx = out_v.codec_context
    last = None
    for frame in inp.decode(in_v):
        if frame.pts is None:
            continue
        pts = round((frame.pts - shift) * frame.time_base / ctx.time_base)
        if last is not None and pts <= last:
            continue  # two source frames on one slot of a coarser time grid
        last = pts
        frame = frame.reformat(width=ctx.width, height=ctx.height, format=ctx.pix_fmt)
        frame.pts, frame.time_base = pts, ctx.time_base
        yield from out_v.encode(frame)
    yield from out_v.encode(None)


def _seconds(packet: av.Packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None else float("-inf")


def _interleave(video: Iterator[av.Packet], audio: list[av.Packet]) -> Iterator[av.Packet]:
    """Packets of both streams in time order, as players read them."""
    pending = iter(audio)
    next_audio = next(pending, None)
    for packet in video:
        t = _seconds(packet)
        while next_audio is not None and _seconds(next_audio) <= t:
            yield next_audio
            next_audio = next(pending, None)
        yield packet
    if next_audio is not None:
        yield next_audio
        yield from pending
