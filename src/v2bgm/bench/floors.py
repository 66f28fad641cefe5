"""What a decoding step cannot beat: the bytes it must read over the bandwidth the card delivers.

Three floors for one CFG step of an LM (two rows: the conditional and the unconditional one),
each timed in a CUDA graph (replays timed with events, warm-up excluded):

1. **plain read** (the floor the ratios use): every weight byte a step reads (every layer's
   matrices and norms, the final norm and the lm_head; not the embedding table, of which a step
   gathers two rows) divided by the read bandwidth the card measurably delivers: a bandwidth-bound
   reduction (`sum`) over a buffer of several GiB, far beyond the L2;
2. **fused GEMVs**: the products of the engine's own fused shapes (qkv, o, gate+up, down per
   layer, and the lm_head) at batch 2 as the engine makes them (cuBLAS for bf16, the Triton
   kernels of v2bgm.engine.skinny for FP8): what the matrix products alone cost; for bf16 the
   Triton kernels' time is reported beside (`skinny_gemv_ms`);
3. **unfused GEMVs**: every weight matrix of the `transformers` model as its own GEMV (the
   yardstick of earlier reports, kept for continuity).

The engine's step over (1) is its distance from the memory limit; (2) - (1) is what the GEMV
kernels leave on the table; step - (2) is everything else (attention, norms, sampling, gaps).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from v2bgm.engine.linear import Matrix
from v2bgm.engine.llama import StaticLlama

READ_BUFFER_GIB = 4.0  # 30x an H200's L2: the reduction streams from HBM
REPLAYS = 50
CFG_ROWS = 2


def graph_ms(work: Callable[[], None], replays: int = REPLAYS) -> float:
    """Milliseconds per replay of `work` captured as one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: library handles, kernel choice
        work()
        work()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays


@torch.inference_mode()
def read_bandwidth(device: torch.device, gib: float = READ_BUFFER_GIB) -> float:
    """Bytes per second a bandwidth-bound reduction reads from the card's memory."""
    buffer = torch.ones(int(gib * 2**30) // 2, dtype=torch.bfloat16, device=device)
    total = torch.empty((), dtype=torch.float32, device=device)

    def read() -> None:
        torch.sum(buffer, dim=0, dtype=torch.float32, out=total)

    ms = graph_ms(read)  # the buffer is freed on return
    return buffer.numel() * buffer.element_size() / (ms / 1000)


def step_tensors(model: StaticLlama) -> list[torch.Tensor]:
    """The weights one decoding step reads, as the engine holds them (fused; FP8 with scales)."""
    tensors = [model.norm]
    for layer in model.layers:
        tensors += [layer.norm1, layer.norm2]
    for matrix in fused_matrices(model):
        tensors += [matrix.weight] + ([] if matrix.scale is None else [matrix.scale])
    return tensors


def step_bytes(model: StaticLlama) -> int:
    return sum(t.numel() * t.element_size() for t in step_tensors(model))


@torch.inference_mode()
def gemv_ms(matrices: list[Matrix], rows: int = CFG_ROWS, skinny: bool = False) -> float:
    """Every matrix [out, in] applied to `rows` vectors, one product each, in one graph: through
    cuBLAS (bf16), or the Triton kernels (`skinny`, and always for FP8)."""
    from v2bgm.engine import skinny as kernels

    device = matrices[0].weight.device
    dtype = torch.bfloat16
    inputs = {m.weight.shape[1]: torch.randn(rows, m.weight.shape[1], dtype=dtype, device=device)
              for m in matrices}  # fmt: skip
    outs = [torch.empty(rows, m.weight.shape[0], dtype=dtype, device=device) for m in matrices]

    def all_gemvs() -> None:
        for m, out in zip(matrices, outs, strict=True):
            x = inputs[m.weight.shape[1]]
            if skinny or m.scale is not None:
                out.copy_(kernels.linear(x, m.weight, m.scale))
            else:
                torch.matmul(x, m.weight.t(), out=out)

    return graph_ms(all_gemvs)


def fused_matrices(model: StaticLlama) -> list[Matrix]:
    mats = [model.lm_head]
    for layer in model.layers:
        mats += [layer.qkv, layer.o, layer.gate_up, layer.down]
    return mats


def unfused_matrices(hf_model: torch.nn.Module) -> list[Matrix]:
    return [
        Matrix(p) for name, p in hf_model.named_parameters() if p.ndim == 2 and "embed" not in name
    ]


def floors(model: StaticLlama, hf_model: torch.nn.Module | None, bandwidth: float) -> dict:
    """The floors of one CFG step of `model` (ms), with what they rest on. `hf_model`: the
    `transformers` model, for the unfused yardstick (None: not measured)."""
    nbytes = step_bytes(model)
    plain = nbytes / bandwidth * 1000
    fused = gemv_ms(fused_matrices(model))
    report = {
        "precision": model.precision,
        "step_weight_gb": round(nbytes / 1e9, 3),
        "read_tb_per_s": round(bandwidth / 1e12, 3),
        "plain_read_ms": round(plain, 4),
        "fused_gemv_ms": round(fused, 4),
        "fused_gemv_over_plain_read": round(fused / plain, 3),
    }
    if model.precision != "fp8":
        skinny = gemv_ms(fused_matrices(model), skinny=True)
        report["skinny_gemv_ms"] = round(skinny, 4)
        report["skinny_gemv_over_plain_read"] = round(skinny / plain, 3)
    if hf_model is not None:
        report["unfused_gemv_ms"] = round(gemv_ms(unfused_matrices(hf_model)), 4)
    return report
