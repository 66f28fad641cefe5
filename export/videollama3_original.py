"""VideoLLaMA3 in DAMO-NLP-SG's ORIGINAL remote-code layout, written from a native model.

The inverse of `export.convert_videollama3`, for its tests (no real weights can be downloaded
here): `write_original_checkpoint` lays a `VideoLlama3ForConditionalGeneration` + processor out the
way DAMO-NLP-SG/VideoLLaMA3-{2B,7B} ship on the hub:

- `model.safetensors`: Videollama3Qwen2ForCausalLM's parameter names (`original_key`), without
  `lm_head.weight` when the embeddings are tied (transformers 4.46 `save_pretrained` drops it);
- `config.json`: `videollama3_qwen2` -- a flat Qwen2 config in transformers 4.46 spelling
  (`rope_theta`, `torch_dtype`) plus `vision_encoder_config` (its non-default fields, as 4.46's
  `to_diff_dict` writes them), `mm_projector_type`, `use_token_compression`, `image_token_index`
  and the `auto_map` to the remote code;
- the tokenizer: the native one plus `<image>`, `<|stream_start|>`, `<|stream_end|>`
  (videollama3/train.py adds them to Qwen2.5's) and without the `image_token`/`video_token` names,
  which Qwen2.5's tokenizer_config.json does not have; its tokenizer_config.json holds
  `padding_side: right` (train.py loads the tokenizer so) and DAMO's chat template: their
  processor needs both when it is built (`process_text` pops `padding_side`; `__init__` renders the
  template, which transformers 4.46 hands it from the tokenizer only -- chat_template.json is set
  after `__init__`), so the hub's tokenizer_config.json must hold them too;
- `chat_template.json` (DAMO's template), `preprocessor_config.json` (Videollama3ImageProcessor:
  budgets in tokens) and `processor_config.json` (fps, max_frames, merge sizes);
- `generation_config.json`.

The remote-code .py files are not written: the converter never runs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import (
    PreTrainedTokenizerBase,
    Qwen2Tokenizer,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3Processor,
)

from export.convert_videollama3 import (
    CONFIG_FILE,
    IMAGE_PROCESSOR_FIELDS,
    IMAGE_PROCESSOR_FILE,
    ORIGINAL_IMAGE_TOKEN,
    ORIGINAL_MODEL_TYPE,
    ORIGINAL_VISION_DEFAULTS,
    PROCESSOR_FILE,
    SAFETENSORS_METADATA,
    SUPPORTED_PROJECTOR,
    TIED_KEY,
    TOKENIZER_CONFIG_FILE,
    WEIGHTS_FILE,
    to_original_state_dict,
)
from export.videollama3_tokenizer import DAMO_SYSTEM_PROMPT

CHAT_TEMPLATE_FILE = "chat_template.json"
MEDIA_TOKEN_FIELDS = ("image_token", "video_token")
MODEL_SPECIFIC_TOKENS_FIELD = "model_specific_special_tokens"
DAMO_ADDED_TOKENS = (ORIGINAL_IMAGE_TOKEN, "<|stream_start|>", "<|stream_end|>")  # train.py
DAMO_ARCHITECTURE = "Videollama3Qwen2ForCausalLM"
DAMO_PROCESSOR = "Videollama3Qwen2Processor"
DAMO_IMAGE_PROCESSOR = "Videollama3ImageProcessor"
VISION_MODEL_TYPE = "videollama3_vision_encoder"
MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_videollama3.Videollama3Qwen2Config",
    "AutoModelForCausalLM": "modeling_videollama3.Videollama3Qwen2ForCausalLM",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": f"processing_videollama3.{DAMO_PROCESSOR}"}
IMAGE_PROCESSOR_AUTO_MAP = {
    "AutoImageProcessor": f"image_processing_videollama3.{DAMO_IMAGE_PROCESSOR}",
    **PROCESSOR_AUTO_MAP,
}
DAMO_PROCESSOR_FPS = 1  # processor_config.json on the hub
DAMO_PROCESSOR_MAX_FRAMES = 128
TRANSFORMERS_VERSION = "4.46.3"  # what DAMO saved with (and recommends)
# videollama3/train.py loads the tokenizer with padding_side="right", so its saved
# tokenizer_config.json has it; their processor's `process_text` pops the key and fails without it.
DAMO_PADDING_SIDE = "right"
# The Qwen2Config fields of DAMO's config.json (DAMO-NLP-SG/VideoLLaMA3-2B, 4.46 names).
DAMO_TEXT_FIELDS = (
    "attention_dropout", "bos_token_id", "eos_token_id", "hidden_act", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings", "max_window_layers",
    "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
    "sliding_window", "tie_word_embeddings", "use_sliding_window", "vocab_size",
)  # fmt: skip

# DAMO-NLP-SG/VideoLLaMA3-7B chat_template.json (whitespace between block tags normalised; the
# template is rendered with trim_blocks/lstrip_blocks, so the output is the same): every frame of a
# video becomes `Time t.ts:` + the image token, frames joined by ",".
DAMO_CHAT_TEMPLATE = (
    "{%- set identifier = 'im' %}\n"
    "{% for message in messages %}\n"
    "{% if add_system_prompt and loop.first and message['role'] != 'system' %}\n"
    "{{- '<|im_start|>system\\n" + DAMO_SYSTEM_PROMPT + "<|im_end|>\\n' -}}\n"
    "{% endif %}\n"
    "{% if message['role'] == 'stream' %}\n"
    "{% set identifier = 'stream' %}\n"
    "{% else %}\n"
    "{% set identifier = 'im' %}\n"
    "{% endif %}\n"
    "{{- '<|' + identifier + '_start|>' + message['role'] + '\\n' -}}\n"
    "{% if message['content'] is string %}\n"
    "{{- message['content'] + '<|' + identifier + '_end|>\\n' -}}\n"
    "{% else %}\n"
    "{% for content in message['content'] %}\n"
    "{% if content is string %}\n"
    "{{- content -}}\n"
    "{% elif content['type'] == 'text' or 'text' in content %}\n"
    "{{- content['text'] -}}\n"
    "{% elif content['type'] == 'image' or 'image' in content %}\n"
    "{% if 'timestamp' in content %}\n"
    "{{- 'Time ' + content['timestamp'] | round(1) | string + 's: ' -}}\n"
    "{% endif %}\n"
    "{{- image_token + '\\n' -}}\n"
    "{% elif content['type'] == 'video' or 'video' in content %}\n"
    "{% for i in range(content['num_frames']) %}\n"
    "{% if 'timestamps' in content %}\n"
    "{{- 'Time ' + content['timestamps'][i] | round(1) | string + 's:' -}}\n"
    "{% endif %}\n"
    "{% if i < content['num_frames'] - 1 %}\n"
    "{{- image_token + ',' -}}\n"
    "{% else %}\n"
    "{{- image_token + '\\n' -}}\n"
    "{% endif %}\n"
    "{% endfor %}\n"
    "{% endif %}\n"
    "{% endfor %}\n"
    "{% if identifier == 'stream' %}\n"
    "{{- '<|' + identifier + '_end|>' -}}\n"
    "{% else %}\n"
    "{{- '<|' + identifier + '_end|>\\n' -}}\n"
    "{% endif %}\n"
    "{% endif %}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{% endif %}\n"
)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def original_state_dict(model: VideoLlama3ForConditionalGeneration) -> dict[str, torch.Tensor]:
    state = to_original_state_dict(model.state_dict())
    if model.config.tie_word_embeddings:
        state.pop(TIED_KEY)  # shares the embeddings' storage; 4.46 does not save it
    return {k: v.detach().contiguous() for k, v in state.items()}


def original_vision_config(config: VideoLlama3Config) -> dict[str, Any]:
    vision = config.vision_config
    fields = {
        k: getattr(vision, k)
        for k, default in ORIGINAL_VISION_DEFAULTS.items()
        if getattr(vision, k) != default
    }
    return {**fields, "model_type": VISION_MODEL_TYPE}


def original_config(
    config: VideoLlama3Config, image_token_index: int, use_token_compression: bool
) -> dict[str, Any]:
    text = config.text_config
    rope = text.rope_parameters or {}
    return {
        **{k: getattr(text, k) for k in DAMO_TEXT_FIELDS},
        "tie_word_embeddings": config.tie_word_embeddings,
        "rope_theta": rope.get("rope_theta"),
        "rope_scaling": None,
        "torch_dtype": str(config.dtype or torch.float32).removeprefix("torch."),
        "use_cache": False,  # as DAMO saved it (training turns the cache off)
        "architectures": [DAMO_ARCHITECTURE],
        "auto_map": MODEL_AUTO_MAP,
        "model_type": ORIGINAL_MODEL_TYPE,
        "vision_encoder": None,
        "vision_encoder_config": original_vision_config(config),
        "mm_projector_type": SUPPORTED_PROJECTOR,
        "use_token_compression": use_token_compression,
        "image_token_index": image_token_index,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def token_budget(pixels: int, patch_size: int, merge_size: int) -> int:
    tokens, rest = divmod(pixels, (patch_size * merge_size) ** 2)
    if rest:
        raise ValueError(f"{pixels} pixels is not a whole number of {merge_size}x-merged tokens")
    return tokens


def original_image_processor_config(processor: VideoLlama3Processor) -> dict[str, Any]:
    """DAMO has one image processor for images and frames, its budgets in merged tokens; they are
    taken from the video processor (the path the server uses)."""
    video = processor.video_processor
    size = video.size
    return {
        **{k: getattr(video, k) for k in IMAGE_PROCESSOR_FIELDS},
        "resample": int(video.resample),
        "patch_size": video.patch_size,
        "min_tokens": token_budget(size["shortest_edge"], video.patch_size, video.merge_size),
        "max_tokens": token_budget(size["longest_edge"], video.patch_size, video.merge_size),
        "image_processor_type": DAMO_IMAGE_PROCESSOR,
        "processor_class": DAMO_PROCESSOR,
        "auto_map": IMAGE_PROCESSOR_AUTO_MAP,
    }


def original_processor_config(processor: VideoLlama3Processor) -> dict[str, Any]:
    return {
        "fps": DAMO_PROCESSOR_FPS,
        "max_frames": DAMO_PROCESSOR_MAX_FRAMES,
        "image_merge_size": processor.image_processor.merge_size,
        "video_merge_size": processor.video_processor.merge_size,
        "processor_class": DAMO_PROCESSOR,
        "auto_map": PROCESSOR_AUTO_MAP,
    }


def strip_media_token_names(path: Path, **extra: Any) -> None:
    """Qwen2.5's tokenizer_config.json does not name an image or video token."""
    settings = json.loads(path.read_text())
    for name in (*MEDIA_TOKEN_FIELDS, MODEL_SPECIFIC_TOKENS_FIELD):
        settings.pop(name, None)
    write_json(path, {**settings, **extra})


