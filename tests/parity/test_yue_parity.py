"""Our YuE stages against the reference's own loops (tests/parity/reference.py) on tiny weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.parity import reference
from v2bgm.yue import tokens
from v2bgm.yue.reference import GenerateStage1, GenerateStage2
from v2bgm.yue.stage1 import Stage1Settings

SEGMENT_TOKENS = 110  # short segments keep the reference's prefix recomputation affordable
SECTIONS = tokens.split_sections("[verse]\nlights on the water\n[chorus]\nwe run\n")


def test_first_segment_prompt_token_by_token(tokenizer):
    enc = tokenizer.encode
    prompt = tokens.stage1_segment_prompt(enc, SECTIONS[0], tokens.header_text("pop", SECTIONS))
    header = (
        "Generate music from the given lyrics segment by segment.\n[Genre] pop\n"
        "[verse]\nlights on the water\n\n\n[chorus]\nwe run\n\n"
    )
    expected = [*enc(header), *enc("[start_of_segment]"), *enc("[verse]\nlights on the water\n\n")]
    assert prompt == [*expected, 32001, 32016]
    assert all(i < tokens.TEXT_VOCAB_SIZE for i in expected)
    later = tokens.stage1_segment_prompt(enc, SECTIONS[1])
    assert later == [
        *enc("[end_of_segment]"),
        *enc("[start_of_segment]"),
        *enc(SECTIONS[1]),
        32001,
        32016,
    ]


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_stage1_matches_reference_loop(stage1_model, tokenizer, do_sample):
    settings = Stage1Settings(
        max_segment_tokens=SEGMENT_TOKENS, do_sample=do_sample, reference_blocking=True
    )
    ours = GenerateStage1(stage1_model, tokenizer, settings)
    frames = len(SECTIONS) * SEGMENT_TOKENS // 2
    out = ours.generate("pop piano", SECTIONS, frames, seed=11)
    torch.manual_seed(11)
    ref = reference.stage1(
        stage1_model, tokenizer, "pop piano", SECTIONS, SEGMENT_TOKENS, do_sample
    )
    np.testing.assert_array_equal(out.ids, ref)


def test_stage1_intent_allows_only_codebook0_and_eoa(stage1_model, tokenizer):
    ours = GenerateStage1(
        stage1_model, tokenizer, Stage1Settings(max_segment_tokens=SEGMENT_TOKENS)
    )
    out = ours.generate("pop piano", SECTIONS[:1], SEGMENT_TOKENS // 2, seed=3)
    generated = out.ids[np.flatnonzero(out.ids == tokens.XCODEC_SEP)[0] + 1 :]
    first, last = tokens.codebook_range(0)
    assert np.all(((generated >= first) & (generated < last)) | (generated == tokens.EOA))
    assert out.vocal.min() >= 0 and out.vocal.max() < tokens.CODEBOOK_SIZE


def test_stage2_matches_reference_per_frame_generate(stage2_model):
    rng = np.random.default_rng(0)
    cb0 = rng.integers(*tokens.codebook_range(0), size=(2, 12))
    vocab = stage2_model.config.vocab_size
    ref = reference.stage2_generate(stage2_model, cb0, vocab_end=vocab)
    ours = GenerateStage2(stage2_model)._teacher_force(cb0)
    for row in range(2):
        np.testing.assert_array_equal(ours[row], tokens.unflatten_frames(ref[row], 8))


def test_context_keeps_header_and_whole_recent_segments():
    from v2bgm.yue.stage1 import fit_context

    header, end = [1] * 10, 2
    segments = [[5] * 30, [7, 7] + [6] * 28, [7, 7] + [8] * 28]  # later ones open with END (7 7)
    prompt = [7, 7, 9, 9]
    everything = [i for seg in segments for i in seg]
    assert fit_context(header, segments, prompt, 200, end) == header + everything + prompt
    # Room for one segment: the last, without its leading [end_of_segment], after the header.
    assert fit_context(header, segments, prompt, 50, end) == header + [8] * 28 + prompt
    # Room for two.
    assert (
        fit_context(header, segments, prompt, 75, end)
        == header + [6] * 28 + [7, 7] + [8] * 28 + prompt
    )
    # No room for any: header and prompt alone.
    assert fit_context(header, segments, prompt, 20, end) == header + prompt
