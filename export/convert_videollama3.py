"""Convert DAMO-NLP-SG's remote-code VideoLLaMA3 checkpoints to `transformers`' `video_llama_3`.

    huggingface-cli download DAMO-NLP-SG/VideoLLaMA3-7B --local-dir dl/VideoLLaMA3-7B
    python -m export.convert_videollama3 --src dl/VideoLLaMA3-7B --out WEIGHTS/videollama3

`transformers` (5.24) ships no converter for this model: the wheel's models/video_llama_3/ has no
convert_*.py, and neither has the repository (src/transformers/models/video_llama_3/) nor its docs;
the native checkpoints (lkhl/VideoLLaMA3-2B-Image-HF) were uploaded without one. DAMO's own
scripts/convert_hf_checkpoint.py goes the other way (hub layout -> their training layout).

The hub checkpoints (`videollama3_qwen2`, `trust_remote_code`) run DAMO's
inference/transformers_api/modeling_videollama3{,_encoder}.py; the same network exists natively as
`VideoLlama3ForConditionalGeneration`. What changes, and why:

Weights (`KEY_RENAMES`): names only, no reshapes -- every tensor keeps its shape and dtype.
- `model.vision_encoder.*` (Videollama3VisionEncoderModel: embeddings.patch_embedding Conv2d,
  encoder.layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1/2, mlp.fc1/fc2}, post_layernorm)
  -> `model.vision_model.*`, same sub-names;
- `model.mm_projector.readout.{0,2}` (mlp2x_gelu: Linear, GELU, Linear)
  -> `model.projector.readout.{0,2}`;
- the Qwen2 decoder, `model.{embed_tokens,layers,norm}` -> `model.language_model.*`;
- `lm_head.weight` stays; when the embeddings are tied (the 2B) it may be absent, as both loaders
  tie it to the input embeddings.

Config (`native_config`): DAMO's config is a Qwen2Config with extra fields.
- the Qwen2 fields -> `text_config` (model_type qwen2; `rope_theta` becomes `rope_parameters`);
  `use_cache` is dropped (DAMO saved it off from training; generation turns it on);
- `vision_encoder_config` -> `vision_config` (same field names; missing fields take DAMO's
  Videollama3VisionEncoderConfig defaults, written out in `ORIGINAL_VISION_DEFAULTS`); the vision
  RoPE theta is 10000 in both (DAMO hard-codes it, the native default is 10000);
- `mm_projector_type` must be `mlp2x_gelu`: the native projector has no other form;
- `image_token_index` (151665, `<image>`) is not carried over: the native model takes
  `image_token_id`/`video_token_id` = the ids of `<|image_pad|>`/`<|video_pad|>` (151655/151656 in
  Qwen2.5's vocabulary, which DAMO's tokenizer keeps). Which embedding row a placeholder has does
  not matter: both models overwrite placeholder embeddings with vision features;
- `use_token_compression` -> the video processor's `use_token_compression` (below);
- `tie_word_embeddings` -> top level and `text_config`; `torch_dtype` -> `dtype`.

Tokenizer: DAMO's is Qwen2.5's plus `<image>`, `<|stream_start|>`, `<|stream_end|>`
(videollama3/train.py). It is kept as is -- ids unchanged, `<image>` stays in the vocabulary but
nothing emits it any more -- `<|image_pad|>`/`<|video_pad|>` are added if missing (they must fit in
the embedding table), and the tokenizer names them its `image_token`/`video_token`.

Chat template: the native one (`NATIVE_CHAT_TEMPLATE`, lkhl/VideoLLaMA3-2B-Image-HF's
chat_template.jinja): media become one `<|image_pad|>`/`<|video_pad|>` each. DAMO's template wrote
`Time t.ts:<image>` per frame itself; natively `VideoLlama3Processor` expands a `<|video_pad|>` into
`Time {t:.1f}s:` + that frame's pads, frames joined by ",", the same text DAMO's template and
processor produce (jinja `round(1)|string` and `{:.1f}` agree below 1e16 s).

Processors (DAMO: one Videollama3ImageProcessor for images and frames, budgets in tokens, plus
processor_config.json's fps/max_frames/merge sizes):
- images: merge `image_merge_size` (1); pixels = tokens * (patch * merge)^2, so min 16 / max 16384
  tokens -> 3136 / 3211264 pixels;
- video: merge `video_merge_size` (2); 16 / 16384 tokens -> 12544 / 12845056 pixels for the whole
  clip (DAMO divides the budget by the frame count, so does the native video processor);
- mean/std/resample/rescale copied (DAMO: 0.5, bicubic, 1/255);
- fps 1 and at most 180 frames (`VIDEO_FPS`, `VIDEO_MAX_FRAMES`): DAMO's README, example script and
  demo pass these; its processor_config.json says max_frames 128 (the class default), which the
  README overrides. `do_sample_frames` stays off, so frames a caller samples itself (the server
  sends frames sampled by the client, with their timestamps) are used as given; callers that pass
  a path opt in with `do_sample_frames=True` (or `fps=` in apply_chat_template) and get 1 fps.

Not exactly the same (documented, not fixable by a converter):
- token compression: DAMO computes the keep-mask inside the model from pixel_values and then drops
  the masked `<image>` ids from input_ids; natively the video processor computes the same mask
  (same rule: mean |frame diff| * 255 > 0.1, >= 1 token per frame) and never inserts the dropped
  pads. The sequences the decoder sees are equal; DAMO's only works with batch size 1;
- frame sampling: DAMO decodes with ffmpeg's fps filter (round down) and subsamples uniformly to
  max_frames, timestamps from the stream start; the native video processor picks
  `arange(0, n, n / k)` indices and stamps `index / fps`. Frames/timestamps can differ by a frame;
- DAMO's image budget is shared by all images of one processor call; natively it is per image;
- resizing: DAMO resizes with PIL. `VideoLlama3ImageProcessorPil` reproduces its image pixels
  exactly, but the saved processor loads the default torchvision backend (mean difference 0.4/255
  per pixel); the video processor (torchvision only) differs by < 0.01/255 on average, at most 2/255
  (random frames; grids and token counts identical);
- DAMO's eager vision attention adds its boolean block mask (+1 inside a frame, 0 across) instead
  of masking; its flash-attention path (the documented setting) attends within each frame, which
  is what the native model does in every attention implementation.

Checked against DAMO's own code by tests/reference/test_videollama3_reference.py (their
inference/transformers_api/ under transformers 4.46.3, in a venv of its own; it skips without
them): their processor and model load a tiny checkpoint in the original layout and give the
converted native model's 16 greedy tokens, with logits within 2.7e-7 when both see the same pixels,
and the same token layout after compression (src/v2bgm/videollama3/NOTES.md). Earlier, once
outside the tests under transformers 5.24, their encoder gave the native vision model's output to
2e-7 for an image (merge 1) too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2Tokenizer,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

from export.videollama3_tokenizer import CHAT_TEMPLATE as NATIVE_CHAT_TEMPLATE
from export.videollama3_tokenizer import IMAGE_PAD, VIDEO_PAD

log = logging.getLogger(__name__)

ORIGINAL_MODEL_TYPE = "videollama3_qwen2"
ORIGINAL_IMAGE_TOKEN = "<image>"  # processing_videollama3.py: DEFAULT_IMAGE_TOKEN
SUPPORTED_PROJECTOR = "mlp2x_gelu"  # = VideoLlama3Projector (Linear, GELU, Linear)
NATIVE_ARCHITECTURE = "VideoLlama3ForConditionalGeneration"

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"  # DAMO's Videollama3ImageProcessor settings
PROCESSOR_FILE = "processor_config.json"  # DAMO's Videollama3Qwen2Processor settings
SAFETENSORS_METADATA = {"format": "pt"}  # what `save_pretrained` writes; loaders check it

# (original prefix, native prefix), first match wins: the bare "model." (the Qwen2 decoder) last.
KEY_RENAMES: tuple[tuple[str, str], ...] = (
    ("model.vision_encoder.", "model.vision_model."),
    ("model.mm_projector.", "model.projector."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)
TIED_KEY = "lm_head.weight"

# Videollama3Qwen2Config's own fields (configuration_videollama3.py), mapped one by one below.
VIDEOLLAMA3_FIELDS = frozenset(
    {
        "vision_encoder",
        "vision_encoder_config",
        "mm_projector_type",
        "use_token_compression",
        "image_token_index",
    }
)
# Qwen2 fields in DAMO's config that the text config does not take.
DROPPED_TEXT_FIELDS = frozenset({"use_cache", "architectures", "transformers_version"})
# Pre-v5 spellings that Qwen2Config still converts (rope_theta/rope_scaling -> rope_parameters).
LEGACY_TEXT_FIELDS = frozenset({"rope_theta", "rope_scaling", "torch_dtype"})
# Videollama3VisionEncoderConfig.__init__ defaults (configuration_videollama3_encoder.py).
ORIGINAL_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}
ORIGINAL_DTYPE = "bfloat16"  # DAMO's checkpoints and their `torch_dtype`

# Videollama3ImageProcessor.__init__ and Videollama3Qwen2Processor.__init__ defaults.
ORIGINAL_MIN_TOKENS = 16
ORIGINAL_MAX_TOKENS = 16384
ORIGINAL_PATCH_SIZE = 14
ORIGINAL_IMAGE_MERGE_SIZE = 1
ORIGINAL_VIDEO_MERGE_SIZE = 2
ORIGINAL_USE_TOKEN_COMPRESSION = True
IMAGE_PROCESSOR_FIELDS = (  # copied as is when present
    "do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize",
    "image_mean", "image_std", "do_convert_rgb",
)  # fmt: skip
# DAMO's inference defaults for video (README, inference/example_videollama3.py, the gradio demo).
VIDEO_FPS = 1.0
VIDEO_MAX_FRAMES = 180
# Keep caller-sampled frames as given (see the module docstring).
VIDEO_DO_SAMPLE_FRAMES = False

MEDIA_TOKENS = {"image_token": IMAGE_PAD, "video_token": VIDEO_PAD}
# Written by DAMO's processor into tokenizer_config.json; they would point loaders at remote code.
REMOTE_CODE_TOKENIZER_FIELDS = ("auto_map", "processor_class")


# --- weights -------------------------------------------------------------------------------------


def native_key(original: str) -> str:
    for old, new in KEY_RENAMES:
        if original.startswith(old):
            return new + original[len(old) :]
    raise KeyError(f"not a VideoLLaMA3 ({ORIGINAL_MODEL_TYPE}) parameter: {original}")


def original_key(native: str) -> str:
    """The inverse of `native_key` (the specific prefixes are tried before the bare "model.")."""
    for old, new in KEY_RENAMES:
        if native.startswith(new):
            return old + native[len(new) :]
    raise KeyError(f"not a video_llama_3 parameter: {native}")


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {native_key(k): v for k, v in state.items()}


def to_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {original_key(k): v for k, v in state.items()}


def weight_files(folder: Path) -> list[str]:
    """The safetensors files of a checkpoint, sharded (with an index) or single."""
    index = folder / WEIGHTS_INDEX_FILE
    if index.is_file():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    if (folder / WEIGHTS_FILE).is_file():
        return [WEIGHTS_FILE]
    raise FileNotFoundError(f"{folder} has neither {WEIGHTS_INDEX_FILE} nor {WEIGHTS_FILE}")


def convert_weights(src: Path, out: Path) -> dict[str, tuple[int, ...]]:
    """Rename every tensor, one shard at a time (memory: the largest shard), keeping the shard
    files and their names; returns each native key's shape."""
    files = weight_files(src)
    weight_map: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    total_size = 0
    for name in files:
        state = convert_state_dict(load_file(src / name))
        save_file(state, out / name, metadata=SAFETENSORS_METADATA)
        for key, tensor in state.items():
            weight_map[key] = name
            shapes[key] = tuple(tensor.shape)
            total_size += tensor.numel() * tensor.element_size()
        log.info("%s: %d tensors", name, len(state))
    if (src / WEIGHTS_INDEX_FILE).is_file():
        index = {
            "metadata": {"total_size": total_size},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (out / WEIGHTS_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return shapes


def expected_shapes(config: VideoLlama3Config) -> dict[str, tuple[int, ...]]:
    """The native model's parameters, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = VideoLlama3ForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weights(config: VideoLlama3Config, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Every native parameter present with its shape, nothing else (lm_head may be tied)."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(shapes))
    if config.tie_word_embeddings and TIED_KEY in missing:
        missing.remove(TIED_KEY)
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])
    if missing or unexpected or wrong:
        details = [f"{k}: {shapes[k]} != {expected[k]}" for k in wrong[:10]]
        raise ValueError(
            f"converted weights do not fit the native model: missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}, wrong shapes {details}"
        )


# --- config --------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def check_original_config(original: Mapping[str, Any]) -> None:
    model_type = original.get("model_type")
    if model_type != ORIGINAL_MODEL_TYPE:
        raise ValueError(
            f"expected a {ORIGINAL_MODEL_TYPE} config.json, got model_type {model_type}"
        )
    projector = original.get("mm_projector_type", SUPPORTED_PROJECTOR)
    if projector != SUPPORTED_PROJECTOR:
        raise ValueError(
            f"mm_projector_type {projector!r} has no native counterpart "
            f"(only {SUPPORTED_PROJECTOR})"
        )
    if not original.get("vision_encoder_config"):
        # The training layout names a separate encoder checkpoint (`vision_encoder`) instead.
        raise ValueError(
            "config.json has no vision_encoder_config: not a hub (inference) checkpoint"
        )


def text_config(original: Mapping[str, Any]) -> Qwen2Config:
    accepted = set(Qwen2Config.__dataclass_fields__) | LEGACY_TEXT_FIELDS
    fields = {
        k: v
        for k, v in original.items()
        if k in accepted and k not in DROPPED_TEXT_FIELDS | VIDEOLLAMA3_FIELDS
    }
    ignored = sorted(set(original) - set(fields) - VIDEOLLAMA3_FIELDS - {"model_type", "auto_map"})
    if ignored:
        log.info("config.json fields not carried over: %s", ", ".join(ignored))
    if "dtype" not in fields:
        fields.setdefault("torch_dtype", ORIGINAL_DTYPE)
    return Qwen2Config(**fields)


def vision_config(original: Mapping[str, Any]) -> dict[str, Any]:
    encoder = original["vision_encoder_config"]
    return {k: encoder.get(k, default) for k, default in ORIGINAL_VISION_DEFAULTS.items()}


def native_config(
    original: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
) -> VideoLlama3Config:
    check_original_config(original)
    text = text_config(original)
    tie = bool(original.get("tie_word_embeddings", False))
    text.tie_word_embeddings = tie
    config = VideoLlama3Config(
        text_config=text,
        vision_config=vision_config(original),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_PAD),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_PAD),
        tie_word_embeddings=tie,
        dtype=original.get("torch_dtype", ORIGINAL_DTYPE),
    )
    config.architectures = [NATIVE_ARCHITECTURE]
    return config


# --- tokenizer -----------------------------------------------------------------------------------


def add_media_tokens(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> list[str]:
    """Add `<|image_pad|>`/`<|video_pad|>` if the vocabulary lacks them (Qwen2.5's has both);
    their ids must be rows of the embedding table. Returns the tokens added."""
    missing = [t for t in MEDIA_TOKENS.values() if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens([AddedToken(t, special=True) for t in missing], special_tokens=True)
    too_big = {
        t: i
        for t in MEDIA_TOKENS.values()
        if (i := tokenizer.convert_tokens_to_ids(t)) >= vocab_size
    }
    if too_big:
        raise ValueError(
            f"{too_big} do not fit the {vocab_size}-row embedding table; the checkpoint's "
            "tokenizer needs Qwen2.5's <|image_pad|>/<|video_pad|> entries"
        )
    return missing


def convert_tokenizer(src: Path, vocab_size: int) -> PreTrainedTokenizerBase:
    """DAMO's Qwen2 tokenizer with the media tokens named, without remote-code pointers.

    Loaded as Qwen2Tokenizer on purpose: AutoTokenizer would read config.json, whose model_type
    only DAMO's remote code defines."""
    tokenizer = Qwen2Tokenizer.from_pretrained(src)
    if added := add_media_tokens(tokenizer, vocab_size):
        log.info("added %s to the tokenizer", added)
    for field in REMOTE_CODE_TOKENIZER_FIELDS:
        tokenizer.init_kwargs.pop(field, None)
    # `image_token`/`video_token` attributes can only be set at load time.
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        tokenizer = Qwen2Tokenizer.from_pretrained(tmp, extra_special_tokens=MEDIA_TOKENS)
    tokenizer.chat_template = NATIVE_CHAT_TEMPLATE
    return tokenizer


# --- processors ----------------------------------------------------------------------------------


def pixel_budget(tokens: int, patch_size: int, merge_size: int) -> int:
    """DAMO's budgets count merged tokens; a merged token covers (patch * merge)^2 pixels."""
    return tokens * (patch_size * merge_size) ** 2


def processor_settings(image_config: Mapping[str, Any], merge_size: int) -> dict[str, Any]:
    patch = image_config.get("patch_size", ORIGINAL_PATCH_SIZE)
    min_tokens = image_config.get("min_tokens", ORIGINAL_MIN_TOKENS)
    max_tokens = image_config.get("max_tokens", ORIGINAL_MAX_TOKENS)
    return {
        **{k: image_config[k] for k in IMAGE_PROCESSOR_FIELDS if k in image_config},
        "patch_size": patch,
        "merge_size": merge_size,
        "size": {
            "shortest_edge": pixel_budget(min_tokens, patch, merge_size),
            "longest_edge": pixel_budget(max_tokens, patch, merge_size),
        },
    }


def convert_processor(
    src: Path, tokenizer: PreTrainedTokenizerBase, use_token_compression: bool
) -> VideoLlama3Processor:
    image_config = read_json(src / IMAGE_PROCESSOR_FILE)
    processor_config = read_json(src / PROCESSOR_FILE)
    image_merge = processor_config.get("image_merge_size", ORIGINAL_IMAGE_MERGE_SIZE)
    video_merge = processor_config.get("video_merge_size", ORIGINAL_VIDEO_MERGE_SIZE)
    image_processor = VideoLlama3ImageProcessor(**processor_settings(image_config, image_merge))
    video_processor = VideoLlama3VideoProcessor(
        **processor_settings(image_config, video_merge),
        fps=VIDEO_FPS,
        max_frames=VIDEO_MAX_FRAMES,
        do_sample_frames=VIDEO_DO_SAMPLE_FRAMES,
        use_token_compression=use_token_compression,
    )
    return VideoLlama3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=NATIVE_CHAT_TEMPLATE,
    )


# --- the whole folder ----------------------------------------------------------------------------


def convert(src: Path, out: Path) -> VideoLlama3Config:
    """Write the native layout of the DAMO checkpoint folder `src` into `out`."""
    if out.resolve() == src.resolve():
        raise ValueError("--out must differ from --src (the original files would be mixed in)")
    original = read_json(src / CONFIG_FILE)
    if not original:
        raise FileNotFoundError(src / CONFIG_FILE)
    check_original_config(original)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = convert_tokenizer(src, original["vocab_size"])
    config = native_config(original, tokenizer)
    check_weights(config, convert_weights(src, out))
    config.save_pretrained(out)
    if (src / GENERATION_CONFIG_FILE).is_file():
        GenerationConfig.from_pretrained(src).save_pretrained(out)
    compression = original.get("use_token_compression", ORIGINAL_USE_TOKEN_COMPRESSION)
    convert_processor(src, tokenizer, bool(compression)).save_pretrained(out)
    return config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export.convert_videollama3",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--src", type=Path, required=True, help="DAMO checkpoint folder (hub)")
    parser.add_argument("--out", type=Path, required=True, help="native video_llama_3 folder")
    return parser.parse_args(argv)


def describe(config: VideoLlama3Config, files: Iterable[Path]) -> str:
    text, vision = config.text_config, config.vision_config
    return (
        f"text {text.num_hidden_layers}x{text.hidden_size} (vocab {text.vocab_size}), "
        f"vision {vision.num_hidden_layers}x{vision.hidden_size} patch {vision.patch_size}, "
        f"image/video tokens {config.image_token_id}/{config.video_token_id}; "
        f"{len(list(files))} files"
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    config = convert(args.src, args.out)
    print(f"wrote {args.out}: {describe(config, args.out.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
