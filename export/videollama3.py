"""VideoLLaMA3 in `transformers`' native layout: model, processor and tokenizer in one folder.

Tiny (the recipe of /work/shared/notes/videollama3.md, B2): qwen2 text model with hidden 64,
2 layers, 4 heads, 2 KV heads; vision encoder with hidden 32, 2 layers, 2 heads, patch 14;
vocabulary = the tokenizer's; small image/video pixel budgets so 64x96 frames stay cheap.

Full (VideoLLaMA3-7B):
- text = Qwen2.5-7B: hidden 3584, FFN 18944, 28 layers, 28 heads, 4 KV heads, 32768 positions,
  RoPE theta 1e6, RMSNorm eps 1e-6, untied embeddings -- as in the config of
  time-warp/VideoLLaMA-3-7b-implicit (`_name_or_path: DAMO-NLP-SG/VideoLLaMA3-7B`) and Qwen2.5-7B's
  own config.json (vocab 152064);
- vision = VL3-SigLIP-NaViT (SigLIP so400m): hidden 1152, FFN 4304, 27 layers, 16 heads, patch 14
  -- the `vision_encoder_config` of DAMO-NLP-SG/VideoLLaMA3-2B's config.json (a fork's copy); the 7B
  uses the same encoder (not read from the 7B's own config.json, which the search did not show);
- image/video processors at the `transformers` defaults, which are VideoLLaMA3's.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    PreTrainedTokenizerBase,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

from export.videollama3_tokenizer import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    EOS_TOKEN,
    IMAGE_PAD,
    PAD_TOKEN,
    VIDEO_PAD,
    build_tokenizer,
)
from export.weights import Size, build_model, count_parameters, count_parameters_on_meta, save_model

PATCH_SIZE = 14  # the processors cut 14x14 patches; the vision config defaults to 16
QWEN_ROPE_THETA = 1_000_000.0
QWEN_RMS_NORM_EPS = 1e-6
QWEN_MAX_POSITIONS = 32768

# The real 7B embedding table has Qwen2.5's 152064 rows. Our tokenizer is small (~1.1k tokens),
# so the full-size config pads the vocabulary to 152064: the extra rows are never produced by the
# tokenizer, but the model has the real shapes (and the real embedding/lm_head cost). Random
# full-size weights mostly generate ids from those rows, which decode to empty text.
FULL_VOCAB_SIZE = 152064

TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
FULL_TEXT = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
}
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
FULL_VISION = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
}

# Tiny pixel budgets (min, max) in pixels; the video budget is for the whole clip. 4 frames of
# 64x96 become 56x84 (4x6 merged patches per frame, 24 video tokens).
TINY_IMAGE_PIXELS = (28 * 28, 28 * 28 * 32)
TINY_VIDEO_PIXELS = (28 * 28, 28 * 28 * 32)
# Full size: DAMO-NLP-SG/VideoLLaMA3's budgets as the converter maps them (16..16384 merged
# tokens), so speed figures see as many visual tokens as the real checkpoint does.
FULL_IMAGE_PIXELS = (16 * 14**2, 16384 * 14**2)
FULL_VIDEO_PIXELS = (16 * 28**2, 16384 * 28**2)


def videollama3_config(size: Size, tokenizer: PreTrainedTokenizerBase) -> VideoLlama3Config:
    token_id = tokenizer.convert_tokens_to_ids
    text = TINY_TEXT if size is Size.TINY else FULL_TEXT
    vision = TINY_VISION if size is Size.TINY else FULL_VISION
    text_config = {
        "model_type": "qwen2",
        **text,
        "vocab_size": len(tokenizer) if size is Size.TINY else FULL_VOCAB_SIZE,
        "max_position_embeddings": QWEN_MAX_POSITIONS,
        "max_window_layers": text["num_hidden_layers"],
        "use_sliding_window": False,
        "rope_theta": QWEN_ROPE_THETA,
        "rms_norm_eps": QWEN_RMS_NORM_EPS,
        "tie_word_embeddings": False,
        "bos_token_id": token_id(ENDOFTEXT),
        "eos_token_id": token_id(EOS_TOKEN),
        "pad_token_id": token_id(PAD_TOKEN),
        "dtype": size.dtype,
    }
    return VideoLlama3Config(
        text_config=text_config,
        vision_config={**vision, "patch_size": PATCH_SIZE},
        image_token_id=token_id(IMAGE_PAD),
        video_token_id=token_id(VIDEO_PAD),
        tie_word_embeddings=False,
        dtype=size.dtype,
    )


def build_processor(size: Size, tokenizer: PreTrainedTokenizerBase) -> VideoLlama3Processor:
    if size is Size.TINY:
        image_processor = VideoLlama3ImageProcessor(
            size={"shortest_edge": TINY_IMAGE_PIXELS[0], "longest_edge": TINY_IMAGE_PIXELS[1]}
        )
        video_processor = VideoLlama3VideoProcessor(
            size={"shortest_edge": TINY_VIDEO_PIXELS[0], "longest_edge": TINY_VIDEO_PIXELS[1]}
        )
    else:
        image_processor = VideoLlama3ImageProcessor(
            size={"shortest_edge": FULL_IMAGE_PIXELS[0], "longest_edge": FULL_IMAGE_PIXELS[1]}
        )
        video_processor = VideoLlama3VideoProcessor(
            size={"shortest_edge": FULL_VIDEO_PIXELS[0], "longest_edge": FULL_VIDEO_PIXELS[1]}
        )
    return VideoLlama3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def export_videollama3(size: Size, out_dir: Path, *, seed: int, device: str) -> int:
    tokenizer = build_tokenizer()
    config = videollama3_config(size, tokenizer)
    model = build_model(
        VideoLlama3ForConditionalGeneration, config, seed=seed, dtype=size.dtype, device=device
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_model(model, out_dir, size)
    build_processor(size, tokenizer).save_pretrained(out_dir)
    return count_parameters(model)


def videollama3_parameter_count(size: Size) -> int:
    config = videollama3_config(size, build_tokenizer())
    return count_parameters_on_meta(lambda: VideoLlama3ForConditionalGeneration(config))
