"""xcodec_mini_infer's X-Codec and 44.1 kHz vocoders, run as YuE's infer.py runs them.

    reference/.venv-xcodec/bin/python tests/reference/xcodec_runner.py REQUEST.json

Run by tests/reference/test_xcodec_reference.py in the scratch venv that holds what their code
imports (torchaudio, omegaconf, descript-audiotools, tensorboard, ...); it imports nothing from
this repository. The request's `root` is laid out as YuE's `inference/` folder is when infer.py
runs (its working directory): `xcodec_mini_infer/final_ckpt/{config.yaml,ckpt_00360000.pth}`,
`xcodec_mini_infer/semantic_ckpts/hf_1_325000/` (HuBERT, loaded by SoundStream's constructor from
that relative path) and `xcodec_mini_infer/decoders/{config.yaml,decoder_131000.pth,
decoder_151000.pth}`. Their code comes from `code` (a copy of xcodec_mini_infer), put on sys.path
as infer.py puts it (`sys.path.append`, then its `descriptaudiocodec/`).

The steps are infer.py's, in its order: SoundStream built from config.yaml's `generator` block
(`eval(name)(**config)`), `torch.load(..., map_location='cpu', weights_only=False)` and
`load_state_dict(parameter_dict['codec_model'])` (strict, as published); each track's codes
through `codec_model.decode` (infer.py's expression) and infer.py's own `save_audio` (taken from
its syntax tree) at 16 kHz; the two 16 kHz tracks summed (the `mix_stem` line); their
`build_codec_model` and `process_audio` per track (instrumental first); the two 44.1 kHz tracks
summed and saved with `save_audio`; their `replace_low_freq_with_energy_matched` on the two mixes
with cutoff 5500. Everything runs in float32 on the CPU.

What the runner changes, and why (nothing else of their code is touched):
- `widths` (tiny checkpoints only): SoundStream's constructor hard-codes three widths that
  config.yaml cannot set (DAC encoder 64, HuBERT/RepCodec 768, DAC decoder 1024). For a tiny
  checkpoint those integer literals, and only those, in `SoundStream.__init__`'s body are
  replaced in its syntax tree before the module is executed; without `widths` the module is
  imported as published.
- `process_audio` hard-codes `f"cuda:{args.cuda_idx}"`. While it runs, a device string starting
  with "cuda" given to `Tensor.to` or `Module.to` is read as "cpu".
- torchaudio 2.9 and later load and save files through torchcodec, which is not installed (it
  needs FFmpeg), and infer.py's files are MP3, a lossy round trip that is not what is compared.
  `torchaudio.save` and `torchaudio.load` are replaced by an in-memory store: `load` gives back
  exactly the float32 tensor `save` was given (the path keys it), and what each save wrote is
  returned too.

The request (JSON): code, infer (YuE's inference/infer.py), root, codes (track -> .npy, int
[8, T], as stage 2 saves them; `vocal` and `instrumental`), widths (optional: {"64": n, "768": n,
"1024": n}), out (.npz; a .json beside it gets the report).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.metadata
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

VERSIONS = (
    "torch", "torchaudio", "transformers", "numpy", "omegaconf", "einops",
    "descript-audiotools", "descript-audio-codec", "scipy",
)  # fmt: skip
SOUNDSTREAM = "models.soundstream_hubert_new"
TRACKS = ("instrumental", "vocal")  # infer.py's loop meets the itrack first (stage-2 order)
CUTOFF_HZ = 5500.0  # infer.py's replace_low_freq_with_energy_matched(..., cutoff_freq=5500.0)


class AudioFiles:
    """torchaudio.save/load as an in-memory store (see the module docstring)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[torch.Tensor, int]] = {}

    def save(self, uri, src, sample_rate, **kwargs) -> None:
        self.files[str(uri)] = (src.detach().to(torch.float32).clone(), int(sample_rate))

    def load(self, uri, **kwargs) -> tuple[torch.Tensor, int]:
        wave, rate = self.files[str(uri)]
        return wave.clone(), rate


@contextlib.contextmanager
def cuda_as_cpu():
    """`Tensor.to("cuda:N")` and `Module.to("cuda:N")` go to the CPU while this is open."""
    tensor_to, module_to = torch.Tensor.to, torch.nn.Module.to

    def cpu(args):
        return tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)

    torch.Tensor.to = lambda self, *a, **k: tensor_to(self, *cpu(a), **k)
    torch.nn.Module.to = lambda self, *a, **k: module_to(self, *cpu(a), **k)
    try:
        yield
    finally:
        torch.Tensor.to, torch.nn.Module.to = tensor_to, module_to


class Widths(ast.NodeTransformer):
    """Replace the given integer literals; counts what it replaced."""

    def __init__(self, widths: dict[int, int]) -> None:
        self.widths = widths
        self.replaced: dict[int, int] = dict.fromkeys(widths, 0)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) is int and node.value in self.widths:
            self.replaced[node.value] += 1
            return ast.copy_location(ast.Constant(self.widths[node.value]), node)
        return node


