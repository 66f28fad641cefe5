"""YuE's `inference/infer.py` run as the script it is, with the fewest changes a CPU needs.

    reference/.venv-xcodec/bin/python tests/reference/yue_infer_runner.py REQUEST.json

Run by tests/reference/test_yue_infer_reference.py in the X-Codec judge's scratch venv (infer.py
imports torchaudio, omegaconf, soundfile and xcodec_mini_infer at its top); it imports nothing of
this repository but its sibling `xcodec_runner.py`. The request's `root` is laid out as YuE's
`inference/` folder: `infer.py`, `codecmanipulator.py`, `mmtokenizer.py`, `mm_tokenizer_v0.2_hf/`
(links to YuE's clone) and `xcodec_mini_infer/` (links to xcodec_mini_infer's code, our tiny
X-Codec, HuBERT and vocoder files in its `final_ckpt/`, `semantic_ckpts/` and `decoders/`).

The script runs as `python infer.py ARGS` runs it: its folder first on sys.path and as the working
directory, `sys.argv` its arguments (the request's `argv`), `__name__` "__main__", `__file__` its
path, its whole source compiled under its own file name, after `TRANSFORMATIONS` (below: exact
string replacements, each must match exactly once; each says why). Nothing else of its source
changes. Around it, and only there:
- its device: none needed. Line 82 takes "cpu" when CUDA is not available (the test also sets
  CUDA_VISIBLE_DEVICES=""). `torch.compile(model)` stays: the compiled module's `.generate` is
  the plain module's, so no compiled code runs.
- SoundStream's three hard-coded widths (tiny checkpoints only, the request's `widths`): its
  module is registered with those literals replaced, as `xcodec_runner.py` does.
- torchaudio.save/load and soundfile.read/write write and read lossless files under the names
  infer.py gives (`LosslessFiles`): torchaudio 2.9+ saves through torchcodec, not installed.
- `Tensor.to`/`Module.to` read a "cuda..." device as the CPU (`process_audio` hard-codes
  `cuda:{args.cuda_idx}`).
- an observer: every array `CodecManipulator.ids2npy` returns is kept (stage 2's codes before
  infer.py's "fix invalid codes" are seen nowhere else). It returns the same array.
An exception of the script ends it as it would end `python infer.py`; the runner reports it (type,
message, the script's lines in its traceback) with what the script had made: `raw_output` (stage
1's whole sequence), the `.npy` files it saved, the audio it wrote.

The request (JSON): root, argv, widths (optional), out (.npz; a .json beside it gets the report);
optional, for tests/gpu/yue_peer.py: transformations (a list of {name, old, new, why}, in place of
`TRANSFORMATIONS`), cuda_as_cpu (default true), instrument (a file whose `install(report)` sets
observers up before the script and may return a function called with the report after it).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib.util
import io
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# infer.py of YuE v1 (multimodal-art-projection/YuE, commit 9f1394b): the file transformed.
INFER_BLOB = "d8f2b2115284d8330d6ffedf2ee29c9552b0d208"


# What the judge and the peer (tests/gpu/yue_peer.py) give infer.py: its --genre_txt and
# --lyrics_txt (three sections: it runs min(run_n_segments + 1, sections) segments).
GENRES = "inspiring female uplifting pop airy vocal electronic bright vocal"
LYRICS = """[verse]
Lights on the water, the harbour asleep

[chorus]
We run, we run

