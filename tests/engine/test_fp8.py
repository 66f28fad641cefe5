"""Stage 1's FP8 option on the CPU: the quantization, the engine on FP8 matrices, the error
report, and the Triton kernels' arithmetic (run by Triton's CPU interpreter)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.engine.interpreter import run_interpreted
from v2bgm.bench import precision
from v2bgm.engine.linear import FP8, FP8_MAX, linear, quantize_fp8, skinny_linear
from v2bgm.engine.llama import Part, StaticLlama
from v2bgm.yue.stage1 import allowed_mask


def test_quantize_fp8_keeps_each_rows_largest_value_and_bounds_the_error():
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    w[3] *= 100.0  # rows of very different magnitudes keep their own scale
    w[5] = 0.0
    m = quantize_fp8(w)
    assert m.weight.dtype == FP8 and m.scale.shape == (64,) and m.scale.dtype == torch.float32
    back = m.dequantized(torch.float32)
    assert torch.all(back[5] == 0) and torch.isfinite(m.scale).all()
    peak = w.abs().amax(1)
    torch.testing.assert_close(back.abs().amax(1), peak, rtol=1e-6, atol=0)
    assert m.weight.float().abs().max() == FP8_MAX
    # e4m3 keeps 3 mantissa bits: each element within half a step (1/16 relative) of its value,
    # small values within the subnormal step of their row
    step = peak[:, None] / FP8_MAX * 2.0**-9
    assert torch.all((back - w).abs() <= w.abs() / 16 + step)
    assert m.nbytes == 64 * 96 + 64 * 4


def test_skinny_linear_matches_the_dequantized_matrix_and_is_one_op_under_compile():
    g = torch.Generator().manual_seed(1)
    m = quantize_fp8(torch.randn(48, 32, generator=g))
    x = torch.randn(3, 5, 32, generator=g)
    expected = x @ m.dequantized(torch.float32).t()
    torch.testing.assert_close(linear(x, m.weight, m.scale), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear(x, m.weight.float(), None), x @ m.weight.float().t())
    compiled = torch.compile(lambda x, w, s: torch.relu(skinny_linear(x, w, s)), fullgraph=True)
    torch.testing.assert_close(compiled(x, m.weight, m.scale), torch.relu(expected), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


@torch.inference_mode()
def test_engine_on_fp8_matrices_is_the_model_with_dequantized_weights(stage1_model):
    """The FP8 engine computes exactly the transformers model whose matrices are the FP8 values:
    the quantization is the only difference from the model's own precision."""
    fp8 = StaticLlama(stage1_model, precision="fp8")
    assert fp8.layers[0].qkv.weight.dtype == FP8 and fp8.lm_head.weight.dtype == FP8
    model = type(stage1_model)(stage1_model.config).eval()
    model.load_state_dict(stage1_model.state_dict())
    for static, hf in zip(fp8.layers, model.model.layers, strict=True):
        attn, mlp = hf.self_attn, hf.mlp
        qkv = static.qkv.dequantized(torch.float32)
        sizes = [attn.q_proj.weight.shape[0], attn.k_proj.weight.shape[0]]
        attn.q_proj.weight.data, attn.k_proj.weight.data, attn.v_proj.weight.data = qkv.split(
            [sizes[0], sizes[1], qkv.shape[0] - sum(sizes)]
        )
        attn.o_proj.weight.data = static.o.dequantized(torch.float32)
        gate_up = static.gate_up.dequantized(torch.float32)
        mlp.gate_proj.weight.data, mlp.up_proj.weight.data = gate_up.chunk(2)
        mlp.down_proj.weight.data = static.down.dequantized(torch.float32)
    model.lm_head.weight = torch.nn.Parameter(fp8.lm_head.dequantized(torch.float32))
    ids = torch.randint(0, fp8.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))
    pool = fp8.pool(1, 16)
    got = fp8.forward(ids, torch.arange(12)[None], [Part(pool, 0, 1, 12)])
    torch.testing.assert_close(got, model(ids).logits[:, -1], rtol=1e-4, atol=1e-4)
    plain = StaticLlama(stage1_model).forward(
        ids, torch.arange(12)[None], [Part(StaticLlama(stage1_model).pool(1, 16), 0, 1, 12)]
    )
    assert not torch.equal(got, plain)  # the FP8 rounding is really there


