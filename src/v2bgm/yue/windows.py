"""Long tracks decoded in bounded pieces: the same samples, memory bounded by the window.

X-Codec's decoder (DAC: convolutions, transposed convolutions, snakes) and the vocoder (Vocos:
convolutions, per-frame LayerNorm, a per-frame ISTFT head) are local in time: an output sample
depends only on the codes of a few frames around it, and shifting the codes by one frame shifts
the audio by exactly `samples_per_frame` samples. So a track longer than a window is decoded
window by window, each with `margin` frames of codes on either side (their audio is cut off), and
the pieces join without a seam. Their activations, not the track's, are what the device holds:
X-Codec at full size needs ~21 MB per second of music (float32, measured on the CPU: 0.6 GB for
20 s), so ~6 GB for a 300-s window against ~25 GB for 20 minutes whole.

The invariant: `margin` exceeds the decoders' reach. X-Codec's reaches ~11 frames each way (a
kernel-7 convolution at 50 Hz, then dilations 1, 3, 9 of kernel 7 at 400, 2,000, 8,000 and 16,000
Hz), YuE's vocoder's ~30 (a kernel-7 embedding and 8 ConvNeXt blocks of kernel 7 at 50 Hz, an
ISTFT of 4 hops). At full size (random weights, CPU, 1,100 frames in windows of 400): a margin of
5 frames leaves seams (16 % of the peak for X-Codec), 20 frames 8e-7, MARGIN_FRAMES 3e-7 (X-Codec)
and 0 (the vocoder); tests/engine/test_long_music.py checks the tiny decoders the same way. A
track no longer than one window is decoded whole, exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

WINDOW_FRAMES = 15_000  # 300 s at 50 frames/s: the longest track decoded whole
MARGIN_FRAMES = 100  # 2 s of context either side of a window, several times the decoders' reach


def decode_in_windows(
    decode: Callable[[np.ndarray], np.ndarray],
    codes: np.ndarray,
    samples_per_frame: int,
    window: int = WINDOW_FRAMES,
    margin: int = MARGIN_FRAMES,
) -> np.ndarray:
    """`decode(codes [K, T]) -> samples [~T * samples_per_frame]`, window by window for a track
    longer than `window` frames; the result is as long as the whole track's decode."""
    total = codes.shape[1]
    if total <= window:
        return decode(codes)
    if margin < 1:
        raise ValueError(f"a margin of {margin} frames cannot hide a window's edges")
    pieces = []
    for start in range(0, total, window):
        end = min(start + window, total)
        first, last = max(0, start - margin), min(total, end + margin)
        audio = decode(codes[:, first:last])
        offset = (start - first) * samples_per_frame
        stop = None if end == total else (end - first) * samples_per_frame  # the end: all of it
        pieces.append(audio[offset:stop])
    return np.concatenate(pieces)
