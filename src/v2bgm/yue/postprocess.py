"""YuE's two-band recombination (xcodec_mini_infer/post_process_audio.py), without torchaudio.

`replace_low_freq_with_energy_matched` keeps the 16 kHz X-Codec mix below 5.5 kHz and the 44.1 kHz
vocoder mix above it:

    low  = lowpass(resample(mix_16k -> 44.1k)) * rms(lowpass(mix_44k)) / rms(lowpass(low))
    high = highpass(mix_44k)
    out  = low + high, both cut to the shorter

The pieces reproduce the torchaudio calls it makes: `transforms.Resample(16000, 44100)` (Hann-
windowed sinc, 6 zero crossings, rolloff 0.99) and `functional.lowpass_biquad` /
`highpass_biquad` (RBJ cookbook biquads, Q 0.707, zero initial state, output clamped to [-1, 1]
because `lfilter` clamps by default).

YuE feeds it files, not arrays: each 16 kHz stem clamped to +-0.99 then summed, the vocoder mix
clamped to +-0.99 (MP3 round trips in between, which we do not reproduce). Pass the same signals
for parity.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LOW_RATE = 16000  # X-Codec
HIGH_RATE = 44100  # the vocoder
CUTOFF_HZ = 5500.0  # infer.py: replace_low_freq_with_energy_matched(..., cutoff_freq=5500.0)
BIQUAD_Q = 0.707  # torchaudio's default Q for lowpass/highpass_biquad
RMS_EPS = 1e-10  # post_process_audio's eps, added to each RMS
LFILTER_CLAMP = 1.0  # torchaudio.functional.lfilter(clamp=True)
RESAMPLE_ZERO_CROSSINGS = 6  # torchaudio's lowpass_filter_width default
RESAMPLE_ROLLOFF = 0.99


# --- resampling: torchaudio's sinc_interp_hann -------------------------------------------------
def resample_kernel(orig_rate: int, new_rate: int) -> tuple[torch.Tensor, int]:
    """Polyphase kernel [new, 1, 2 * width + orig] (rates reduced by their gcd) and `width`, the
    input padding, as torchaudio's `_get_sinc_resample_kernel` builds them: in float64, the output
    phases j / new in float32 as its integer arange promotes them, stored as float32."""
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    base = min(orig, new) * RESAMPLE_ROLLOFF  # cutoff, in units of the reduced rates
    width = math.ceil(RESAMPLE_ZERO_CROSSINGS * orig / base)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    phases = (torch.arange(0, -new, -1, dtype=torch.float32) / new).double()[:, None, None]
    t = ((phases + taps) * base).clamp(-RESAMPLE_ZERO_CROSSINGS, RESAMPLE_ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / RESAMPLE_ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * (window * (base / orig))).float(), width


def resample(audio: np.ndarray, orig_rate: int = LOW_RATE, new_rate: int = HIGH_RATE) -> np.ndarray:
    """1-D float audio -> float32 at `new_rate`, ceil(len * new / orig) samples."""
    audio = np.asarray(audio, dtype=np.float32)
    if orig_rate == new_rate:
        return audio
    kernel, width = resample_kernel(orig_rate, new_rate)
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    x = F.pad(torch.from_numpy(audio)[None, None], (width, width + orig))
    with torch.inference_mode():
        y = F.conv1d(x, kernel, stride=orig)  # [1, new, frames]: one output phase per channel
    # torchaudio takes this ceil of a float32 tensor; exact up to 2**24 samples
    n_out = math.ceil(np.float32(new * audio.shape[-1] / orig))
    return y[0].transpose(0, 1).reshape(-1)[:n_out].numpy()


IIR_BLOCK = 4096  # samples per block of `iir2` (the biquads' responses die out well within it)
# Blocks whose FFTs `iir2` computes at once (4M samples): its scratch stays ~100 MB however long
# the music (a 20-minute track at 44.1 kHz holds 12,900 blocks: all at once took ~2.5 GB).
IIR_GROUP = 1024


# --- biquads: torchaudio's lowpass_biquad / highpass_biquad ------------------------------------
def lowpass_coefficients(
    sample_rate: int, cutoff: float = CUTOFF_HZ, q: float = BIQUAD_Q
) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) as torchaudio passes them to lfilter (a[0] = 1 + alpha, not normalised)."""
    w0 = 2 * math.pi * cutoff / sample_rate
    alpha = math.sin(w0) / 2 / q
    b = np.array([(1 - math.cos(w0)) / 2, 1 - math.cos(w0), (1 - math.cos(w0)) / 2])
    return b, np.array([1 + alpha, -2 * math.cos(w0), 1 - alpha])


