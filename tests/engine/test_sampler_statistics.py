"""The engine's sampler draws from the distribution `transformers`' own processors define.

Greedy parity (tests/engine/test_engine.py) cannot see a sampling bug; this test can: one set of
CFG logits is sampled 200,000 times (one row per seed, as requests do), and the counts are held
against the probabilities that `transformers`' RepetitionPenalty, Temperature, TopK and TopP
processors give for the same logits, by a chi-square test and a bound on total variation. The
same test rejects a sampler that is off by a little (control cases below), so it can fail.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from v2bgm.engine.sampling import RowSettings, SamplerState, next_tokens

DRAWS = 200_000
VOCAB = 96
EOS = 95
TOP_K = 50
SETTINGS = RowSettings(guidance=1.5, repetition_penalty=1.1, temperature=0.9, top_p=0.93)
P_MIN = 1e-6  # a correct sampler fails 1 run in a million
TV_MAX = 0.01


def logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    cond = torch.randn(VOCAB, generator=g)
    uncond = torch.randn(VOCAB, generator=g)
    allowed = torch.zeros(VOCAB)
    allowed[60:80] = float("-inf")  # a token mask, as stage 1's
    return cond, uncond, allowed


def seen_ids() -> torch.Tensor:
    """Ids of the context (penalised): some of the likeliest, so the penalty matters."""
    cond, uncond, _ = logits()
    ranked = (cond.log_softmax(-1) - uncond.log_softmax(-1)).argsort(descending=True)
    return ranked[[0, 3, 8, 30, 60]]


def expected_probabilities(settings: RowSettings) -> torch.Tensor:
    """`generate`'s order with transformers' own processors: CFG on log-softmaxes, repetition
    penalty over the context, the caller's mask, temperature, top-k, top-p."""
    cond, uncond, allowed = logits()
    g = settings.guidance
    scores = g * (cond.log_softmax(-1) - uncond.log_softmax(-1)) + uncond.log_softmax(-1)
    context = seen_ids()[None]
    scores = RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)(context, scores[None])
    scores = scores + allowed
    for warper in (
        TemperatureLogitsWarper(settings.temperature),
        TopKLogitsWarper(TOP_K),
        TopPLogitsWarper(settings.top_p),
    ):
        scores = warper(context, scores)
    return scores.softmax(-1)[0].double()


def sampled_counts(settings: RowSettings) -> torch.Tensor:
    cond, uncond, allowed = logits()
    state = SamplerState(DRAWS, VOCAB, torch.device("cpu"))
    state.guidance[:] = settings.guidance
    state.penalty[:] = settings.repetition_penalty
    state.temperature[:] = settings.temperature
    state.top_p[:] = settings.top_p
    state.seed[:] = torch.arange(DRAWS)  # one request per row: its own seed
    state.seen[:, seen_ids()] = True
    chosen = next_tokens(
        cond.expand(DRAWS, -1).clone(),
        uncond.expand(DRAWS, -1).clone(),
        state,
        slice(0, DRAWS),
        allowed,
        EOS,
        TOP_K,
    )
    return torch.bincount(chosen, minlength=VOCAB).double()


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's test over the ids with an expected count >= 5 (the rest pooled);
    a draw of an id of probability 0 gives p = 0."""
    if counts[probs == 0].sum() > 0:
        return 0.0
    expected = probs * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    return torch.special.gammaincc(torch.tensor(dof / 2), stat / 2).item()


def total_variation(counts: torch.Tensor, probs: torch.Tensor) -> float:
    return 0.5 * (counts / counts.sum() - probs).abs().sum().item()


@pytest.fixture(scope="module")
def counts() -> torch.Tensor:
    return sampled_counts(SETTINGS)


def test_draws_follow_transformers_processors(counts):
    probs = expected_probabilities(SETTINGS)
    assert (probs > 0).sum() >= 10  # top-p leaves a real choice, not one id
    assert chi_square_p(counts, probs) > P_MIN
    assert total_variation(counts, probs) < TV_MAX
    assert counts[60:80].sum() == 0  # the mask holds in every one of the draws


@pytest.mark.parametrize(
    "wrong",
    [
        RowSettings(guidance=1.5, repetition_penalty=1.1, temperature=1.0, top_p=0.93),
        RowSettings(guidance=1.5, repetition_penalty=1.0, temperature=0.9, top_p=0.93),
        RowSettings(guidance=1.5, repetition_penalty=1.1, temperature=0.9, top_p=0.97),
        RowSettings(guidance=1.2, repetition_penalty=1.1, temperature=0.9, top_p=0.93),
    ],
    ids=["temperature-1.0", "no-penalty", "top-p-0.97", "guidance-1.2"],
)
def test_the_same_test_rejects_a_slightly_different_distribution(counts, wrong):
    """Controls: the draws against the distribution of slightly different settings."""
    assert chi_square_p(counts, expected_probabilities(wrong)) < P_MIN


def test_the_p_value_helper_on_a_known_case():
    # 2 cells, 50/50 expected, 60/40 observed: chi2 = 4 on 1 dof, p = 0.0455
    p = chi_square_p(torch.tensor([60.0, 40.0]), torch.tensor([0.5, 0.5], dtype=torch.double))
    assert math.isclose(p, 0.04550026, rel_tol=1e-4)
