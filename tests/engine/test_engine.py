"""YuE's stages on the engine against the `generate`-based reference path, on tiny weights (CPU).

Greedy decoding must give exactly the reference path's tokens (stage 1 with CFG, both blocking
modes; stage 2); sampling must depend on a request's seed alone, whatever shares its batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.parity import reference
from v2bgm.composer import Cancelled
from v2bgm.engine.llama import Part, StaticLlama
from v2bgm.engine.sampling import exponential_noise
from v2bgm.yue import stage2, tokens
from v2bgm.yue.reference import GenerateStage1, GenerateStage2
from v2bgm.yue.stage1 import Stage1, Stage1Settings
from v2bgm.yue.stage2 import Stage2

SEGMENT_TOKENS = 110  # several segments in a few hundred tokens
SECTIONS = tokens.split_sections("[verse]\nlights on the water\n[chorus]\nwe run\n")


def engine(model, tokenizer, slots: int = 4, **settings) -> Stage1:
    s = Stage1Settings(max_segment_tokens=SEGMENT_TOKENS, **settings)
    return Stage1(StaticLlama(model), tokenizer, s, slots=slots)


@torch.inference_mode()
def test_forward_equals_transformers_in_any_slot(stage1_model):
    model = StaticLlama(stage1_model)
    pool = model.pool(slots=3, length=64)
    ids = torch.randint(
        0, tokens.MODEL_VOCAB_SIZE, (1, 20), generator=torch.Generator().manual_seed(0)
    )
    got = model.forward(ids, torch.arange(20)[None], [Part(pool, 1, 1, 20)])
    torch.testing.assert_close(got, stage1_model(ids).logits[:, -1], rtol=1e-5, atol=1e-5)
    # one step for slots 0..2 at once: slots 0 and 2 hold nothing of this sequence
    step = model.forward(
        torch.tensor([[5], [77], [9]]), torch.tensor([[3], [20], [7]]), [Part(pool, 0, 3, 32)]
    )
    expected = stage1_model(torch.cat([ids, torch.tensor([[77]])], 1)).logits[:, -1]
    torch.testing.assert_close(step[1:2], expected, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_forward_over_a_vocabulary_range_gives_those_logits(stage1_model):
    model = StaticLlama(stage1_model)
    first, end = tokens.codebook_range(1)[0], tokens.codebook_range(tokens.STAGE2_CODEBOOKS - 1)[1]
    ids, positions = torch.tensor([[3, 1000, 42]]), torch.arange(3)[None]
    whole = model.forward(ids, positions, [Part(model.pool(1, 8), 0, 1, 3)])
    part = model.forward(ids, positions, [Part(model.pool(1, 8), 0, 1, 3)], vocab=(first, end))
    assert part.shape == (1, end - first)
    torch.testing.assert_close(part, whole[:, first:end], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reference_blocking", [True, False], ids=["reference", "intent"])
def test_stage1_greedy_equals_generate_path(stage1_model, tokenizer, reference_blocking):
    settings = {"do_sample": False, "reference_blocking": reference_blocking}
    frames = len(SECTIONS) * SEGMENT_TOKENS // 2
    s = Stage1Settings(max_segment_tokens=SEGMENT_TOKENS, **settings)
    expected = GenerateStage1(stage1_model, tokenizer, s).generate(
        "pop piano", SECTIONS, frames, seed=11
    )
    got = engine(stage1_model, tokenizer, **settings).generate(
        "pop piano", SECTIONS, frames, seed=11
    )
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.instrumental, expected.instrumental)
    assert got.tokens == expected.tokens


def test_stage1_greedy_equals_reference_loop(stage1_model, tokenizer):
    frames = len(SECTIONS) * SEGMENT_TOKENS // 2
    got = engine(stage1_model, tokenizer, do_sample=False, reference_blocking=True).generate(
        "pop piano", SECTIONS, frames, seed=0
    )
    ref = reference.stage1(stage1_model, tokenizer, "pop piano", SECTIONS, SEGMENT_TOKENS, False)
    np.testing.assert_array_equal(got.ids, ref)


def test_stage1_context_past_the_window_refills_the_slot(stage1_model, tokenizer):
    """A context window smaller than the song: later segments drop old ones (`fit_context`),
    so the slot is refilled from position 0 — still the generate path's tokens."""
    settings = {"do_sample": False, "context_window": 400}
    frames = 4 * SEGMENT_TOKENS // 2
    s = Stage1Settings(max_segment_tokens=SEGMENT_TOKENS, **settings)
    expected = GenerateStage1(stage1_model, tokenizer, s).generate("jazz", SECTIONS, frames, seed=1)
    got = engine(stage1_model, tokenizer, **settings).generate("jazz", SECTIONS, frames, seed=1)
    np.testing.assert_array_equal(got.ids, expected.ids)


