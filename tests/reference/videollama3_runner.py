"""DAMO's VideoLLaMA3 remote code on an original-layout checkpoint, run in the scratch venv.

    reference/.venv-vl3/bin/python tests/reference/videollama3_runner.py REQUEST.json

Run by tests/reference/test_videollama3_reference.py, in the environment DAMO's code asks for
(transformers 4.46.3, not this repository's 5.x); it imports nothing from this repository. The
checkpoint folder holds DAMO's `inference/transformers_api/*.py` beside the weights, as their hub
repositories do, and is loaded the way their README loads it: `AutoProcessor` and
`AutoModelForCausalLM` with `trust_remote_code=True`, fp32, on the CPU.

Nothing of their code is changed. What the runner chooses, and why:
- the text model runs with `attn_implementation="sdpa"` (transformers 4.46's own Qwen2 code;
  their README asks for "flash_attention_2", which needs the flash-attn package and a GPU);
- their vision encoder picks its attention class from the same setting. On the CPU it is run with
  each of their three classes in turn, by setting the class of each loaded attention module (the
  weights and the model stay as loaded):
  - `flash`: their `VisionFlashAttention2` (the README's setting), its `flash_attn_varlen_func`
    (flash-attn's kernel, not installable here) bound to `varlen_attention` below, which computes
    what the kernel computes (softmax attention inside each `cu_seqlens` segment, no mask, scale
    1/sqrt(head_dim)) with torch's SDPA, one segment at a time;
  - `sdpa`: their `VisionSdpaAttention` as published -- it calls `self.proj`, which the class does
    not have, and the error is reported; then again with `proj` bound to the module's `out_proj`;
  - `eager`: their `VisionAttention` as published.

The request (JSON): checkpoint, frames (.npy, uint8 [T, H, W, 3]), timestamps, messages (the chat,
one `{"type": "video"}` item standing for the frames), new_tokens, out (.npz), and optionally
native_pixels (.npy: pixel values made by another processor, run through their model too) and
training_processor (their videollama3/model/processor.py, whose chat template is rendered too).
"""

from __future__ import annotations

import ast
import importlib.metadata
import itertools
import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoProcessor

IMAGE_TOKEN = "<image>"  # processing_videollama3.DEFAULT_IMAGE_TOKEN
# Their vision attention classes, in the order run ("sdpa_proj": sdpa with `proj` bound).
VARIANTS = ("sdpa", "sdpa_proj", "flash", "eager")
VERSIONS = ("torch", "torchvision", "transformers", "tokenizers", "numpy", "pillow", "accelerate")


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):
    """flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max, max) as their encoder calls
    it (no dropout, no causal mask, default scale): [total, heads, dim] in and out."""
    assert torch.equal(cu_seqlens_q, cu_seqlens_k)
    out = torch.empty_like(q)
    bounds = cu_seqlens_q.tolist()
    for start, end in itertools.pairwise(bounds):
        qs, ks, vs = (x[start:end].transpose(0, 1) for x in (q, k, v))  # heads, len, dim
        out[start:end] = F.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1)
    return out


def attention_modules(model) -> list:
    return [layer.self_attn for layer in model.get_vision_encoder().encoder.layers]


def use_vision_attention(model, variant: str) -> None:
    """Set every vision attention module's class to their class for `variant`."""
    modules = attention_modules(model)
    encoder_module = sys.modules[type(modules[0]).__module__]  # modeling_videollama3_encoder
    classes = encoder_module.VISION_ATTENTION_CLASSES
    name = {"flash": "flash_attention_2", "sdpa": "sdpa", "sdpa_proj": "sdpa", "eager": "eager"}
    for module in modules:
        module.__class__ = classes[name[variant]]
        if variant == "sdpa_proj":
            module.proj = module.out_proj  # the attribute their forward reads
        elif "proj" in module._modules:
            del module._modules["proj"]
    if variant == "flash":
        encoder_module.flash_attn_varlen_func = varlen_attention


def training_template(path: Path) -> str:
    """DEFAULT_CHAT_TEMPLATE of their training processor (videollama3/model/processor.py), built
    by its own statements (string concatenations) without importing the module."""
    tree = ast.parse(path.read_text())
    keep = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AugAssign)
        and ast.unparse(node.targets[0] if isinstance(node, ast.Assign) else node.target)
        == "DEFAULT_CHAT_TEMPLATE"
    ]
    namespace = {"DEFAULT_IMAGE_TOKEN": IMAGE_TOKEN}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["DEFAULT_CHAT_TEMPLATE"]


