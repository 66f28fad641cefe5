"""YuE v1's two language models: stage 1 (6B) and stage 2 (1B), both `LlamaForCausalLM`.

Shared by both stages and taken from the real configs: vocabulary `MODEL_VOCAB_SIZE` (83968 rows,
the 83734 SentencePiece pieces padded), untied embeddings, 16384 positions, RoPE theta 10000,
RMSNorm eps 1e-5, bos 1 / eos 2 (SentencePiece's `<s>` / `</s>`).

Full stage 1 (m-a-p/YuE-s1-7B-anneal-en-*): 32 layers, hidden 4096, 32 heads, 4 KV heads,
FFN 11008 -- from the en-icl config as reproduced in Alissonerdx/YuE-s1-7B-anneal-en-icl-nf4
(see /work/shared/notes/yue-v1-inference.md); about 6.2B parameters.

Full stage 2 (m-a-p/YuE-s2-1B-general): only FFN 5504 is published (AWS NxDI YuE port README).
The rest is OUR GUESS, not found in any source: hidden 2048 (5504 is LLaMA's SwiGLU width
8/3 * 2048 rounded up to a multiple of 128, i.e. half of stage 1's 11008), 16 heads of 128 (as
stage 1), 4 KV heads (as stage 1) and 16 layers, which gives about 1.05B parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from export.weights import (
    Size,
    build_model,
    count_parameters,
    count_parameters_on_meta,
    save_model,
)
from v2bgm.yue.tokens import MODEL_VOCAB_SIZE

MAX_POSITION_EMBEDDINGS = 16384
ROPE_THETA = 10000.0
RMS_NORM_EPS = 1e-5
BOS_ID = 1  # `<s>` (YuE never adds it, but the real configs name it)
EOS_ID = 2  # `</s>`


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int


TINY_SHAPE = LlamaShape(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128)
STAGE1_FULL_SHAPE = LlamaShape(layers=32, hidden=4096, heads=32, kv_heads=4, ffn=11008)
STAGE2_FULL_SHAPE = LlamaShape(layers=16, hidden=2048, heads=16, kv_heads=4, ffn=5504)  # guessed

FULL_SHAPES = {"s1": STAGE1_FULL_SHAPE, "s2": STAGE2_FULL_SHAPE}
STAGES = tuple(FULL_SHAPES)


def yue_config(stage: str, size: Size) -> LlamaConfig:
    shape = TINY_SHAPE if size is Size.TINY else FULL_SHAPES[stage]
    return LlamaConfig(
        vocab_size=MODEL_VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        rope_theta=ROPE_THETA,
        rms_norm_eps=RMS_NORM_EPS,
        tie_word_embeddings=False,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        dtype=size.dtype,
    )


def yue_generation_config() -> GenerationConfig:
    """The real checkpoints' generation_config.json holds bos/eos only (YuE passes the rest)."""
    return GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID)


def export_yue_stage(stage: str, size: Size, out_dir: Path, *, seed: int, device: str) -> int:
    config = yue_config(stage, size)
    model = build_model(LlamaForCausalLM, config, seed=seed, dtype=size.dtype, device=device)
    model.generation_config = yue_generation_config()
    save_model(model, out_dir, size)
    return count_parameters(model)


def yue_parameter_count(stage: str, size: Size) -> int:
    return count_parameters_on_meta(lambda: LlamaForCausalLM(yue_config(stage, size)))
