"""What a decoding step cannot beat: the bytes it must read over the bandwidth the card delivers.

Three floors for one CFG step of an LM (two rows: the conditional and the unconditional one),
each timed in a CUDA graph (replays timed with events, warm-up excluded):

1. **plain read** (the floor the ratios use): every weight byte a step reads (every layer's
   matrices and norms, the final norm and the lm_head; not the embedding table, of which a step
   gathers two rows) divided by the read bandwidth the card measurably delivers: a bandwidth-bound
   reduction (`sum`) over a buffer of several GiB, far beyond the L2;
2. **fused GEMVs**: cuBLAS GEMVs of the engine's own fused shapes (qkv, o, gate+up, down per
   layer, and the lm_head) at batch 2: what the matrix products alone cost as the library does
   them;
3. **unfused GEMVs**: every weight matrix of the `transformers` model as its own GEMV (the
   yardstick of earlier reports, kept for continuity).

The engine's step over (1) is its distance from the memory limit; (2) - (1) is what the GEMV
kernels leave on the table; step - (2) is everything else (attention, norms, sampling, gaps).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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
    """The weights one decoding step reads, as the engine holds them (fused)."""
    tensors = [model.norm, model.lm_head]
    for layer in model.layers:
        tensors += [layer.norm1, layer.qkv, layer.o, layer.norm2, layer.gate_up, layer.down]
    return tensors


def step_bytes(model: StaticLlama) -> int:
    return sum(t.numel() * t.element_size() for t in step_tensors(model))


@torch.inference_mode()
def gemv_ms(matrices: list[torch.Tensor], rows: int = CFG_ROWS) -> float:
    """Every matrix [out, in] applied to `rows` vectors, one GEMV each, in one graph."""
    device = matrices[0].device
    inputs = {
        (m.shape[1], m.dtype): torch.randn(rows, m.shape[1], dtype=m.dtype, device=device)
        for m in matrices
    }
    outs = [torch.empty(rows, m.shape[0], dtype=m.dtype, device=device) for m in matrices]

    def all_gemvs() -> None:
        for m, out in zip(matrices, outs, strict=True):
            torch.matmul(inputs[m.shape[1], m.dtype], m.t(), out=out)

    return graph_ms(all_gemvs)


def fused_matrices(model: StaticLlama) -> list[torch.Tensor]:
    mats = [model.lm_head]
    for layer in model.layers:
        mats += [layer.qkv, layer.o, layer.gate_up, layer.down]
    return mats


def unfused_matrices(hf_model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for name, p in hf_model.named_parameters() if p.ndim == 2 and "embed" not in name]


def floors(model: StaticLlama, hf_model: torch.nn.Module, bandwidth: float) -> dict:
    """The three floors of one CFG step of `model` (ms), with what they rest on."""
    nbytes = step_bytes(model)
    plain = nbytes / bandwidth * 1000
    fused = gemv_ms(fused_matrices(model))
    unfused = gemv_ms(unfused_matrices(hf_model))
    return {
        "step_weight_gb": round(nbytes / 1e9, 3),
        "read_tb_per_s": round(bandwidth / 1e12, 3),
        "plain_read_ms": round(plain, 4),
        "fused_gemv_ms": round(fused, 4),
        "unfused_gemv_ms": round(unfused, 4),
        "fused_gemv_over_plain_read": round(fused / plain, 3),
    }
