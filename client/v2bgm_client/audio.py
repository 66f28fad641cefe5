"""The soundtrack as it goes into the video: placed over the original sound, faded, normalised to
a loudness target (ITU-R BS.1770 via pyloudnorm) and true-peak limited, so it never clips.

Everything here works on float32 arrays [channels, samples] at the output's rate (48 or 44.1 kHz);
the output track is stereo:

- `replace`: the music alone.
- `mix`: the music with the original sound kept under it (MIX_ORIGINAL_UNDER_LU quieter).
- `duck`: the music lowered (up to DUCK_DEPTH_DB) where the original is loud, e.g. speech, as
  its short-term loudness (3 s windows, BS.1770's) says.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyloudnorm
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

from .errors import VideoError
from .video import VideoInfo

MODES = ("replace", "mix", "duck")
STEREO = 2  # channels of the output track
DEFAULT_LUFS = -14.0  # the integrated loudness YouTube and Spotify normalise to
MIN_LUFS, MAX_LUFS = -40.0, -5.0  # sensible targets; outside them the user mistyped
TRUE_PEAK_CEILING_DBTP = -1.0  # EBU R128 / streaming services' maximum true peak
OVERSAMPLING = 4  # BS.1770's true-peak meter: 4x oversampling at 48 kHz
LIMITER_LOOKAHEAD_S = 0.005  # gain reductions start this early and are smoothed over as long
NORMALISE_PASSES = 3  # limiting can take loudness away; re-measure and correct
NORMALISE_TOLERANCE_LU = 0.1
FADE_IN_S = 0.5
FADE_OUT_S = 1.5
MAX_FADE_SHARE = 0.25  # a short clip's fades take at most this share of it each
MIX_ORIGINAL_UNDER_LU = 8.0  # `mix`: the original sits this far under the music
SHORT_TERM_WINDOW_S = 3.0  # BS.1770 short-term loudness
DUCK_HOP_S = 0.05
DUCK_DEPTH_DB = 12.0  # how far the music goes down under loud original sound
# The original is first brought to the target loudness; ducking starts where its short-term
# loudness comes within DUCK_START_LU of the target, and is full within DUCK_FULL_LU.
DUCK_START_LU = 20.0
DUCK_FULL_LU = 8.0
DUCK_SMOOTHING_S = 0.3  # no pumping: the gain moves over at least this long
_MIN_MEASURE_S = 0.4  # pyloudnorm needs one 400 ms gating block


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db) / 20.0)


def loudness(audio: np.ndarray, rate: int) -> float:
    """Integrated loudness in LUFS of [channels, samples]; -inf for silence."""
    data = audio.T.astype(np.float64)
    short = round(_MIN_MEASURE_S * rate) - data.shape[0]
    if short > 0:  # pyloudnorm rejects clips shorter than a gating block
        data = np.pad(data, ((0, short), (0, 0)))
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(rate).integrated_loudness(data))


def short_term_loudness(audio: np.ndarray, rate: int, hop_s: float = DUCK_HOP_S) -> np.ndarray:
    """BS.1770 short-term loudness (K-weighted, SHORT_TERM_WINDOW_S windows centred on each hop)
    of [channels, samples], one value per `hop_s`, in LUFS (-inf: silence)."""
    weighted = audio.astype(np.float64)
    for stage in (  # BS.1770's K-weighting, as pyloudnorm's Meter builds it
        pyloudnorm.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"),
        pyloudnorm.IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    ):
        weighted = np.stack([stage.apply_filter(channel) for channel in weighted])
    power = (weighted**2).sum(axis=0)  # channel weights are 1 for L and R
    window = max(1, round(SHORT_TERM_WINDOW_S * rate))
    mean_square = uniform_filter1d(power, size=window, mode="constant")
    hop = max(1, round(hop_s * rate))
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(mean_square[hop // 2 :: hop])  # BS.1770's offset


def duck_gain(original: np.ndarray, rate: int, target_lufs: float) -> np.ndarray:
    """Per-sample gain for the music under `original` (already at `target_lufs`)."""
    hop = max(1, round(DUCK_HOP_S * rate))
    level = short_term_loudness(original, rate, DUCK_HOP_S)
    above_start = level - (target_lufs - DUCK_START_LU)
    amount = np.clip(above_start / (DUCK_START_LU - DUCK_FULL_LU), 0.0, 1.0)
    smooth = max(1, round(DUCK_SMOOTHING_S / DUCK_HOP_S))
    amount = uniform_filter1d(amount, size=smooth, mode="nearest")
    gain_db = -DUCK_DEPTH_DB * amount
    hop_times = (np.arange(len(gain_db)) + 0.5) * hop
    samples = np.arange(original.shape[-1])
    return db_to_gain(np.interp(samples, hop_times, gain_db)).astype(np.float32)


def fade(audio: np.ndarray, rate: int, in_s: float = FADE_IN_S, out_s: float = FADE_OUT_S):
    """Fade in and out (equal-power curves), each at most MAX_FADE_SHARE of the clip."""
    n = audio.shape[-1]
    audio = audio.copy()
    for seconds, at_start in ((in_s, True), (out_s, False)):
        length = min(round(seconds * rate), int(n * MAX_FADE_SHARE))
        if length < 2:
            continue
        curve = np.sin(np.linspace(0.0, np.pi / 2, length, dtype=np.float32))
        if at_start:
            audio[..., :length] *= curve
        else:
            audio[..., n - length :] *= curve[::-1]
    return audio


def true_peak(audio: np.ndarray) -> np.ndarray:
    """|sample| of the 4x oversampled signal, per original sample (max over channels)."""
    up = resample_poly(audio.astype(np.float64), OVERSAMPLING, 1, axis=-1)
    n = audio.shape[-1]
    peaks = np.abs(up[..., : n * OVERSAMPLING]).reshape(*audio.shape[:-1], n, OVERSAMPLING)
    return np.maximum(peaks.max(axis=-1).max(axis=0), np.abs(audio).max(axis=0))


def true_peak_dbtp(audio: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(20 * np.log10(true_peak(audio).max(initial=0.0)))


def limit(audio: np.ndarray, rate: int, ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP):
    """A look-ahead true-peak limiter: the gain each sample needs, spread so that it never
    jumps (a minimum over twice the look-ahead, then an average over the look-ahead: the
    average of minima that each cover the sample is at most what the sample needs)."""
    ceiling = float(db_to_gain(ceiling_dbtp))
    needed = np.minimum(1.0, ceiling / np.maximum(true_peak(audio), 1e-12))
    if needed.min() >= 1.0:
        return audio
    look = max(1, round(LIMITER_LOOKAHEAD_S * rate))
    gain = minimum_filter1d(needed, size=2 * look + 1, mode="nearest")
    gain = uniform_filter1d(gain, size=look | 1, mode="nearest")
    limited = (audio * gain).astype(np.float32)
    peak = true_peak(limited).max()
    if peak > ceiling:  # the filters' rounding: a last, inaudible trim
        limited *= ceiling / peak
    return limited


def normalise(audio: np.ndarray, rate: int, target_lufs: float) -> np.ndarray:
    """To `target_lufs` integrated, true peak at most TRUE_PEAK_CEILING_DBTP (silence stays)."""
    for _ in range(NORMALISE_PASSES):
        level = loudness(audio, rate)
        if not np.isfinite(level):
            return audio
        if abs(level - target_lufs) < NORMALISE_TOLERANCE_LU and true_peak_dbtp(audio) <= (
            TRUE_PEAK_CEILING_DBTP + 1e-3
        ):
            break
        audio = limit(audio * float(db_to_gain(target_lufs - level)), rate)
    return audio.astype(np.float32)


def place(
    music: np.ndarray,
    original: np.ndarray | None,
    rate: int,
    mode: str = "replace",
    target_lufs: float = DEFAULT_LUFS,
    length: int | None = None,
) -> np.ndarray:
    """The output track [2, samples]: `music` (mono [samples], or [channels, samples]) faded
    over its own length, cut or padded to `length` samples (default: the original's, else the
    music's), placed over `original` ([channels, samples] or None; a stereo one keeps its image)
    by `mode`, normalised and limited. Loudness is measured on the stereo signals that are
    mixed, so the music sits at the same level over a mono or a stereo original."""
    if mode not in MODES:
        raise ValueError(f"unknown audio mode {mode!r}; use one of {', '.join(MODES)}")
    music = fade(_stereo(np.atleast_2d(music).astype(np.float32)), rate)
    if length is None:
        length = music.shape[-1] if original is None else original.shape[-1]
    music = np.pad(music[:, :length], ((0, 0), (0, max(0, length - music.shape[-1]))))
    if original is not None:
        original = _stereo(original[:, :length])
    if mode == "replace" or original is None or not np.isfinite(loudness(original, rate)):
        return normalise(music, rate, target_lufs)
    music = _to(music, loudness(music, rate), target_lufs)
    if mode == "mix":
        original = _to(original, loudness(original, rate), target_lufs - MIX_ORIGINAL_UNDER_LU)
    else:
        original = _to(original, loudness(original, rate), target_lufs)
        music = music * duck_gain(original, rate, target_lufs)
    return normalise(music + original, rate, target_lufs)


def _stereo(audio: np.ndarray) -> np.ndarray:
    """[channels, samples] -> [2, samples]: one channel plays on both sides."""
    return np.repeat(audio, STEREO, axis=0) if audio.shape[0] == 1 else audio[:STEREO]


def _to(audio: np.ndarray, level: float, target: float) -> np.ndarray:
    return audio if not np.isfinite(level) else audio * float(db_to_gain(target - level))


def read_original(path: str | Path, info: VideoInfo, rate: int) -> np.ndarray | None:
    """The video's first audio track as stereo ([2, samples]: the output track is stereo; a mono
    track plays on both channels, more channels are mixed down), at `rate`, on the video's
    timeline (sample 0 at its first frame), exactly as long as the video; None if it has none."""
    if not info.has_audio:
        return None
    n = round(info.duration_s * rate)
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=rate)
            out = np.zeros((STEREO, n), np.float32)
            for frame in container.decode(stream):
                for piece in resampler.resample(frame):
                    _place_frame(out, piece, info.start_s, rate)
            for piece in resampler.resample(None):
                _place_frame(out, piece, info.start_s, rate)
    except (av.FFmpegError, EOFError) as exc:
        raise VideoError(f"{path}: cannot decode its audio track ({exc})") from None
    return out


def _place_frame(out: np.ndarray, frame: av.AudioFrame, start_s: float, rate: int) -> None:
    if frame.pts is None or frame.time_base is None:
        return
    at = round((float(frame.pts * frame.time_base) - start_s) * rate)
    data = frame.to_ndarray()[: out.shape[0]]
    lo, hi = max(0, at), min(out.shape[1], at + data.shape[1])
    if hi > lo:
        out[:, lo:hi] = data[:, lo - at : hi - at]


def write_audio(path: str | Path, audio: np.ndarray, rate: int) -> Path:
    """Write [channels, samples] as FLAC or WAV (by extension; 24-bit / 16-bit PCM)."""
    path = Path(path)
    codec = {".flac": "flac", ".wav": "pcm_s16le"}.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"{path}: write music as .flac or .wav")
    layout = "stereo" if audio.shape[0] == 2 else "mono"
    flac = codec == "flac"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            codec,
            rate=rate,
            layout=layout,
            format="s32" if flac else "s16",
            options={"bits_per_raw_sample": "24"} if flac else {},
        )
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio.astype(np.float32)), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