def conversation(request: dict, frames: np.ndarray) -> list[dict]:
    """The chat with the frames in their processor's video item (`video`: a list of [C, H, W]
    frames as their load_video returns them, with num_frames and timestamps)."""
    video = {
        "type": "video",
        "video": [frame.transpose(2, 0, 1) for frame in frames],
        "num_frames": len(frames),
        "timestamps": request["timestamps"],
    }
    return [
        {**m, "content": [video if c.get("type") == "video" else c for c in m["content"]]}
        for m in request["messages"]
    ]


def generate(model, inputs: dict, new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Their generate, greedy: the new tokens and each step's logits."""
    out = model.generate(
        **inputs,
        max_new_tokens=new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    logits = torch.stack(out.logits, dim=1)[0]
    return out.sequences[0, -len(out.logits) :].numpy(), logits.float().numpy()


def compressed_ids(model, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """The ids their model feeds its decoder (after token compression) and the keep-mask."""
    pixels, grids, merges = inputs["pixel_values"], inputs["grid_sizes"], inputs["merge_sizes"]
    patches = grids.prod(dim=1).div(merges**2).long()
    mask = model._get_compression_mask(pixels, patches, grids, merges, inputs["modals"])
    features = torch.zeros(int(patches.sum()), 1)
    ids = inputs["input_ids"].view(-1)
    _, ids, *_ = model._compress_visual_tokens(mask, features, ids, None, None, None)
    return ids.numpy(), mask.numpy()


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONS} | {
        "python": sys.version.split()[0]
    }


@torch.inference_mode()
def main(path: str) -> int:
    request = json.loads(Path(path).read_text())
    checkpoint = request["checkpoint"]
    frames = np.load(request["frames"])
    results: dict[str, np.ndarray] = {}
    report: dict = {"versions": versions(), "errors": {}}

    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    model, info = AutoModelForCausalLM.from_pretrained(
        checkpoint,
        trust_remote_code=True,
        torch_dtype=torch.float32,
        attn_implementation="sdpa",
        output_loading_info=True,
    )
    model.eval()
    report["loading"] = {k: sorted(map(str, v)) for k, v in info.items()}
    report["classes"] = {
        "processor": type(processor).__name__,
        "image_processor": type(processor.image_processor).__name__,
        "tokenizer": type(processor.tokenizer).__name__,
        "model": type(model).__name__,
        "vision_attention": type(attention_modules(model)[0]).__name__,
    }

    chat = conversation(request, frames)
    report["prompt"] = processor.apply_chat_template(chat, add_generation_prompt=True)
    if request.get("training_processor"):
        template = training_template(Path(request["training_processor"]))
        report["training_template_prompt"] = processor.apply_chat_template(
            chat, chat_template=template, add_generation_prompt=True
        )
    inputs = dict(processor(conversation=chat, add_generation_prompt=True, return_tensors="pt"))
    report["modals"] = inputs["modals"]
    for key in ("input_ids", "attention_mask", "pixel_values", "grid_sizes", "merge_sizes"):
        results[f"processor.{key}"] = inputs[key].numpy()
    results["compressed_ids"], results["compression_mask"] = compressed_ids(model, inputs)

    sources = {"processor": inputs["pixel_values"]}
    if request.get("native_pixels"):
        sources["native"] = torch.from_numpy(np.load(request["native_pixels"]))
    for source, pixels in sources.items():
        for variant in VARIANTS:
            use_vision_attention(model, variant)
            key = f"{source}.{variant}"
            try:
                results[f"{key}.features"] = model.encode_images(
                    pixels, inputs["grid_sizes"], inputs["merge_sizes"]
                ).numpy()
                results[f"{key}.tokens"], results[f"{key}.logits"] = generate(
                    model, {**inputs, "pixel_values": pixels}, request["new_tokens"]
                )
            except Exception as error:  # reported, not hidden: the test says which one failed
                report["errors"][key] = "".join(traceback.format_exception_only(error)).strip()

    if request.get("unresized_frames"):  # frames already at the processor's target size
        frames = np.load(request["unresized_frames"])
        unresized = processor.process_images([("video", [f.transpose(2, 0, 1) for f in frames])])
        results["unresized.pixel_values"] = np.asarray(unresized["pixel_values"])
        results["unresized.grid_sizes"] = np.asarray(unresized["grid_sizes"])

    np.savez(request["out"], **results)
    Path(request["out"]).with_suffix(".json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
