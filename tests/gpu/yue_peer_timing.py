"""Timers around YuE's infer.py, installed by tests/reference/yue_infer_runner.py before the script
runs (the request's `instrument`, set by tests/gpu/yue_peer.py). Observers only: each wrapped
function is called with the same arguments and its result returned unchanged; around it, a
`torch.cuda.synchronize()` (their script already waits on the GPU after each `generate`: its
stopping criteria and `.item()` read results back) and a clock.

What is timed (seconds since the runner started, and durations):
- `from_pretrained` of each language model (stage 1, then stage 2 after stage 1's offload);
- every `generate` call, by model (stage 1: their segment loop; stage 2: their per-frame loop);
- SoundStream's `decode` (the 16-kHz reconstruction), the vocoders' build (`build_codec_model`,
  which loads their weights) and `process_audio` (X-Codec embeddings + vocoder per track);
- the end of the script (the runner's `script_end_s`).
Also, for the list of what their code needs: every module loaded from outside the standard
library, torch and this repository, with its file.
"""

from __future__ import annotations

import functools
import sys
import time

import torch

START = time.perf_counter()


def now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - START


def install(report: dict):
    events: list[dict] = []
    report["peer_events"] = events

    def timed(kind: str, fn, label=None):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            begin = now()
            try:
                return fn(*args, **kwargs)
            finally:
                event = {"kind": kind, "start_s": round(begin, 4), "s": round(now() - begin, 4)}
                if label is not None:
                    event["what"] = label(args, kwargs)
                events.append(event)

        return wrapper

    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.generation.utils import GenerationMixin

    def model_name(args, kwargs):
        model = args[0]
        ids = kwargs.get("input_ids")
        return {
            "model": str(getattr(model.config, "_name_or_path", "")),
            "layers": model.config.num_hidden_layers,
            "batch": int(ids.shape[0]) if ids is not None else None,
            "input_tokens": int(ids.shape[-1]) if ids is not None else None,
        }

    GenerationMixin.generate = timed("generate", GenerationMixin.generate, model_name)
    from_pretrained = AutoModelForCausalLM.from_pretrained.__func__
    AutoModelForCausalLM.from_pretrained = classmethod(
        timed("from_pretrained", from_pretrained, lambda a, k: str(a[1]))
    )

    # their X-Codec and vocoder modules (xcodec_mini_infer is on sys.path: the runner put it)
    import vocoder
    from models.soundstream_hubert_new import SoundStream

    SoundStream.decode = timed("xcodec_decode", SoundStream.decode)
    vocoder.build_codec_model = timed("vocoder_build", vocoder.build_codec_model)
    vocoder.process_audio = timed("process_audio", vocoder.process_audio)
    report["transformers_version"] = transformers.__version__

    def finish(report: dict) -> None:
        report["peer_end_s"] = round(now(), 4)  # the script has ended
        report["peer_modules"] = third_party_modules()

    return finish


def third_party_modules() -> dict[str, str]:
    """Top-level modules loaded from a site-packages folder (what their code's run imported)."""
    found: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if "." in name or "site-packages" not in path:
            continue
        found[name] = path
    return dict(sorted(found.items()))
