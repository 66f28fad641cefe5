"""A decoding step's weight matrices, in the model's dtype or in FP8, and their products.

A decoding step multiplies a few rows (two per request: CFG's conditional and unconditional
one) by every weight matrix once, so its time is the bytes of those matrices over the card's
bandwidth. FP8 weights (e4m3, one fp32 scale per output channel) halve those bytes; the rows stay
in the model's dtype ("weight-only": nothing the activations carry is rounded to FP8).

On a GPU an FP8 product runs in `v2bgm.engine.skinny`'s Triton kernels, which read each FP8
weight once and convert it in registers (torch's `_scaled_mm` would also round the rows to FP8
and pad them to 16). Elsewhere (the CPU tests) it is computed from the dequantized matrix: the
same numbers, rounded in another order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PRECISIONS = ("bf16", "fp8")  # "bf16": the weights as loaded (bf16 on a GPU, fp32 on the CPU)
DEFAULT_PRECISION = "bf16"
# bf16 matrices times a few rows: cuBLAS (the default) or the Triton GEMV ($V2BGM_GEMV=triton).
# On an H200 they are within noise of each other in a step (docs/speed.md), so cuBLAS stays.
GEMV_KERNELS = ("cublas", "triton")
GEMV_ENV = "V2BGM_GEMV"
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448: a row's largest magnitude maps here
SCALE_FLOOR = 1e-12  # an all-zero row keeps a finite scale


@dataclass(frozen=True)
class Matrix:
    """A weight matrix [out, in] as a step reads it."""

    weight: torch.Tensor  # the model's dtype, or FP8 (e4m3)
    scale: torch.Tensor | None = None  # [out] fp32, FP8 only: row i is weight[i] * scale[i]

    @property
    def nbytes(self) -> int:
        extra = 0 if self.scale is None else self.scale.numel() * self.scale.element_size()
        return self.weight.numel() * self.weight.element_size() + extra

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        if self.scale is None:
            return self.weight.to(dtype)
        return (self.weight.float() * self.scale[:, None]).to(dtype)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def quantize_fp8(weight: torch.Tensor) -> Matrix:
    """Per-output-channel symmetric FP8: scale = |row|max / 448, weight / scale rounded to
    e4m3 (round to nearest even, as `Tensor.to` does)."""
    with torch.no_grad():
        w = weight.float()
        scale = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=SCALE_FLOOR)
        quantized = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return Matrix(quantized, scale.contiguous())


def as_precision(weight: torch.Tensor, precision: str) -> Matrix:
    return quantize_fp8(weight) if check_precision(precision) == "fp8" else Matrix(weight)


@torch.library.custom_op("v2bgm::skinny_linear", mutates_args=())
def skinny_linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None
) -> torch.Tensor:
    """x [..., in] (bf16/fp32) @ (weight [out, in] * scale [out]).T -> [..., out], x.dtype;
    `scale` None: a matrix in the rows' dtype.

    On a GPU: `v2bgm.engine.skinny`'s kernels, except cuBLAS for a matrix in the rows' dtype
    times more than GEMV_MAX_ROWS rows (its tiles win there). An op of its own so that
    torch.compile keeps it whole between the fused element-wise kernels, as it keeps cuBLAS's."""
    if x.is_cuda:
        from v2bgm.engine import skinny

        if scale is None and x.numel() > skinny.GEMV_MAX_ROWS * x.shape[-1]:
            return F.linear(x, weight)
        return skinny.linear(x, weight, scale)
    if scale is None:
        return F.linear(x, weight)
    return (F.linear(x, weight.to(x.dtype)).float() * scale).to(x.dtype)


@skinny_linear.register_fake
def _skinny_linear_shape(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None
) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, kernel: str = "cublas"
) -> torch.Tensor:
    """The product a step makes with one matrix (`Matrix.weight`, `Matrix.scale`). `kernel`
    (GEMV_KERNELS) for a matrix in the rows' dtype; FP8 always runs in the Triton kernels."""
    if scale is None and kernel == "cublas":
        return F.linear(x, weight)
    return skinny_linear(x, weight, scale)
