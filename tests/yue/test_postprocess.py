"""The two-band recombination of post_process_audio.py: resampler, biquads, RMS matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal

from v2bgm.yue.postprocess import (
    BIQUAD_Q,
    CUTOFF_HZ,
    HIGH_RATE,
    LOW_RATE,
    highpass,
    highpass_coefficients,
    lowpass,
    lowpass_coefficients,
    recombine,
    resample,
    resample_kernel,
)

FRAMES = 150  # 3 s of X-Codec frames


def _normalised(b: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return b / a[0], a / a[0]


def _response(coefficients: tuple[np.ndarray, np.ndarray], hz: list[float]) -> np.ndarray:
    return scipy.signal.freqz(*coefficients, worN=hz, fs=HIGH_RATE)[1]


def _sine(hz: float, rate: int, seconds: float, amplitude: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32)


def _phasor(audio: np.ndarray, hz: float, rate: int = HIGH_RATE) -> complex:
    """Complex amplitude of `hz` over the 2nd second (whole periods, transients gone): A e^{i phi}
    for A sin(2 pi f t + phi)."""
    second = audio[rate : 2 * rate].astype(np.float64)
    t = np.arange(rate) / rate
    return complex(2 * np.mean(second * np.exp(-2j * np.pi * hz * t)) * 1j)


@pytest.mark.parametrize(
    ("design", "analog_numerator"),
    [(lowpass_coefficients, "low"), (highpass_coefficients, "high")],
)
def test_biquads_are_the_prewarped_bilinear_butterworth(design, analog_numerator: str) -> None:
    """RBJ's cookbook filters = bilinear transform of the 2nd-order analog prototype with the
    cutoff prewarped; torchaudio computes exactly these."""
    wc = 2 * HIGH_RATE * math.tan(math.pi * CUTOFF_HZ / HIGH_RATE)
    numerator = [wc**2] if analog_numerator == "low" else [1.0, 0.0, 0.0]
    expected = scipy.signal.bilinear(numerator, [1.0, wc / BIQUAD_Q, wc**2], fs=HIGH_RATE)
    for ours, theirs in zip(_normalised(*design(HIGH_RATE)), expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_biquad_gain_at_dc_cutoff_and_nyquist() -> None:
    points = [0.0, CUTOFF_HZ, HIGH_RATE / 2]
    low = np.abs(_response(lowpass_coefficients(HIGH_RATE), points))
    high = np.abs(_response(highpass_coefficients(HIGH_RATE), points))
    np.testing.assert_allclose(low, [1.0, BIQUAD_Q, 0.0], atol=1e-9)  # -3 dB at the cutoff
    np.testing.assert_allclose(high, [0.0, BIQUAD_Q, 1.0], atol=1e-9)


def test_filters_pass_and_stop_sines() -> None:
    low_tone, high_tone = _sine(500, HIGH_RATE, 2, 0.5), _sine(15000, HIGH_RATE, 2, 0.5)
    assert abs(_phasor(lowpass(low_tone), 500)) == pytest.approx(0.5, rel=0.01)
    assert abs(_phasor(lowpass(high_tone), 15000)) < 0.05
    assert abs(_phasor(highpass(high_tone), 15000)) == pytest.approx(0.5, rel=0.05)
    assert abs(_phasor(highpass(low_tone), 500)) < 0.01


def test_filter_output_is_clamped_like_torchaudio_lfilter() -> None:
    """A Butterworth step response overshoots by about 4 %; lfilter(clamp=True) cuts it at 1."""
    step = np.full(2000, 0.99, np.float32)
    out = lowpass(step)
    assert out.max() == 1.0 and out.dtype == np.float32
    unclamped = scipy.signal.lfilter(*_normalised(*lowpass_coefficients(HIGH_RATE)), step)
    assert unclamped.max() > 1.0


def test_resample_kernel_16k_to_44k1() -> None:
    kernel, width = resample_kernel(LOW_RATE, HIGH_RATE)
    # gcd 100: 160 -> 441 phases; width = ceil(6 * 160 / (160 * 0.99)) = 7
    assert width == 7 and kernel.shape == (441, 1, 2 * 7 + 160)
    assert kernel[0, 0, width].item() == pytest.approx(0.99)  # phase 0 hits the input sample
    np.testing.assert_allclose(kernel.sum(dim=-1).numpy(), 1.0, atol=2e-3)  # DC gain per phase


@pytest.mark.parametrize("n", [16000, 16001, 320 * 37])
def test_resample_length_is_torchaudios(n: int) -> None:
    assert len(resample(np.zeros(n, np.float32))) == math.ceil(n * HIGH_RATE / LOW_RATE)


def test_resample_keeps_a_sine() -> None:
    out = resample(_sine(1000, LOW_RATE, 1, 0.5))
    expected = _sine(1000, HIGH_RATE, 1, 0.5)
    assert len(out) == len(expected) == HIGH_RATE
    inner = slice(1000, -1000)  # the ends see zero padding
    np.testing.assert_allclose(out[inner], expected[inner], atol=2e-3)


@pytest.mark.parametrize(("low_len", "high_len"), [(320 * FRAMES, 882 * FRAMES), (16000, 44000)])
def test_recombine_cuts_to_the_shorter(low_len: int, high_len: int) -> None:
    rng = np.random.default_rng(0)
    low = rng.uniform(-0.5, 0.5, low_len).astype(np.float32)
    high = rng.uniform(-0.5, 0.5, high_len).astype(np.float32)
    out = recombine(low, high)
    assert out.dtype == np.float32
    assert len(out) == min(math.ceil(low_len * HIGH_RATE / LOW_RATE), high_len)


def test_recombine_takes_low_band_from_xcodec_and_high_band_from_vocoder() -> None:
    """X-Codec mix: 1 kHz. Vocoder mix: 1 kHz at another level and phase, plus 12 kHz. Out: the
    X-Codec 1 kHz (its phase) at the vocoder's low-band RMS, plus the vocoder's high band."""
    seconds, x_phase, v_phase = 3, 0.0, 1.0
    xcodec = _sine(1000, LOW_RATE, seconds, 0.3, x_phase)
    vocoder = _sine(1000, HIGH_RATE, seconds, 0.1, v_phase) + _sine(12000, HIGH_RATE, seconds, 0.2)
    out = recombine(xcodec, vocoder)
    h_low = _response(lowpass_coefficients(HIGH_RATE), [1000.0, 12000.0])
    h_high = _response(highpass_coefficients(HIGH_RATE), [1000.0, 12000.0])
    # RMS matching of the two tones' lowpassed power onto the single X-Codec tone:
    level = math.hypot(0.1 * abs(h_low[0]), 0.2 * abs(h_low[1]))
    expected_1k = level * np.exp(1j * (x_phase + np.angle(h_low[0]))) + 0.1 * h_high[0] * np.exp(
        1j * v_phase
    )
    expected_12k = 0.2 * h_high[1]
    assert _phasor(out, 1000) == pytest.approx(expected_1k, abs=1e-4)
    assert _phasor(out, 12000) == pytest.approx(expected_12k, abs=1e-4)


def test_silent_xcodec_mix_leaves_the_vocoder_high_band() -> None:
    vocoder = np.random.default_rng(1).uniform(-0.5, 0.5, 882 * 20).astype(np.float32)
    out = recombine(np.zeros(320 * 20, np.float32), vocoder)
    np.testing.assert_array_equal(out, highpass(vocoder))


@pytest.mark.parametrize("n", [0, 1, 5, 4095, 4096, 4097, 100_003])
def test_numpy_biquad_equals_scipy_lfilter(n):
    import scipy.signal

    from v2bgm.yue import postprocess

    x = np.random.default_rng(n).uniform(-1, 1, n)
    for b, a in (postprocess.lowpass_coefficients(44100), postprocess.highpass_coefficients(16000)):
        got = postprocess.iir2(x, b / a[0], a / a[0])
        np.testing.assert_allclose(got, scipy.signal.lfilter(b / a[0], a / a[0], x), atol=1e-12)


def test_biquad_in_groups_of_blocks_equals_all_blocks_at_once():
    """`iir2` bounds its scratch by taking its blocks' FFTs a group at a time: the same samples."""
    from v2bgm.yue import postprocess

    x = np.random.default_rng(7).uniform(-1, 1, 10 * postprocess.IIR_BLOCK + 123)
    b, a = postprocess.lowpass_coefficients(44100)
    b, a = b / a[0], a / a[0]
    at_once = postprocess.iir2(x, b, a, group=1000)
    for group in (1, 3, 11):
        np.testing.assert_array_equal(postprocess.iir2(x, b, a, group=group), at_once)