def write_damo_tokenizer(tokenizer: PreTrainedTokenizerBase, out: Path) -> int:
    """Qwen2.5's tokenizer as DAMO extends it; returns the id of `<image>`."""
    tokenizer.save_pretrained(out)
    strip_media_token_names(out / TOKENIZER_CONFIG_FILE)
    damo = Qwen2Tokenizer.from_pretrained(out)
    damo.add_tokens(list(DAMO_ADDED_TOKENS), special_tokens=True)
    damo.save_pretrained(out)
    strip_media_token_names(
        out / TOKENIZER_CONFIG_FILE,
        processor_class=DAMO_PROCESSOR,
        auto_map=PROCESSOR_AUTO_MAP,
        padding_side=DAMO_PADDING_SIDE,
        chat_template=DAMO_CHAT_TEMPLATE,
    )
    return damo.convert_tokens_to_ids(ORIGINAL_IMAGE_TOKEN)


def write_original_checkpoint(
    model: VideoLlama3ForConditionalGeneration, processor: VideoLlama3Processor, out: Path
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    image_token_index = write_damo_tokenizer(processor.tokenizer, out)
    if image_token_index >= model.config.text_config.vocab_size:
        raise ValueError(f"{ORIGINAL_IMAGE_TOKEN} ({image_token_index}) needs a padded vocabulary")
    save_file(original_state_dict(model), out / WEIGHTS_FILE, metadata=SAFETENSORS_METADATA)
    compression = bool(processor.video_processor.use_token_compression)
    write_json(out / CONFIG_FILE, original_config(model.config, image_token_index, compression))
    model.generation_config.save_pretrained(out)
    write_json(out / CHAT_TEMPLATE_FILE, {"chat_template": DAMO_CHAT_TEMPLATE})
    write_json(out / IMAGE_PROCESSOR_FILE, original_image_processor_config(processor))
    write_json(out / PROCESSOR_FILE, original_processor_config(processor))
    return out
