"""The decoding path as ONNX (v2bgm.yue.onnx_export): the graphs pass `onnx.checker`, and ONNX
Runtime's output matches the composer's torch modules at two lengths (the time axis is dynamic).

Tolerances are relative to the torch signal's peak, in fp32 (unit roundoff 6e-8). Both runtimes
compute the same operations with different kernels, so sums are accumulated in another order:
- X-Codec: 1e-5 of the peak. Each output sample is ~30 convolutions deep, each a sum over
  channels x taps; measured 5e-7 (tiny) and 1.3e-6 (full size, 30 s, CPU).
- vocoder: 1e-4 of the peak. The inverse DFT is a 3,530-term dot product per sample instead of an
  FFT, then divided by the window envelope; measured 4e-6 (tiny) and 1e-6 (full size). 1e-4 of
  full scale is 3 steps of 16-bit audio, far below anything audible, and 25x what we measure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from v2bgm.yue import onnx_export
from v2bgm.yue.composer import load_decoder
from v2bgm.yue.vocos import ISTFT

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[dev]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

LENGTHS = (37, 150)  # frames at 50 Hz; neither is the traced example's length (64)
XCODEC_RTOL = 1e-5
VOCODER_RTOL = 1e-4
CODEBOOKS = 8


def codes_of(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (CODEBOOKS, frames))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.fixture(scope="module")
def decoders(weights: Path):
    return load_decoder(weights, "cpu")


@pytest.fixture(scope="module")
def exported(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return onnx_export.export_all(weights, tmp_path_factory.mktemp("onnx"))


def test_graphs_pass_the_checker(exported: dict[str, Path]) -> None:
    assert set(exported) == {"xcodec", "instrumental", "vocal"}
    for path in exported.values():
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[::2]] == ["batch", "frames"]  # dynamic, by name


@pytest.mark.parametrize("frames", LENGTHS)
def test_xcodec_matches_torch(exported: dict[str, Path], decoders, frames: int) -> None:
    codec, _ = decoders
    decoder = onnx_export.OnnxTrackDecoder.from_folder(exported["xcodec"].parent)
    codes = codes_of(frames, frames)
    audio, embeddings = decoder.xcodec_decode(codes)
    assert audio.shape == (frames * 320,)
    assert relative_error(audio, codec.decode(codes)) < XCODEC_RTOL
    assert relative_error(embeddings, codec.embeddings(codes).numpy()) < XCODEC_RTOL


@pytest.mark.parametrize("track", ["instrumental", "vocal"])
def test_vocoder_matches_torch(exported: dict[str, Path], decoders, track: str) -> None:
    codec, upsampler = decoders
    decoder = onnx_export.OnnxTrackDecoder.from_folder(exported["xcodec"].parent)
    for frames in LENGTHS:
        embeddings = codec.embeddings(codes_of(frames, frames)).numpy()
        audio = decoder.vocode(embeddings, track)
        assert audio.shape == (1, frames * 882)
        assert relative_error(audio, upsampler(embeddings, track=track)) < VOCODER_RTOL


def test_batch_axis_is_dynamic(exported: dict[str, Path], decoders) -> None:
    codec, upsampler = decoders
    session = onnx_export.session(exported["xcodec"])
    codes = np.stack([codes_of(20, 1), codes_of(20, 2)])
    audio, embeddings = session.run(None, {onnx_export.CODES: codes})
    assert audio.shape == (2, 1, 20 * 320)
    assert relative_error(audio[1, 0], codec.decode(codes[1])) < XCODEC_RTOL
    stems = onnx_export.session(exported["instrumental"]).run(
        None, {onnx_export.EMBEDDINGS: embeddings}
    )[0]
    assert relative_error(stems, upsampler(embeddings)) < VOCODER_RTOL


@pytest.mark.parametrize(("n_fft", "hop"), [(3528, 882), (16, 6)])
def test_real_istft_is_the_istft(n_fft: int, hop: int) -> None:
    """The real-arithmetic ISTFT of the exported vocoder against the complex one it replaces,
    also where n_fft is not a whole number of hops; DC and Nyquist get imaginary parts that
    irfft ignores."""
    torch.manual_seed(0)
    istft = ISTFT(n_fft, hop)
    real_istft = onnx_export.RealISTFT(n_fft, hop, istft.window)
    bins = n_fft // 2 + 1
    for frames in (1, 9):
        spec = torch.complex(torch.randn(2, bins, frames), torch.randn(2, bins, frames))
        want = istft(spec)
        got = real_istft(spec.real.transpose(1, 2), spec.imag.transpose(1, 2))
        assert got.shape == want.shape == (2, frames * hop)
        assert relative_error(got.numpy(), want.numpy()) < VOCODER_RTOL
