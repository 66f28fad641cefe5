"""Every tiny part reloads with `from_pretrained` and runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoProcessor,
    GenerationConfig,
    LlamaForCausalLM,
    VideoLlama3ForConditionalGeneration,
    XcodecModel,
)

from export.videollama3_tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    SPECIAL_TOKENS,
    VIDEO_PAD,
)
from v2bgm.checkpoints import VIDEOLLAMA3, XCODEC, YUE_STAGE1, YUE_STAGE2
from v2bgm.yue.tokens import EOA, MODEL_VOCAB_SIZE, SOA, STAGE2_CODEBOOKS, XCODEC_SEP

FRAMES, HEIGHT, WIDTH = 4, 64, 96
VIDEO_FPS = 1.0
NEW_TOKENS = 6
SAMPLE_RATE = 16000
CODE_FRAMES = 100  # 2.0 s at 50 frames/s


# --- YuE language models ---------------------------------------------------------------------
@pytest.mark.parametrize("stage", [YUE_STAGE1, YUE_STAGE2])
def test_yue_stage_config_and_generate(tiny_dir: Path, stage: str) -> None:
    model = LlamaForCausalLM.from_pretrained(tiny_dir / stage)
    config = model.config
    assert config.vocab_size == MODEL_VOCAB_SIZE
    assert not config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert config.max_position_embeddings == 16384
    assert config.rope_parameters["rope_theta"] == 10000.0
    assert config.rms_norm_eps == 1e-5
    assert (config.hidden_size, config.num_hidden_layers) == (64, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (
        4, 2, 128,
    )  # fmt: skip
    assert model.dtype == torch.float32
    generation = GenerationConfig.from_pretrained(tiny_dir / stage)
    assert (generation.bos_token_id, generation.eos_token_id) == (1, 2)

    prompt = torch.tensor([[SOA, XCODEC_SEP]])
    out = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=EOA)
    assert out.shape[1] <= prompt.shape[1] + NEW_TOKENS
    assert int(out.max()) < MODEL_VOCAB_SIZE


# --- VideoLLaMA3 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def videollama3(tiny_dir: Path) -> tuple[VideoLlama3ForConditionalGeneration, AutoProcessor]:
    model = VideoLlama3ForConditionalGeneration.from_pretrained(tiny_dir / VIDEOLLAMA3).eval()
    return model, AutoProcessor.from_pretrained(tiny_dir / VIDEOLLAMA3)


def test_videollama3_config_matches_tokenizer(videollama3: tuple) -> None:
    model, processor = videollama3
    tokenizer = processor.tokenizer
    config = model.config
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    assert config.text_config.vocab_size == len(tokenizer) <= 4096
    assert config.image_token_id == ids[IMAGE_PAD] == processor.image_token_id
    assert config.video_token_id == ids[VIDEO_PAD] == processor.video_token_id
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == ENDOFTEXT
    assert config.text_config.eos_token_id == ids[IM_END]
    assert config.vision_config.patch_size == 14
    assert processor.video_processor.patch_size == 14
    assert processor.image_processor.patch_size == 14
    assert config.text_config.model_type == "qwen2"
    assert not config.tie_word_embeddings


def test_videollama3_tokenizer_speaks_english(videollama3: tuple) -> None:
    tokenizer = videollama3[1].tokenizer
    text = "The video shows a calm piano ballad with soft strings."
    ids = tokenizer(text).input_ids
    assert len(ids) <= 12  # whole words, not bytes
    assert tokenizer.decode(ids) == text
    words = [tokenizer.decode([i]).strip() for i in ids]
    assert {"video", "piano", "ballad", "strings"} <= set(words)
    assert tokenizer.tokenize(f"{IM_START}user\n{VIDEO_PAD}\n")[0] == IM_START


def test_videollama3_chat_template(videollama3: tuple) -> None:
    processor = videollama3[1]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Hi"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == f"{IM_START}user\n{VIDEO_PAD}\nHi{IM_END}\n{IM_START}assistant\n"
    with_system = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, add_system_prompt=True
    )
    assert with_system.startswith(f"{IM_START}system\nYou are VideoLLaMA3")


def test_videollama3_forward_and_generate_on_a_video(videollama3: tuple) -> None:
    model, processor = videollama3
    frames = np.random.default_rng(0).integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe it."}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    metadata = {"total_num_frames": FRAMES, "fps": VIDEO_FPS, "frames_indices": list(range(FRAMES))}
    inputs = processor(
        text=[prompt], videos=[frames], video_metadata=[metadata], return_tensors="pt"
    )
    inputs.pop("video_metadata", None)
    assert inputs["video_grid_thw"].tolist() == [[FRAMES, 4, 6]]  # 56x84 after resizing
    video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert video_tokens == int(inputs["video_compression_mask"].sum()) > 0
    assert "Time 3.0s:" in processor.decode(inputs["input_ids"][0])

    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()

    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 0 < len(new) <= NEW_TOKENS
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


# --- X-Codec -----------------------------------------------------------------------------------
def test_xcodec_decodes_random_codes_to_two_seconds(tiny_dir: Path) -> None:
    model = XcodecModel.from_pretrained(tiny_dir / XCODEC).eval()
    config = model.config
    assert config.sample_rate == SAMPLE_RATE and config.hop_length == 320
    assert config.frame_rate == 50 and config.codebook_size == 1024
    assert config.num_quantizers >= STAGE2_CODEBOOKS
    codes = torch.randint(0, config.codebook_size, (1, STAGE2_CODEBOOKS, CODE_FRAMES))
    with torch.no_grad():
        audio = model.decode(codes).audio_values
    assert audio.shape == (1, 1, 2 * SAMPLE_RATE)
    assert torch.isfinite(audio).all()
    other = torch.randint(0, config.codebook_size, (1, STAGE2_CODEBOOKS, CODE_FRAMES))
    with torch.no_grad():
        assert not torch.equal(model.decode(other).audio_values, audio)  # codebooks not all zero
