"""The decoding path as ONNX: X-Codec codes -> 16 kHz audio, YuE's vocoder -> 44.1 kHz audio.

    python -m v2bgm.yue.onnx_export --weights models/tiny --out out/onnx

writes three graphs, each with a dynamic batch and time axis, checked by `onnx.checker`:

- `xcodec_decoder.onnx`: codes int64 [B, K, T] -> audio [B, 1, 320 T] at 16 kHz and the RVQ
  embedding [B, D, T] (the vocoder's input), what `XcodecDecoder.decode` and `.embeddings` compute
  for one track: the codebook lookups and their sum, `fc2`, the DAC decoder. K (8, stage 2's
  codebooks) is fixed when exporting: the lookup loop over codebooks is unrolled.
- `vocoder_instrumental.onnx`, `vocoder_vocal.onnx`: embeddings [B, D, T] -> audio [B, 882 T] at
  44.1 kHz, `VocosDecoder` with its ISTFT rewritten in real arithmetic (`RealISTFT`): ONNX has no
  complex tensors, so the TorchScript exporter refuses `torch.complex` / `torch.fft.irfft`. The
  inverse real DFT becomes one matrix product with a windowed cosine/sine basis, the overlap-add
  a sum of padded views (n_fft = 4 hops in YuE), the window envelope the same sum of the squared
  window; same numbers as `ISTFT` up to fp32 rounding (tests/export/test_onnx_decoder.py).

The TorchScript exporter (`dynamo=False`) is used: it needs no onnxscript and gives the same graphs
under torch 2.11 (the GPU machine) and 2.14 (development). onnx and onnxruntime are imported only
where they are used: the served path does not need them. `v2bgm.bench.decode_onnx` times these
graphs under ONNX Runtime against the composer's torch decoding.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from v2bgm import checkpoints
from v2bgm.yue import tokens
from v2bgm.yue.vocos import MAX_MAGNITUDE, VocosDecoder

if TYPE_CHECKING:
    import onnxruntime
    from transformers import XcodecModel

OPSET = 17  # LayerNorm as one op; ONNX Runtime 1.16+ and every recent exporter support it
XCODEC_FILE = "xcodec_decoder.onnx"
VOCODER_FILES = {"instrumental": "vocoder_instrumental.onnx", "vocal": "vocoder_vocal.onnx"}
EXAMPLE_FRAMES = 64  # the traced example's length; the exported time axis is dynamic
CODES, AUDIO, EMBEDDINGS = "codes", "audio", "embeddings"  # the graphs' input/output names


class XcodecDecodeGraph(nn.Module):
    """codes [B, K, T] -> (16 kHz audio [B, 1, N], RVQ embedding [B, D, T]): `XcodecModel.decode`
    (quantizer.decode, fc2, acoustic_decoder) with the embedding it computes on the way."""

    def __init__(self, model: XcodecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.model.quantizer.decode(codes.transpose(0, 1))  # it takes [K, B, T]
        acoustic = self.model.fc2(embeddings.transpose(1, 2)).transpose(1, 2)
        return self.model.acoustic_decoder(acoustic), embeddings


class RealISTFT(nn.Module):
    """`vocos.ISTFT` ("same" padding) on real and imaginary parts [B, T, n_fft/2 + 1] -> [B, T hop].

    irfft (norm "backward": 1/n_fft; the imaginary parts of the DC and Nyquist bins ignored, as
    every C2R transform does) times the window is one product with a [2 (n_fft/2 + 1), n_fft] basis
    computed in float64 (zero-padded to whole hops); frames overlap-add as `blocks` padded views of
    hop samples each. ISTFT's NOLA check is left out: it depends on n_fft and hop only, and the
    torch module makes it on every call with the same configuration.
    """

    def __init__(self, n_fft: int, hop_length: int, window: torch.Tensor) -> None:
        super().__init__()
        if n_fft % 2:
            raise ValueError(f"n_fft {n_fft} must be even")
        self.hop_length = hop_length
        self.blocks = math.ceil(n_fft / hop_length)
        span = self.blocks * hop_length  # frames zero-padded to whole hops
        bins = n_fft // 2 + 1
        n = torch.arange(n_fft, dtype=torch.int64)
        k = torch.arange(bins, dtype=torch.int64)
        angle = (k[:, None] * n[None, :] % n_fft).double() * (2 * math.pi / n_fft)
        weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
        weight[0] = weight[-1] = 1.0  # DC and Nyquist appear once in the Hermitian spectrum
        win = window.detach().double().cpu()
        basis = torch.zeros(2 * bins, span, dtype=torch.float64)
        basis[:bins, :n_fft] = weight * torch.cos(angle) / n_fft * win
        basis[bins:, :n_fft] = -weight * torch.sin(angle) / n_fft * win
        self.register_buffer("basis", basis.float())
        win_sq = torch.zeros(span, dtype=torch.float64)
        win_sq[:n_fft] = win.square()
        self.register_buffer("window_sq", win_sq.float())
        self.pad = (n_fft - hop_length) // 2  # cut at the start, as ISTFT's "same" padding
        self.tail = span - hop_length - self.pad  # cut at the end: T * hop samples remain

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:  # [B, T, span] -> [B, L]
        parts = frames.unflatten(-1, (self.blocks, self.hop_length))
        out = F.pad(parts[:, :, 0], (0, 0, 0, self.blocks - 1))
        for j in range(1, self.blocks):
            out = out + F.pad(parts[:, :, j], (0, 0, j, self.blocks - 1 - j))
        return out.flatten(1)  # [B, (T + blocks - 1) * hop]

    def _trim(self, audio: torch.Tensor) -> torch.Tensor:
        return audio[:, self.pad : -self.tail if self.tail else None]  # constants: T stays free

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        audio = self._overlap_add(torch.cat([real, imag], dim=-1) @ self.basis)
        ones = torch.ones_like(real[:1, :, :1])  # [1, T, 1]: the envelope has T frames too
        envelope = self._overlap_add(ones * self.window_sq)
        return self._trim(audio) / self._trim(envelope)


class VocoderGraph(nn.Module):
    """`VocosDecoder` with the export-friendly head: embeddings [B, D, T] -> audio [B, T hop]."""

    def __init__(self, decoder: VocosDecoder) -> None:
        super().__init__()
        self.backbone = decoder.backbone
        self.out = decoder.head.out
        istft = decoder.head.istft
        self.bins = istft.n_fft // 2 + 1
        self.istft = RealISTFT(istft.n_fft, istft.hop_length, istft.window)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        y = self.out(self.backbone(embeddings))  # [B, T, n_fft + 2]: log-magnitude, phase
        magnitude = torch.exp(y[..., : self.bins]).clip(max=MAX_MAGNITUDE)
        phase = y[..., self.bins :]
        return self.istft(magnitude * torch.cos(phase), magnitude * torch.sin(phase))


def _export(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    outputs: dict[str, dict[int, str]],
    input_name: str,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # tracer warnings on the unrolled loop, exporter deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(outputs),
            dynamic_axes={input_name: {0: "batch", 2: "frames"}, **outputs},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    check(path)
    return path


def export_xcodec(
    model: XcodecModel, path: str | Path, codebooks: int = tokens.STAGE2_CODEBOOKS
) -> Path:
    """`model` (fp32, any device) -> `path`, codes [B, `codebooks`, T] -> audio, embeddings."""
    device = next(model.parameters()).device
    example = torch.randint(0, int(model.config.codebook_size), (1, codebooks, EXAMPLE_FRAMES))
    outputs = {AUDIO: {0: "batch", 2: "samples"}, EMBEDDINGS: {0: "batch", 2: "frames"}}
    with torch.no_grad():
        return _export(XcodecDecodeGraph(model), example.to(device), Path(path), outputs, CODES)


def export_vocoder(decoder: VocosDecoder, path: str | Path) -> Path:
    """One track's vocoder (fp32, any device) -> `path`, embeddings [B, D, T] -> audio [B, N]."""
    window = decoder.head.istft.window
    example = torch.randn(1, decoder.config.input_channels, EXAMPLE_FRAMES, device=window.device)
    graph = VocoderGraph(decoder).to(window.device)
    with torch.no_grad():
        return _export(graph, example, Path(path), {AUDIO: {0: "batch", 1: "samples"}}, EMBEDDINGS)