def test_stage1_sampling_depends_on_the_seed_alone(stage1_model, tokenizer):
    eng = engine(stage1_model, tokenizer, slots=4)
    alone = [eng.generate("rock guitar", SECTIONS, 80, seed=s).ids for s in (1, 2, 3)]
    jobs = eng.run([eng.job("rock guitar", SECTIONS, 80, s) for s in (3, 1, 2)])
    together = {job.seed: job.result.ids for job in jobs}
    for seed, ids in zip((1, 2, 3), alone, strict=True):
        np.testing.assert_array_equal(together[seed], ids)
    assert not np.array_equal(alone[0], alone[1])
    first, last = tokens.codebook_range(0)
    for start in np.flatnonzero(alone[0] == tokens.XCODEC_SEP):  # every segment's tokens
        end = start + 1 + np.flatnonzero(alone[0][start + 1 :] == tokens.EOA)[0]
        segment = alone[0][start + 1 : end]
        assert len(segment) and np.all((segment >= first) & (segment < last))


def test_more_requests_than_slots_wait_for_a_free_one(stage1_model, tokenizer):
    eng = engine(stage1_model, tokenizer, slots=2)
    jobs = eng.run([eng.job("pop", SECTIONS, 30, seed) for seed in range(5)])
    assert all(job.result is not None and len(job.result.vocal) == 30 for job in jobs)
    assert eng.decoder.active == 0


def test_a_cancelled_request_frees_its_slot_and_spares_the_others(stage1_model, tokenizer):
    eng = engine(stage1_model, tokenizer, slots=2)
    calls = []

    def cancel_soon(stage: str, fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 5:
            raise Cancelled("caller went away")

    expected = eng.generate("pop", SECTIONS, 40, seed=9).ids
    jobs = eng.run([eng.job("pop", SECTIONS, 40, 9), eng.job("pop", SECTIONS, 40, 5, cancel_soon)])
    assert isinstance(jobs[1].error, Cancelled) and jobs[1].result is None
    np.testing.assert_array_equal(jobs[0].result.ids, expected)
    assert eng.decoder.active == 0 and len(calls) == 5


def test_noise_is_exponential_and_a_pure_function():
    seed = torch.tensor([7, 7, 8])
    step = torch.tensor([0, 1, 0])
    ids = torch.arange(20000)[None].expand(3, -1)
    draws = exponential_noise(seed, step, ids)
    assert torch.equal(draws, exponential_noise(seed, step, ids))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert abs(draws.mean().item() - 1.0) < 0.03 and (draws > 0).all()


def test_stage2_equals_generate_path_over_tracks_and_short_chunks(stage2_model):
    rng = np.random.default_rng(0)
    chunk = tokens.STAGE2_CHUNK_FRAMES
    tracks = [rng.integers(0, 1024, chunk + 17), rng.integers(0, 1024, 9)]
    expected = [GenerateStage2(stage2_model).fill(t) for t in tracks]
    got = Stage2(StaticLlama(stage2_model), rows=4).fill_many(tracks)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)


def test_stage2_chunks_filled_in_any_groups_assemble_to_the_whole_track(stage2_model):
    # The scheduler fills a track's chunks as stage 1 makes them, beside other requests' chunks:
    # the assembled codes must be those of filling the track at once.
    rng = np.random.default_rng(2)
    chunk = tokens.STAGE2_CHUNK_FRAMES
    track = rng.integers(0, 1024, 2 * chunk + 31)
    engine = Stage2(StaticLlama(stage2_model), rows=4)
    whole = engine.fill(track)
    pieces = stage2.split(track)
    assert [len(p) for p in pieces] == [chunk, chunk, 31]
    other = rng.integers(0, 1024, 40)  # another request's chunk shares the first batch
    first = engine.fill_chunks([pieces[1], other])[0]
    rest = engine.fill_chunks([pieces[2], pieces[0]])
    np.testing.assert_array_equal(stage2.assemble([rest[1], first, rest[0]]), whole)


def test_stage2_equals_reference_per_frame_generate(stage2_model):
    rng = np.random.default_rng(1)
    cb0 = rng.integers(0, 1024, size=12)
    ref = reference.stage2_generate(
        stage2_model, tokens.codes_to_ids(cb0[None]), vocab_end=stage2_model.config.vocab_size
    )
    got = Stage2(StaticLlama(stage2_model), rows=2).fill(cb0)
    np.testing.assert_array_equal(
        got, tokens.repair_codes(tokens.ids_to_codes(tokens.unflatten_frames(ref[0], 8)))
    )