def test_precision_report_of_a_model_against_itself_and_against_fp8(stage1_model, tokenizer):
    plain = StaticLlama(stage1_model)
    same = precision.fp8_against_bf16(plain, StaticLlama(stage1_model), tokenizer, 24)
    assert same["steps"] == 24 and same["max_abs_logit_error"] == 0.0
    assert same["kl_allowed_max"] == 0.0 and same["greedy_agreement"] == 1.0
    fp8 = precision.fp8_against_bf16(
        plain, StaticLlama(stage1_model, precision="fp8"), tokenizer, 24
    )
    assert 0.0 < fp8["mean_abs_logit_error"] <= fp8["max_abs_logit_error"]
    assert fp8["mean_abs_logit_error"] < 0.1 * fp8["reference_logit_std"]
    assert 0.0 < fp8["kl_allowed_mean"] <= fp8["kl_allowed_max"]
    json.dumps(fp8)


def test_teacher_forced_logits_are_the_models_own_next_token_logits(stage1_model):
    model = StaticLlama(stage1_model)
    ids = torch.randint(0, model.vocab_size, (10,), generator=torch.Generator().manual_seed(3))
    got = precision.teacher_forced_logits(model, ids, prompt=6)
    assert got.shape == (4, model.vocab_size)
    with torch.inference_mode():
        full = stage1_model(ids[None]).logits[0]
    torch.testing.assert_close(got, full[5:9].float(), rtol=1e-4, atol=1e-4)
    allowed = allowed_mask(model.vocab_size, False, torch.device("cpu")) == 0
    assert precision.compare(got, got, allowed)["kl_allowed_max"] == 0.0


KERNEL_CHECK = """
import json, os, sys
import torch
from v2bgm.engine import skinny
from v2bgm.engine.linear import Matrix, quantize_fp8
g = torch.Generator().manual_seed(0)
out = []
for dtype, rows, fp8 in json.loads(sys.argv[1]):
    dtype = getattr(torch, dtype)
    w = torch.randn(40, 100, generator=g) * 0.1  # N, K not multiples of the tiles
    x = torch.randn(rows, 100, generator=g).to(dtype)
    m = quantize_fp8(w) if fp8 else Matrix(w.to(dtype))
    tiles = {"BLOCK_N": 8, "BLOCK_K": 32} if rows <= skinny.GEMV_MAX_ROWS else {
        "BLOCK_N": 16, "BLOCK_K": 32}
    y = skinny.linear(x, m.weight, m.scale, tiles=tiles)
    ref = x.float() @ m.dequantized(torch.float32).t()
    out.append([list(y.shape), str(y.dtype), (y.float() - ref).abs().max().item()])
print(json.dumps(out))
"""

# Triton's CPU interpreter has no bf16 tensor-core product (its tl.dot on bf16 is wrong), so the
# tile kernel is checked in fp32 here and in bf16 on the GPU (python -m v2bgm.bench.engine).
KERNEL_CASES = [
    ("float32", 1, False), ("float32", 2, True), ("float32", 3, True), ("float32", 4, False),
    ("float32", 5, True), ("float32", 17, False), ("float32", 33, True),
    ("bfloat16", 1, True), ("bfloat16", 2, False), ("bfloat16", 4, True),
]  # fmt: skip


def test_triton_kernels_compute_the_product_in_the_interpreter():
    got = run_interpreted(KERNEL_CHECK, KERNEL_CASES)
    for (dtype, rows, _), (shape, out_dtype, error) in zip(KERNEL_CASES, got, strict=True):
        assert shape == [rows, 40] and out_dtype == f"torch.{dtype}"
        assert error < (1e-5 if dtype == "float32" else 3e-2), (dtype, rows, error)
    assert np.isfinite([e for *_, e in got]).all()


def test_the_gemv_kernel_is_chosen_by_argument_or_environment(stage1_model, monkeypatch):
    assert StaticLlama(stage1_model).gemv == "cublas"
    assert StaticLlama(stage1_model, gemv="triton").gemv == "triton"
    monkeypatch.setenv("V2BGM_GEMV", "triton")
    assert StaticLlama(stage1_model).gemv == "triton"
    monkeypatch.setenv("V2BGM_GEMV", "magma")
    with pytest.raises(ValueError, match="gemv must be one of cublas, triton, got 'magma'"):
        StaticLlama(stage1_model)