def export_all(
    weights: str | Path, out: str | Path, device: str = "cpu", tracks: Sequence[str] | None = None
) -> dict[str, Path]:
    """X-Codec and the vocoders of `weights` -> `out`: {"xcodec": path, track: path, ...}."""
    from v2bgm.yue.composer import load_decoder

    out = Path(out)
    codec, upsampler = load_decoder(Path(weights), device)
    paths = {"xcodec": export_xcodec(codec.model, out / XCODEC_FILE)}
    for track in tracks or list(upsampler.decoders):
        paths[track] = export_vocoder(upsampler.decoders[track], out / VOCODER_FILES[track])
    return paths


def check(path: str | Path) -> None:
    """`onnx.checker.check_model` with shape inference (`full_check`)."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def session(
    path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on `providers` (in order of preference)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=list(providers))


class OnnxTrackDecoder:
    """One track's decoding under ONNX Runtime, as `YuEComposer.decode_tracks` does it with torch:
    codes [K, T] -> (16 kHz audio [320 T], 44.1 kHz audio [882 T]), float32, unclamped."""

    def __init__(self, xcodec: onnxruntime.InferenceSession, vocoders: Mapping[str, Any]) -> None:
        self.xcodec = xcodec
        self.vocoders = dict(vocoders)

    @classmethod
    def from_folder(
        cls, folder: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> OnnxTrackDecoder:
        folder = Path(folder)
        vocoders = {
            track: session(folder / name, providers)
            for track, name in VOCODER_FILES.items()
            if (folder / name).exists()
        }
        return cls(session(folder / XCODEC_FILE, providers), vocoders)

    def xcodec_decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """codes [K, T] -> (16 kHz audio [N], embeddings [1, D, T])."""
        feed = {CODES: np.ascontiguousarray(np.asarray(codes, dtype=np.int64)[None])}
        audio, embeddings = self.xcodec.run([AUDIO, EMBEDDINGS], feed)
        return audio[0, 0], embeddings

    def vocode(self, embeddings: np.ndarray, track: str = "instrumental") -> np.ndarray:
        """embeddings [B, D, T] -> 44.1 kHz audio [B, N]."""
        feed = {EMBEDDINGS: np.ascontiguousarray(embeddings, dtype=np.float32)}
        return self.vocoders[track].run([AUDIO], feed)[0]

    def __call__(self, codes: np.ndarray, track: str = "instrumental") -> tuple[np.ndarray, ...]:
        low, embeddings = self.xcodec_decode(codes)
        return low, self.vocode(embeddings, track)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=checkpoints.DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, required=True, help="folder for the .onnx files")
    parser.add_argument("--device", default="cpu", help="where the models are traced")
    args = parser.parse_args(argv)
    paths = export_all(args.weights, args.out, args.device)
    sizes = {
        name: f"{path} ({path.stat().st_size / 2**20:.1f} MiB)" for name, path in paths.items()
    }
    print(json.dumps(sizes, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
