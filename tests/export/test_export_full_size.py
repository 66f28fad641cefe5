"""Full-size configs, checked on the meta device (nothing is materialised)."""

from __future__ import annotations

import pytest
import torch
from transformers import VideoLlama3ForConditionalGeneration, XcodecModel

from export.__main__ import dry_run
from export.parts import PARTS
from export.videollama3 import FULL_VOCAB_SIZE, videollama3_config
from export.videollama3_tokenizer import build_tokenizer
from export.weights import META_DEVICE, Size
from export.xcodec import xcodec_config
from export.yue import yue_config
from v2bgm.checkpoints import VIDEOLLAMA3, XCODEC, YUE_STAGE1, YUE_STAGE2
from v2bgm.yue.tokens import MODEL_VOCAB_SIZE, XCODEC_CODEBOOKS

BILLION = 1e9


@pytest.fixture(scope="module")
def counts() -> dict[str, int]:
    return dry_run(PARTS, Size.FULL)


@pytest.mark.parametrize(
    ("part", "low", "high"),
    [
        (YUE_STAGE1, 6.1, 6.3),  # YuE-s1 "7B": 6.2B
        (YUE_STAGE2, 0.9, 1.2),  # YuE-s2 "1B"
        (VIDEOLLAMA3, 7.9, 8.2),  # VideoLLaMA3-7B: Qwen2.5-7B + SigLIP so400m
        (XCODEC, 0.1, 0.25),  # DAC + HuBERT base
    ],
)
def test_dry_run_parameter_counts(
    counts: dict[str, int], part: str, low: float, high: float
) -> None:
    assert low * BILLION < counts[part] < high * BILLION


def test_full_yue_configs() -> None:
    s1, s2 = yue_config("s1", Size.FULL), yue_config("s2", Size.FULL)
    assert (s1.num_hidden_layers, s1.hidden_size, s1.num_attention_heads) == (32, 4096, 32)
    assert (s1.num_key_value_heads, s1.intermediate_size) == (4, 11008)
    assert s2.intermediate_size == 5504
    for config in (s1, s2):
        assert config.vocab_size == MODEL_VOCAB_SIZE and not config.tie_word_embeddings
        assert config.max_position_embeddings == 16384 and config.rms_norm_eps == 1e-5
        assert config.dtype == torch.bfloat16


def test_full_videollama3_config() -> None:
    config = videollama3_config(Size.FULL, build_tokenizer())
    text, vision = config.text_config, config.vision_config
    assert text.vocab_size == FULL_VOCAB_SIZE == 152064
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (3584, 18944, 28)
    assert (text.num_attention_heads, text.num_key_value_heads) == (28, 4)
    assert (vision.hidden_size, vision.intermediate_size) == (1152, 4304)
    assert (vision.num_hidden_layers, vision.num_attention_heads, vision.patch_size) == (27, 16, 14)
    with torch.device(META_DEVICE):
        model = VideoLlama3ForConditionalGeneration(config)
    assert model.lm_head.weight.shape == (152064, 3584)


def test_full_xcodec_config() -> None:
    config = xcodec_config(Size.FULL)
    assert config.num_quantizers == XCODEC_CODEBOOKS == 12
    assert config.hop_length == 320 and config.sample_rate == 16000
    assert config.codebook_dim == 1024
    with torch.device(META_DEVICE):
        model = XcodecModel(config)
    assert (model.fc2.in_features, model.fc2.out_features) == (1024, 256)
