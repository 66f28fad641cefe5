"""Long music on the tiny models (CPU): stage 1 goes on section after section past its context
window, and a long track is decoded in windows that join without a seam.

Twenty minutes of music is 120,000 stage-1 tokens, seven times the 16,384-token window, and took
12 minutes of this 2-core CPU with the tiny models (src/v2bgm/yue/NOTES.md); these tests shrink the
window and the windows instead, so that the same code paths run in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from v2bgm.engine.llama import StaticLlama
from v2bgm.yue import tokens
from v2bgm.yue.composer import load_decoder
from v2bgm.yue.stage1 import Stage1, Stage1Settings
from v2bgm.yue.windows import MARGIN_FRAMES, decode_in_windows

WINDOW = 640  # stage 1's context window here: a few segments of SECTION_FRAMES
SECTION_FRAMES = 60  # 120 tokens a segment (1.2 s of music)
SECTIONS = 14  # ~1,700 generated tokens: the window slides several times


def test_stage1_keeps_the_header_and_whole_sections_past_the_window(stage1_model, tokenizer):
    """Background music planned section by section, longer than the context window: every
    segment still sees the header (the tags) and whole earlier segments, never more than the
    window holds, and the music comes out exactly as long as planned."""
    settings = Stage1Settings(context_window=WINDOW, max_segment_tokens=2 * SECTION_FRAMES)
    stage1 = Stage1(StaticLlama(stage1_model), tokenizer, settings, slots=2)
    labels = ["[verse]", "[chorus]"] * (SECTIONS // 2 - 1) + ["[bridge]", "[outro]"]
    sections = tokens.split_sections("\n".join(labels))
    budgets = [SECTION_FRAMES] * SECTIONS
    job = stage1.job("pop piano", sections, sum(budgets), seed=3, budgets=budgets)
    seen = []  # (context, segments before it, its prompt, tokens it may add)

    def recording(method):
        def call(*args):
            segment = method(*args)
            if segment is not None:
                seen.append((segment.context, list(job.segments), job.prompt, segment.max_new))
            return segment

        return call

    job.first_segment = recording(job.first_segment)
    job.segment_done = recording(job.segment_done)
    with torch.inference_mode():
        stage1.run([job])
    assert job.error is None and job.result is not None
    assert len(job.result.instrumental) == sum(budgets)
    assert job.made_per_segment == budgets
    assert len(seen) == SECTIONS
    end_len = len(tokenizer.encode(tokens.END_OF_SEGMENT))
    dropped = []
    for context, earlier, prompt, want in seen:
        assert len(context) + want <= WINDOW
        assert context[: len(job.header)] == job.header  # the tags are always seen
        assert context[len(context) - len(prompt) :] == prompt
        kept = context[len(job.header) : len(context) - len(prompt)]
        options = {
            k: [i for seg in earlier[k:] for i in seg][end_len if 0 < k < len(earlier) else 0 :]
            for k in range(len(earlier) + 1)
        }
        first_kept = [k for k, tail in options.items() if tail == kept]
        assert first_kept, "the context holds part of a segment"
        dropped.append(min(first_kept))
    assert max(dropped) > 0  # the window did slide
    assert dropped == sorted(dropped)  # over whole segments, oldest first
    assert all(len(seen[i][1]) - dropped[i] >= 2 for i in range(2, SECTIONS))  # recent ones stay


class Local:
    """A local decoder that drops its last `short` samples, as X-Codec does (8 at 16 kHz)."""

    def __init__(self, hop: int, short: int = 0) -> None:
        self.hop, self.short, self.calls = hop, short, 0

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        self.calls += 1
        frames = codes.astype(np.float64).sum(0)
        smooth = np.convolve(np.pad(frames, 3, mode="edge"), np.ones(7) / 7, mode="valid")
        audio = np.repeat(smooth, self.hop) * np.tile(np.linspace(0.5, 1.0, self.hop), len(frames))
        return audio[: len(audio) - self.short]  # reach: 3 frames each way


@pytest.mark.parametrize("short", [0, 8])
@pytest.mark.parametrize("frames", [999, 1000, 1001, 2345])
def test_windows_join_into_the_whole_tracks_samples(frames, short):
    codes = np.random.default_rng(frames).integers(0, 1024, (8, frames))
    whole = Local(hop=4, short=short)(codes)
    decoder = Local(hop=4, short=short)
    parts = decode_in_windows(decoder, codes, 4, window=1000, margin=10)
    np.testing.assert_array_equal(parts, whole)
    assert decoder.calls == -(-frames // 1000)


def test_a_track_within_one_window_is_decoded_whole():
    codes = np.zeros((8, 50), np.int64)
    decoder = Local(hop=2)
    assert decode_in_windows(decoder, codes, 2, window=50, margin=0).shape == (100,)
    with pytest.raises(ValueError, match="margin"):
        decode_in_windows(decoder, np.zeros((8, 51), np.int64), 2, window=50, margin=0)


def test_xcodec_and_the_vocoder_in_windows_equal_the_whole_track(weights: Path):
    """The tiny decoders have the real ones' kernels, dilations and hops: MARGIN_FRAMES hides
    the windows' edges (the full-size vocoder reaches further: 8 blocks, not 2; the margin covers
    both)."""
    codec, upsampler = load_decoder(weights, "cpu")
    codes = np.random.default_rng(0).integers(0, 1024, (8, 1100))
    for decode, hop in (
        (codec.decode, codec.sample_rate // tokens.FRAME_RATE),
        (lambda c: upsampler(codec.embeddings(c))[0], upsampler.samples_per_frame),
    ):
        whole = decode(codes)
        parts = decode_in_windows(decode, codes, hop, window=400, margin=MARGIN_FRAMES)
        assert parts.shape == whole.shape
        np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
