"""The output track: placement (replace, mix, duck), loudness, fades, true peak, files."""

from __future__ import annotations

import av
import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt
from v2bgm_client import audio
from v2bgm_client.mux import AUDIO_RATE, mux_audio
from v2bgm_client.video import probe

RATE = AUDIO_RATE
MUSIC_HZ = 1000.0  # synthetic "music": a tone the original never has
ORIGINAL_HZ = 220.0


def tone(seconds: float, hz: float, amplitude: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, amplitude: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * RATE))).clip(-1, 1).astype(np.float32)


def band_rms(track: np.ndarray, hz: float, start_s: float, end_s: float) -> float:
    """RMS of `track` [1, N] within a narrow band around `hz`, between two times."""
    sos = butter(4, [hz * 0.8, hz * 1.25], btype="bandpass", fs=RATE, output="sos")
    part = sosfiltfilt(sos, track[0].astype(np.float64))[
        round(start_s * RATE) : round(end_s * RATE)
    ]
    return float(np.sqrt(np.mean(part**2)))


@pytest.mark.parametrize("target", [-14.0, -23.0, -9.0])
@pytest.mark.parametrize("level", [0.01, 0.3, 1.0])
def test_replace_reaches_the_target_loudness_without_clipping(target, level):
    track = audio.place(noise(4.0, level), None, RATE, "replace", target)
    assert track.shape == (2, 4 * RATE)  # stereo: the mono music on both channels
    np.testing.assert_array_equal(track[0], track[1])
    assert audio.loudness(track, RATE) == pytest.approx(target, abs=0.2)
    assert audio.true_peak_dbtp(track) <= audio.TRUE_PEAK_CEILING_DBTP + 0.01


def test_limiter_keeps_inter_sample_peaks_under_the_ceiling():
    # A tone at a quarter of the sample rate, phase-shifted: its samples miss its peaks by 3 dB.
    n = np.arange(RATE)
    wave = (np.sqrt(2) * np.sin(np.pi / 2 * n + np.pi / 4)).astype(np.float32)[None]
    assert np.abs(wave).max() == pytest.approx(1.0)  # samples at full scale, never over
    assert audio.true_peak_dbtp(wave) > 2.5  # the wave between them: +3 dB
    limited = audio.limit(wave, RATE)
    assert audio.true_peak_dbtp(limited) <= audio.TRUE_PEAK_CEILING_DBTP + 0.01


def test_fades_in_and_out():
    track = audio.place(noise(6.0, 0.2), None, RATE, "replace")
    rms = lambda a, b: float(np.sqrt(np.mean(track[0, round(a * RATE) : round(b * RATE)] ** 2)))  # noqa: E731
    middle = rms(2.0, 4.0)
    assert rms(0.0, 0.05) < 0.1 * middle  # starts from silence
    assert rms(6.0 - 0.05, 6.0) < 0.1 * middle  # ends in silence
    assert rms(1.0, 4.0) == pytest.approx(middle, rel=0.1)  # full level between the fades


def test_short_clip_fades_take_a_share_only():
    track = audio.place(noise(1.0, 0.2), None, RATE, "replace")
    quarter = int(RATE * audio.MAX_FADE_SHARE)
    middle = track[0, quarter : RATE - quarter]
    assert np.sqrt(np.mean(middle**2)) > 0.05  # not faded away


def test_mix_keeps_the_original_under_the_music():
    music = tone(4.0, MUSIC_HZ, 0.3)
    original = tone(4.0, ORIGINAL_HZ, 0.3)[None]
    track = audio.place(music, original, RATE, "mix")
    assert audio.loudness(track, RATE) == pytest.approx(audio.DEFAULT_LUFS, abs=0.2)
    heard = band_rms(track, ORIGINAL_HZ, 1, 3)
    over = band_rms(track, MUSIC_HZ, 1, 3)
    assert 0 < heard < over  # present, and under the music
    replaced = audio.place(music, original, RATE, "replace")
    assert band_rms(replaced, ORIGINAL_HZ, 1, 3) < 0.01 * heard  # replace drops it