def highpass_coefficients(
    sample_rate: int, cutoff: float = CUTOFF_HZ, q: float = BIQUAD_Q
) -> tuple[np.ndarray, np.ndarray]:
    w0 = 2 * math.pi * cutoff / sample_rate
    alpha = math.sin(w0) / 2 / q
    b = np.array([(1 + math.cos(w0)) / 2, -1 - math.cos(w0), (1 + math.cos(w0)) / 2])
    return b, np.array([1 + alpha, -2 * math.cos(w0), 1 - alpha])


def biquad(audio: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Direct-form IIR from rest, then torchaudio's [-1, 1] clamp; float64 inside, float32 out."""
    y = iir2(np.asarray(audio, dtype=np.float64), b / a[0], a / a[0])
    return np.clip(y, -LFILTER_CLAMP, LFILTER_CLAMP, out=y).astype(np.float32)


def iir2(
    x: np.ndarray, b: np.ndarray, a: np.ndarray, block: int = IIR_BLOCK, group: int = IIR_GROUP
) -> np.ndarray:
    """`lfilter(b, a, x)` for a second-order section (a[0] = 1) in numpy alone (SciPy is not on
    every machine that serves), in blocks: within a block the output is the input filtered
    from rest (an FFT convolution with the impulse response, `group` blocks at a time) plus the
    free response to the two outputs carried in from the block before."""
    n = len(x)
    if n == 0:
        return x.copy()
    a1, a2 = float(a[1]), float(a[2])
    h = np.zeros(block)  # impulse response of 1 / (1 + a1 z^-1 + a2 z^-2)
    h[0] = 1.0
    for k in range(1, block):
        h[k] = -a1 * h[k - 1] - (a2 * h[k - 2] if k > 1 else 0.0)
    g1 = -a1 * h - a2 * np.concatenate([[0.0], h[:-1]])  # free response to y[-1] = 1
    g2 = -a2 * h  # ... to y[-2] = 1
    blocks = -(-n // block)
    y = np.zeros(blocks * block)
    y[:n] = np.convolve(x, b)[:n]  # the numerator, then y[k] = v[k] - a1 y[k-1] - a2 y[k-2]
    rows = y.reshape(blocks, block)  # filtered from rest in place, then the carries added
    size = 2 * block
    spectrum = np.fft.rfft(h, size)
    for first in range(0, blocks, group):
        part = rows[first : first + group]
        part[:] = np.fft.irfft(np.fft.rfft(part, size) * spectrum, size)[:, :block]
    for i in range(1, blocks):
        rows[i] += rows[i - 1, -1] * g1 + rows[i - 1, -2] * g2
    return y[:n]


def lowpass(
    audio: np.ndarray, sample_rate: int = HIGH_RATE, cutoff: float = CUTOFF_HZ
) -> np.ndarray:
    return biquad(audio, *lowpass_coefficients(sample_rate, cutoff))


def highpass(
    audio: np.ndarray, sample_rate: int = HIGH_RATE, cutoff: float = CUTOFF_HZ
) -> np.ndarray:
    return biquad(audio, *highpass_coefficients(sample_rate, cutoff))


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) + RMS_EPS


def recombine(
    low_16k: np.ndarray,
    high_44k: np.ndarray,
    *,
    low_rate: int = LOW_RATE,
    high_rate: int = HIGH_RATE,
    cutoff: float = CUTOFF_HZ,
) -> np.ndarray:
    """The X-Codec mix's low band (RMS-matched to the vocoder mix's low band) plus the vocoder
    mix's high band: float32 mono at `high_rate`, as long as the shorter of the two."""
    low = lowpass(resample(low_16k, low_rate, high_rate), high_rate, cutoff)
    scale = _rms(lowpass(high_44k, high_rate, cutoff)) / _rms(low)
    high = highpass(high_44k, high_rate, cutoff)
    n = min(len(low), len(high))
    return (low[:n] * np.float32(scale) + high[:n]).astype(np.float32)
