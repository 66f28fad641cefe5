"""Next-token choice on the device, per row, in the order `transformers`' `generate` applies it.

YuE's stage 1 calls `generate` with CFG, a repetition penalty, `min_new_tokens`, a token mask,
temperature, top-k and top-p; `generate` applies them as: CFG (log-softmax of both branches,
`g * (cond - uncond) + uncond`), repetition penalty over the whole input, <EOS> blocked before
`min_new_tokens`, the caller's mask, then (sampling only) temperature, top-k, top-p. Every
per-request setting is a tensor row, so requests with different settings share one step, and
nothing here reads back to the host: the step can be a CUDA graph.

Sampling draws from the kept candidates with the exponential race (argmax p / E, E ~ Exp(1)),
E coming from a hash of (seed, step, token): a request's tokens depend on its seed alone, not on
which other requests share its batch, and no generator state is shared between rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF


@dataclass
class RowSettings:
    """One request's decoding settings, as `generate` takes them."""

    guidance: float = 1.0  # 1: no CFG
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    min_new_tokens: int = 0
    seed: int = 0


class SamplerState:
    """Per-row tensors of a batch of `rows` sequences over a `vocab`-sized vocabulary."""

    def __init__(self, rows: int, vocab: int, device: torch.device) -> None:
        f32 = {"dtype": torch.float32, "device": device}
        i64 = {"dtype": torch.long, "device": device}
        self.guidance = torch.ones(rows, **f32)
        self.penalty = torch.ones(rows, **f32)
        self.temperature = torch.ones(rows, **f32)
        self.top_p = torch.ones(rows, **f32)
        self.greedy = torch.zeros(rows, dtype=torch.bool, device=device)
        self.min_new = torch.zeros(rows, **i64)
        self.seed = torch.zeros(rows, **i64)
        self.step = torch.zeros(rows, **i64)  # tokens drawn by the request so far: the noise index
        self.generated = torch.zeros(rows, **i64)  # tokens of the current `generate` call
        self.seen = torch.zeros((rows, vocab), dtype=torch.bool, device=device)  # penalty set

    def reset(self, row: int, settings: RowSettings, context: torch.Tensor) -> None:
        """Start a `generate` call on `row` whose input ids are `context` (on the device)."""
        self.guidance[row] = settings.guidance
        self.penalty[row] = settings.repetition_penalty
        self.temperature[row] = settings.temperature
        self.top_p[row] = settings.top_p
        self.greedy[row] = settings.greedy
        self.min_new[row] = settings.min_new_tokens
        self.seed[row] = settings.seed & _MASK32
        self.generated[row] = 0
        self.seen[row] = False
        self.seen[row, context] = True

    def tensors(self) -> list[torch.Tensor]:
        return [v for v in vars(self).values() if isinstance(v, torch.Tensor)]


def next_tokens(
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    state: SamplerState,
    rows: slice,
    allowed: torch.Tensor,
    eos: int,
    top_k: int,
) -> torch.Tensor:
    """fp32 logits [R, V] (and the unconditional branch's, or None) -> chosen ids [R]; then
    records them in the state (penalty set, counters)."""
    g = state.guidance[rows, None]
    scores = cond
    if uncond is not None:  # `generate` skips CFG, and its log-softmax, at a scale of 1
        log_cond, log_uncond = cond.log_softmax(-1), uncond.log_softmax(-1)
        guided = g * (log_cond - log_uncond) + log_uncond
        scores = torch.where(g == 1.0, cond, guided)
    p = state.penalty[rows, None]
    penalised = torch.where(scores < 0, scores * p, scores / p)
    scores = torch.where(state.seen[rows], penalised, scores)
    early = state.generated[rows] < state.min_new[rows]
    scores[:, eos] = torch.where(early, float("-inf"), scores[:, eos])
    scores = scores + allowed
    greedy = scores.argmax(-1)
    sampled = _sample(scores, state, rows, top_k)
    chosen = torch.where(state.greedy[rows], greedy, sampled)
    state.seen[rows].scatter_(1, chosen[:, None], True)  # in place, through the view
    state.generated[rows] += 1
    state.step[rows] += 1
    return chosen


def _sample(scores: torch.Tensor, state: SamplerState, rows: slice, top_k: int) -> torch.Tensor:
    """Temperature, top-k, top-p, then one draw among the kept candidates."""
    scaled = scores / state.temperature[rows, None]
    values, ids = scaled.topk(top_k, dim=-1)  # sorted, highest first
    probs = values.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass of the higher-ranked candidates
    kept = torch.where(before < state.top_p[rows, None], probs, torch.zeros_like(probs))
    race = kept / exponential_noise(state.seed[rows], state.step[rows], ids)
    return ids.gather(-1, race.argmax(-1, keepdim=True))[:, 0]


def exponential_noise(seed: torch.Tensor, step: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Exp(1) draws [R, K], a pure function of (seed, step, token id): a 32-bit integer hash
    (murmur3's finaliser) mapped into (0, 1)."""
    x = (seed[:, None] * 0x9E3779B1 + step[:, None] * 0x85EBCA77 + ids * 0xC2B2AE3D) & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    x = x ^ (x >> 16)
    uniform = (x.double() + 0.5) / 2.0**32
    return (-torch.log(uniform)).float()
