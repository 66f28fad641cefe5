"""YuE's 44.1 kHz upsampler (xcodec_mini_infer/decoders) and its tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import XcodecModel

from v2bgm import checkpoints
from v2bgm.yue.codec import XcodecDecoder
from v2bgm.yue.postprocess import recombine
from v2bgm.yue.vocoder import DECODER_FILES, SAMPLE_RATE, Upsampler
from v2bgm.yue.vocos import ISTFT, MAX_MAGNITUDE, VocosConfig, VocosDecoder

HOP = 882  # 44100 / 50
N_FFT = 3528

# xcodec_mini_infer/decoders/config.yaml, verbatim
YUE_DECODERS_CONFIG = """\
backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 1024
    dim: 512
    intermediate_dim: 1536
    num_layers: 8

head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: 512
    n_fft: 3528
    hop_length: 882
    padding: same
"""


@pytest.fixture(scope="module")
def upsampler(weights: Path) -> Upsampler:
    return Upsampler.from_pretrained(weights / checkpoints.YUE_VOCODER)


def test_yue_config_yaml_parses(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(YUE_DECODERS_CONFIG)
    assert VocosConfig.from_yaml(path) == VocosConfig(1024, 512, 1536, 8, N_FFT, HOP)


def test_parameter_names_are_the_originals() -> None:
    """VocosDecoder(VocosBackbone, ISTFTHead) of xcodec_mini_infer/vocos, with 2 ConvNeXt blocks;
    a real decoder_*.pth loads with strict=True only if these match."""
    config = VocosConfig(
        input_channels=6, dim=4, intermediate_dim=8, num_layers=2, n_fft=16, hop_length=4
    )
    block = ["dwconv.weight", "dwconv.bias", "norm.weight", "norm.bias", "pwconv1.weight"]
    block += ["pwconv1.bias", "pwconv2.weight", "pwconv2.bias", "gamma"]
    expected = {
        "backbone.embed.weight": (4, 6, 7),
        "backbone.embed.bias": (4,),
        "backbone.norm.weight": (4,),
        "backbone.norm.bias": (4,),
        "backbone.final_layer_norm.weight": (4,),
        "backbone.final_layer_norm.bias": (4,),
        "head.out.weight": (18, 4),  # n_fft + 2: log-magnitude and phase of 9 bins
        "head.out.bias": (18,),
        "head.istft.window": (16,),
    }
    shapes = {"dwconv.weight": (4, 1, 7), "pwconv1.weight": (8, 4), "pwconv2.weight": (4, 8)}
    for i in range(2):
        for name in block:
            expected[f"backbone.convnext.{i}.{name}"] = shapes.get(
                name, (8,) if "pwconv1" in name else (4,)
            )
    state = VocosDecoder(config).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    torch.testing.assert_close(state["head.istft.window"], torch.hann_window(16))  # periodic


@pytest.mark.parametrize("frames", [1, 2, 37])
def test_882_samples_per_frame(upsampler: Upsampler, frames: int) -> None:
    channels = upsampler.decoders["vocal"].config.input_channels
    embeddings = torch.randn(channels, frames, generator=torch.Generator().manual_seed(frames))
    audio = upsampler(embeddings, track="instrumental")
    assert audio.dtype == np.float32 and audio.shape == (HOP * frames,)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    batch = upsampler(torch.stack([embeddings, -embeddings]), track="vocal")
    assert batch.shape == (2, HOP * frames)
    assert upsampler.sample_rate == SAMPLE_RATE == HOP * 50


def test_tracks_use_their_own_decoder(upsampler: Upsampler, weights: Path) -> None:
    folder = weights / checkpoints.YUE_VOCODER
    assert {p.name for p in folder.iterdir()} == {"config.yaml", *DECODER_FILES.values()}
    embeddings = torch.randn(1, upsampler.decoders["vocal"].config.input_channels, 5)
    assert not np.allclose(upsampler(embeddings, "vocal"), upsampler(embeddings, "instrumental"))
    state = torch.load(folder / DECODER_FILES["vocal"], weights_only=True)
    torch.testing.assert_close(
        state["head.out.weight"], upsampler.decoders["vocal"].head.out.weight
    )


def test_codec_embeddings_feed_the_vocoder(upsampler: Upsampler, weights: Path) -> None:
    decoder = XcodecDecoder(XcodecModel.from_pretrained(weights / checkpoints.XCODEC).eval())
    frames = 25
    codes = np.random.default_rng(0).integers(0, 1024, (8, frames))
    audio_44k = upsampler(decoder.embeddings(codes), track="instrumental")
    audio_16k = decoder.decode(codes)
    assert audio_44k.shape == (1, HOP * frames)
    assert len(audio_16k) * SAMPLE_RATE == audio_44k.shape[1] * decoder.sample_rate  # same length


def test_codes_to_recombined_44k_as_infer_py_chains_them(
    upsampler: Upsampler, weights: Path
) -> None:
    """Both tracks: 16 kHz decode (stems clamped to +-0.99, summed), vocoder per track (summed,
    clamped), then the two-band recombination: 882 samples per frame at 44.1 kHz."""
    decoder = XcodecDecoder(XcodecModel.from_pretrained(weights / checkpoints.XCODEC).eval())
    frames = 30
    rng = np.random.default_rng(2)
    tracks = {t: rng.integers(0, 1024, (8, frames)) for t in DECODER_FILES}
    mix_16k = sum(np.clip(decoder.decode(c), -0.99, 0.99) for c in tracks.values())
    mix_44k = np.clip(
        sum(upsampler(decoder.embeddings(c), t)[0] for t, c in tracks.items()), -0.99, 0.99
    )
    out = recombine(mix_16k, mix_44k)
    assert out.shape == (HOP * frames,) and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize(("n_fft", "hop"), [(N_FFT, HOP), (16, 4)])
def test_same_padding_istft_inverts_the_matching_stft(n_fft: int, hop: int) -> None:
    """Frames cut from the signal padded by (n_fft - hop) / 2 on each side come back as exactly
    the signal, T * hop samples, with no shift."""
    frames = 9
    x = torch.randn(
        1, frames * hop, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    pad = (n_fft - hop) // 2
    window = torch.hann_window(n_fft, dtype=torch.float64)
    chunks = torch.nn.functional.pad(x, (pad, pad)).unfold(-1, n_fft, hop)  # [1, T, n_fft]
    spec = torch.fft.rfft(chunks * window, dim=-1).transpose(1, 2)
    istft = ISTFT(n_fft, hop).double()
    y = istft(spec)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)


def test_head_splits_magnitude_then_phase_and_clips_magnitude() -> None:
    config = VocosConfig(
        input_channels=2, dim=2, intermediate_dim=4, num_layers=1, n_fft=16, hop_length=4
    )
    head = VocosDecoder(config).head
    bins = config.n_fft // 2 + 1
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias[:bins] = torch.linspace(-1.0, 10.0, bins)  # exp(10) > 100: clipped
        head.out.bias[bins:] = torch.linspace(0.0, 3.0, bins)
        audio = head(torch.zeros(1, 3, 2))
        magnitude = torch.exp(head.out.bias[:bins]).clip(max=MAX_MAGNITUDE)
        spec = torch.polar(magnitude, head.out.bias[bins:])[None, :, None].expand(1, bins, 3)
        expected = ISTFT(config.n_fft, config.hop_length)(spec)
    assert magnitude.max() == MAX_MAGNITUDE
    torch.testing.assert_close(audio, expected)


def test_unsupported_configs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(YUE_DECODERS_CONFIG.replace("padding: same", "padding: center"))
    with pytest.raises(ValueError, match="same"):
        VocosConfig.from_yaml(path)
