"""Decode steps replayed as CUDA graphs: one capture per shape, made the first time it is needed.

A step is a function of the engine's persistent tensors only (tokens, positions, caches, sampler
state), so replaying its graph is the step. On the CPU the function simply runs.

Warming a step up before its capture runs it for real, and a step mutates state (positions,
counters, the caches at the current positions); the tensors in `state` are saved before the
warm-up and put back after it, so a capture never advances anything. (The cache writes it leaves
behind are the ones the real step makes at the same positions.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

Step = Callable[[], None]
WARMUP_RUNS = 2  # cuBLAS/SDPA pick their kernels on a side stream before the capture


class StepGraphs:
    def __init__(self, device: torch.device, state: Callable[[], list[torch.Tensor]]) -> None:
        self.enabled = device.type == "cuda"
        self.state = state
        self.graphs: dict[Hashable, torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.enabled else None

    def run(self, key: Hashable, build: Callable[[], Step]) -> None:
        """Run the step `build()` makes for shape `key` (captured on first use)."""
        if not self.enabled:
            build()()
            return
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self._capture(build())
        graph.replay()

    def capture(self, key: Hashable, build: Callable[[], Step]) -> bool:
        """Capture the step for shape `key` now without running it (GPU only); whether a new
        graph was made."""
        if not self.enabled or key in self.graphs:
            return False
        self.graphs[key] = self._capture(build())
        return True

    def _capture(self, step: Step) -> torch.cuda.CUDAGraph:
        saved = [t.clone() for t in self.state()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                step()
        torch.cuda.current_stream().wait_stream(side)
        for tensor, copy in zip(self.state(), saved, strict=True):
            tensor.copy_(copy)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread (stage 2 on its own stream) may use CUDA meanwhile
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            step()
        return graph

    def __len__(self) -> int:
        return len(self.graphs)