def test_duck_lowers_the_music_under_a_loud_section():
    # 4 s of silence, then 4 s of loud sound (speech stands for it): the music must give way.
    music = tone(8.0, MUSIC_HZ, 0.3)
    original = np.concatenate([np.zeros(4 * RATE, np.float32), tone(4.0, ORIGINAL_HZ, 0.5)])
    track = audio.place(music, original[None], RATE, "duck")
    quiet = band_rms(track, MUSIC_HZ, 1.0, 2.0)
    loud = band_rms(track, MUSIC_HZ, 6.0, 7.0)
    drop_db = 20 * np.log10(quiet / loud)
    assert drop_db == pytest.approx(audio.DUCK_DEPTH_DB, abs=1.5)
    # `mix` does not duck: the music keeps its level under the loud part.
    mixed = audio.place(music, original[None], RATE, "mix")
    flat_db = 20 * np.log10(band_rms(mixed, MUSIC_HZ, 1, 2) / band_rms(mixed, MUSIC_HZ, 6, 7))
    assert abs(flat_db) < 1.0
    assert audio.true_peak_dbtp(track) <= audio.TRUE_PEAK_CEILING_DBTP + 0.01


def test_silent_original_is_left_out():
    music = noise(2.0, 0.2)
    track = audio.place(music, np.zeros((1, 2 * RATE), np.float32), RATE, "duck")
    np.testing.assert_allclose(track, audio.place(music, None, RATE, "replace"), atol=1e-6)


def test_music_shorter_than_the_video_is_faded_then_padded():
    track = audio.place(noise(2.0, 0.2), None, RATE, "replace", length=3 * RATE)
    assert track.shape == (2, 3 * RATE)
    assert np.abs(track[0, 2 * RATE - 10 : 2 * RATE]).max() < 0.01  # faded before the silence
    assert not track[0, 2 * RATE :].any()


def test_unknown_mode():
    with pytest.raises(ValueError, match="replace, mix, duck"):
        audio.place(noise(1.0, 0.1), None, RATE, "blend")


@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_write_audio(tmp_path, suffix):
    track = audio.place(noise(1.5, 0.2), None, RATE, "replace")
    path = audio.write_audio(tmp_path / f"music{suffix}", track, RATE)
    with av.open(str(path)) as f:
        decoded = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
    bits = {np.dtype(np.int32): 24, np.dtype(np.int16): 16}[decoded.dtype]
    assert bits == (24 if suffix == ".flac" else 16)
    decoded = decoded / 2.0 ** (8 * decoded.dtype.itemsize - 1)
    assert len(decoded) == track.size  # both channels, interleaved
    assert np.abs(decoded - track.T.reshape(-1)).max() < 2.0 ** (1 - bits)


def test_read_original_follows_the_video_timeline(make_video, tmp_path):
    # A video whose sound is silent for 1 s, then loud: the loud part must start at 1 s.
    src = make_video("silent.mp4", seconds=3, width=160, height=96)
    sound = np.concatenate([np.zeros(RATE, np.float32), tone(2.0, ORIGINAL_HZ, 0.5)])
    with_sound = mux_audio(src, sound, RATE, tmp_path / "with_sound.mp4").output_path
    info = probe(with_sound)
    original = audio.read_original(with_sound, info, RATE)
    assert original.shape == (2, round(info.duration_s * RATE))  # the output track's channels
    energy = [
        float(np.abs(original[0, i * RATE // 10 : (i + 1) * RATE // 10]).mean()) for i in range(30)
    ]
    assert max(energy[:9]) < 0.01 and min(energy[11:29]) > 0.1
    assert audio.read_original(src, probe(src), RATE) is None  # no audio track


def test_a_stereo_original_keeps_its_image_under_mono_music():
    # The original's left channel holds a tone, its right channel is silent: after `mix` and
    # `duck` the tone is still on the left only, and the music is on both sides.
    music = tone(4.0, MUSIC_HZ, 0.3)
    left = tone(4.0, ORIGINAL_HZ, 0.3)
    original = np.stack([left, np.zeros_like(left)])
    for mode in ("mix", "duck"):
        track = audio.place(music, original, RATE, mode)
        assert track.shape == (2, 4 * RATE)
        on_left = band_rms(track[:1], ORIGINAL_HZ, 1, 3)
        on_right = band_rms(track[1:], ORIGINAL_HZ, 1, 3)
        assert on_left > 0 and on_right < 0.01 * on_left, mode
        music_left, music_right = (band_rms(track[c : c + 1], MUSIC_HZ, 1, 3) for c in (0, 1))
        assert music_right == pytest.approx(music_left, rel=0.01), mode


def test_mix_level_is_the_same_over_a_mono_or_a_stereo_original():
    # The same sound, as one channel or as two identical ones, sits at the same level under
    # the music: loudness is measured on what is mixed (both stereo).
    music = tone(4.0, MUSIC_HZ, 0.3)
    original = tone(4.0, ORIGINAL_HZ, 0.3)[None]
    mono = audio.place(music, original, RATE, "mix")
    stereo = audio.place(music, np.repeat(original, 2, axis=0), RATE, "mix")
    np.testing.assert_allclose(stereo, mono, atol=1e-5)