[outro]
fade
"""


@dataclass(frozen=True)
class Transformation:
    name: str
    old: str
    new: str
    why: str


TRANSFORMATIONS = (
    Transformation(
        "fp32: stage 1",
        "    stage1_model, \n    torch_dtype=torch.bfloat16,\n",
        "    stage1_model, \n    torch_dtype=torch.float32,\n",
        "bf16 rounds every matmul: the judge compares exact greedy tokens in fp32",
    ),
    Transformation(
        "fp32: stage 2",
        "    stage2_model, \n    torch_dtype=torch.bfloat16,\n",
        "    stage2_model, \n    torch_dtype=torch.float32,\n",
        "as stage 1",
    ),
    Transformation(
        "sdpa: stage 1",
        'attn_implementation="flash_attention_2", # To enable flashattn',
        'attn_implementation="sdpa", # To enable flashattn',
        "flash-attn is a CUDA-only package. SDPA, transformers' default (and what the parity "
        "tests' models use), runs PyTorch's CPU flash-attention kernel: the same blockwise "
        "causal softmax(QK^T/sqrt(d))V as flash_attention_2, here without padding (batch 1). "
        "Eager would materialise the scores: the same function, other rounding",
    ),
    Transformation(
        "sdpa: stage 2",
        '    torch_dtype=torch.float32,\n    attn_implementation="flash_attention_2",\n',
        '    torch_dtype=torch.float32,\n    attn_implementation="sdpa",\n',
        "as stage 1 (matches only after 'fp32: stage 2')",
    ),
    Transformation(
        "greedy: stage 1",
        "            do_sample=True, \n",
        "            do_sample=False, \n",
        "sampled tokens cannot be compared: theirs come from torch's global generator in "
        "transformers' order of draws, ours from per-request seeded noise; greedy is "
        "deterministic. Every other argument stays (CFG, repetition penalty, the logits "
        "processors, min/max new tokens, <EOA> as end; top_p and temperature are then unused, "
        "as transformers warns)",
    ),
)


def transform(source: str, transformations: tuple[Transformation, ...] = TRANSFORMATIONS) -> str:
    for t in transformations:
        if source.count(t.old) != 1:
            raise ValueError(f"{t.name}: {t.old!r} occurs {source.count(t.old)} times, not once")
        source = source.replace(t.old, t.new)
    return source


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LosslessFiles:
    """torchaudio.save/load and soundfile.read/write as lossless files: what is saved is what
    is loaded (float32, channels first), under the path infer.py names (an .mp3 name holds
    numpy's format). torchaudio 2.9+ saves through torchcodec (not installed: it needs FFmpeg)
    and MP3 is lossy; infer.py's own `os.path.exists` and paths still see real files."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[np.ndarray, int]] = {}

    def _write(self, path, wave: np.ndarray, rate: int) -> None:
        wave = np.asarray(wave, dtype=np.float32)
        with open(path, "wb") as f:
            np.savez(f, wave=wave, rate=rate)
        self.saved[os.path.relpath(os.path.abspath(path))] = (wave, int(rate))

    def _read(self, path) -> tuple[np.ndarray, int]:
        with np.load(path) as f:
            return f["wave"], int(f["rate"])

    def save(self, uri, src, sample_rate, **kwargs) -> None:  # torchaudio.save
        self._write(uri, src.detach().cpu().numpy(), sample_rate)

    def load(self, uri, **kwargs) -> tuple[torch.Tensor, int]:  # torchaudio.load
        wave, rate = self._read(uri)
        return torch.from_numpy(wave), rate

    def sf_read(self, file, **kwargs) -> tuple[np.ndarray, int]:  # soundfile.read
        wave, rate = self._read(file)  # frames first, float64, 1-D when mono: soundfile's way
        wave = wave.T.astype(np.float64)
        return (wave[:, 0] if wave.shape[1] == 1 else wave), rate

    def sf_write(self, file, data, samplerate, **kwargs) -> None:  # soundfile.write
        data = np.asarray(data)
        self._write(file, data[None] if data.ndim == 1 else data.T, samplerate)


def run(request: dict) -> tuple[dict[str, np.ndarray], dict]:
    start = time.perf_counter()
    root = Path(request["root"])
    infer = root / "infer.py"
    source = infer.read_bytes()
    report: dict = {"infer_blob": git_blob(source), "argv": request["argv"]}
    if report["infer_blob"] != INFER_BLOB:
        raise ValueError(f"{infer} is not YuE's 9f1394b infer.py (blob {report['infer_blob']})")
    # the request may name its own list (tests/gpu/yue_peer.py: bf16, sampling and CUDA kept)
    chosen = tuple(Transformation(**t) for t in request.get("transformations") or ())
    chosen = chosen or TRANSFORMATIONS
    transformed = transform(source.decode(), chosen)
    report["transformations"] = [t.name for t in chosen]

    import soundfile
    import torchaudio
    import xcodec_runner  # sibling helpers: SoundStream's tiny widths, cuda-as-cpu, versions

    sys.path[0] = str(root)  # `python infer.py`: the script's folder first
    os.chdir(root)
    files = LosslessFiles()
    torchaudio.save, torchaudio.load = files.save, files.load
    soundfile.read, soundfile.write = files.sf_read, files.sf_write
    # infer.py's two sys.path.append lines, run ahead of it so that SoundStream's module can be
    # registered with the tiny widths (xcodec_runner.import_soundstream); it appends them again
    sys.path.append(str(root / "xcodec_mini_infer"))
    sys.path.append(str(root / "xcodec_mini_infer" / "descriptaudiocodec"))
    widths = {int(k): int(v) for k, v in (request.get("widths") or {}).items()}
    _, report["widths_replaced"] = xcodec_runner.import_soundstream(
        root / "xcodec_mini_infer", widths
    )
    report["versions"] = xcodec_runner.versions()
    report["cuda_available"] = torch.cuda.is_available()

    # an observer, not a change: every array their codectools' `ids2npy` returns is kept (stage
    # 2's codes before infer.py's "fix invalid codes" are seen nowhere else)
    import codecmanipulator

    parsed: list[np.ndarray] = []
    ids2npy = codecmanipulator.CodecManipulator.ids2npy

    def observed_ids2npy(self, token_ids):
        data = ids2npy(self, token_ids)
        parsed.append(np.array(data))
        report.setdefault("ids2npy_s", []).append(round(time.perf_counter() - start, 2))
        return data

    codecmanipulator.CodecManipulator.ids2npy = observed_ids2npy
    # optional observers from a file the request names (`install(report)`: timers around their
    # calls; tests/gpu/yue_peer_timing.py); none by default
    finish = None
    if request.get("instrument"):
        spec = importlib.util.spec_from_file_location("instrument", request["instrument"])
        instrument = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(instrument)
        finish = instrument.install(report)

    sys.argv = ["infer.py", *request["argv"]]
    namespace = {"__name__": "__main__", "__file__": str(infer), "__builtins__": builtins}
    out = io.StringIO()
    report["script_start_s"] = round(time.perf_counter() - start, 2)
    try:
        # "cuda" read as the CPU unless the request runs on CUDA (`"cuda_as_cpu": false`)
        on_cpu = xcodec_runner.cuda_as_cpu() if request.get("cuda_as_cpu", True) else None
        with on_cpu or contextlib.nullcontext(), contextlib.redirect_stdout(out):
            exec(compile(transformed, str(infer), "exec"), namespace)
        report["error"] = None
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        report["error"] = {
            "type": type(exc).__name__,
            "message": str(exc),
            # the script's own frames, outermost first
            "infer_lines": [f.lineno for f in frames if f.filename == str(infer)],
            "traceback": traceback.format_exc()[-3000:],
        }
    report["script_end_s"] = round(time.perf_counter() - start, 2)
    if finish is not None:
        finish(report)
    report["stdout"] = out.getvalue()

    arrays: dict[str, np.ndarray] = {}
    if namespace.get("raw_output") is not None:  # stage 1's whole sequence
        arrays["stage1_ids"] = namespace["raw_output"][0].cpu().numpy()
    for key in ("stage1_output_set", "stage2_result"):
        for path in namespace.get(key) or []:
            track = "vocal" if "_vtrack" in path else "instrumental"
            arrays[f"{key.split('_')[0]}_{track}"] = np.load(path)
            report.setdefault("files", []).append(os.path.relpath(path))
    for i, data in enumerate(parsed):
        arrays[f"ids2npy:{i:03d}"] = data
    for path, (wave, rate) in files.saved.items():
        arrays[f"audio:{path}"] = wave
        report.setdefault("audio_rates", {})[path] = rate
    return arrays, report


if __name__ == "__main__":
    from scratch_main import main  # beside this file, which runs as a script

    sys.exit(main(run, sys.argv))