def import_soundstream(code: Path, widths: dict[int, int] | None) -> tuple[type, dict]:
    """Their SoundStream class: imported as published, or with the hard-coded widths replaced in
    the body of its `__init__` (returns what was replaced)."""
    if not widths:
        return importlib.import_module(SOUNDSTREAM).SoundStream, {}
    path = code / "models" / "soundstream_hubert_new.py"
    tree = ast.parse(path.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SoundStream"]
    (init,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    widths_pass = Widths(widths)
    init.body = [widths_pass.visit(statement) for statement in init.body]
    importlib.import_module("models")  # the package, as a plain import makes it
    module = types.ModuleType(SOUNDSTREAM)
    module.__file__ = str(path)
    sys.modules[SOUNDSTREAM] = module
    exec(compile(ast.fix_missing_locations(tree), str(path), "exec"), module.__dict__)
    return module.SoundStream, widths_pass.replaced


def script_function(path: Path, name: str, namespace: dict):
    """A top-level function of a script, defined in `namespace` (infer.py loads models at
    import, so it is not imported)."""
    tree = ast.parse(path.read_text())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if len(keep) != 1:
        raise LookupError(f"{path} has {len(keep)} functions named {name}")
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def run(request: dict) -> tuple[dict[str, np.ndarray], dict]:
    code, root = Path(request["code"]), Path(request["root"])
    os.chdir(root)  # infer.py runs from YuE's inference/ folder
    sys.path.append(str(code))  # infer.py's two sys.path.append lines
    sys.path.append(str(code / "descriptaudiocodec"))
    import torchaudio
    from omegaconf import OmegaConf

    files = AudioFiles()
    torchaudio.save, torchaudio.load = files.save, files.load
    widths = {int(k): int(v) for k, v in (request.get("widths") or {}).items()}
    SoundStream, replaced = import_soundstream(code, widths)
    from post_process_audio import replace_low_freq_with_energy_matched
    from vocoder import build_codec_model, process_audio

    save_audio = script_function(
        Path(request["infer"]), "save_audio", {"os": os, "torch": torch, "torchaudio": torchaudio}
    )
    report: dict = {"versions": versions(), "widths_replaced": replaced}
    arrays: dict[str, np.ndarray] = {}
    device = torch.device("cpu")

    # infer.py: model_config = OmegaConf.load(args.basic_model_config) ... codec_model.eval()
    model_config = OmegaConf.load("./xcodec_mini_infer/final_ckpt/config.yaml")
    codec_model = eval(model_config.generator.name, {"SoundStream": SoundStream})(
        **model_config.generator.config
    ).to(device)
    parameter_dict = torch.load(
        "./xcodec_mini_infer/final_ckpt/ckpt_00360000.pth", map_location="cpu", weights_only=False
    )
    loaded = codec_model.load_state_dict(parameter_dict["codec_model"])
    report["load_state_dict"] = {
        "missing": loaded.missing_keys,
        "unexpected": loaded.unexpected_keys,
    }
    report["parameters"] = sum(p.numel() for p in codec_model.parameters())
    codec_model.to(device)
    codec_model.eval()

    # reconstruct tracks (16 kHz)
    recons = {}
    for track in TRACKS:
        codec_result = np.load(request["codes"][track])
        with torch.no_grad():
            decoded_waveform = codec_model.decode(
                torch.as_tensor(codec_result.astype(np.int16), dtype=torch.long)
                .unsqueeze(0)
                .permute(1, 0, 2)
                .to(device)
            )
        decoded_waveform = decoded_waveform.cpu().squeeze(0)
        recons[track] = f"recons/{track}.mp3"
        save_audio(decoded_waveform, recons[track], 16000)
        arrays[f"xcodec_{track}"] = decoded_waveform.numpy()
        arrays[f"recons_{track}"] = files.files[recons[track]][0].numpy()
        with torch.no_grad():  # the vocoder's input, as process_audio computes it
            codes = torch.as_tensor(codec_result.astype(np.int16), dtype=torch.long).unsqueeze(1)
            arrays[f"embed_{track}"] = codec_model.get_embed(codes).numpy()
    # mix tracks: mix_stem = (vocal_stem + instrumental_stem) / 1
    vocal_stem, sr = torchaudio.load(recons["vocal"])
    instrumental_stem, _ = torchaudio.load(recons["instrumental"])
    recons_mix = "recons/mix/mixed.mp3"
    torchaudio.save(recons_mix, (vocal_stem + instrumental_stem) / 1, sr)
    arrays["recons_mix"] = files.files[recons_mix][0].numpy()

    # vocoder to upsample audios
    d = "./xcodec_mini_infer/decoders"
    vocal_decoder, inst_decoder = build_codec_model(
        f"{d}/config.yaml", f"{d}/decoder_131000.pth", f"{d}/decoder_151000.pth"
    )
    args = types.SimpleNamespace(cuda_idx=0)
    outputs = {}
    decoders = {"instrumental": inst_decoder, "vocal": vocal_decoder}
    stems = {"instrumental": "itrack.mp3", "vocal": "vtrack.mp3"}
    with cuda_as_cpu():
        for track in TRACKS:
            outputs[track] = process_audio(
                request["codes"][track],
                os.path.join("vocoder/stems", stems[track]),
                False,
                args,
                decoders[track],
                codec_model,
            )
            arrays[f"vocoder_{track}"] = outputs[track].numpy()
    mix_output = outputs["instrumental"] + outputs["vocal"]
    vocoder_mix = "vocoder/mix/mixed.mp3"
    save_audio(mix_output, vocoder_mix, 44100, False)
    arrays["vocoder_mix"] = files.files[vocoder_mix][0].numpy()

    # Post process
    final = "mixed.mp3"
    replace_low_freq_with_energy_matched(
        a_file=recons_mix, b_file=vocoder_mix, c_file=final, cutoff_freq=CUTOFF_HZ
    )
    arrays["final"] = files.files[final][0].numpy()
    report["final_rate"] = files.files[final][1]
    return arrays, report


if __name__ == "__main__":
    from scratch_main import main  # beside this file, which runs as a script

    sys.exit(main(run, sys.argv))
