"""The captioner on tiny random weights: answers always parse, steering holds, true timestamps."""

from __future__ import annotations

import re

import numpy as np
import pytest
from v2bgm_client.video import sample_indices
from v2bgm_contract import interface as contract

from v2bgm.tags import FAMILIES, UnknownTag, families_for, resolve, vocabulary
from v2bgm.videollama3 import prompt
from v2bgm.videollama3.captioner import (
    MAX_FRAMES_PER_FORWARD,
    CaptionRequest,
    Description,
    VideoCaptioner,
    frame_times,
)

SEEDS = 100
BATCH = contract.CAPTIONER_MAX_BATCH  # the largest batch the dynamic batcher hands the captioner


@pytest.fixture(scope="module")
def captioner(weights) -> VideoCaptioner:
    return VideoCaptioner.from_pretrained(weights)


def random_request(seed: int) -> CaptionRequest:
    """A random video and random steering: the model's answers vary with both."""
    rng = np.random.default_rng(seed)
    n, h, w = rng.integers(1, 9), rng.integers(16, 97), rng.integers(16, 97)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    vocals = bool(rng.integers(2))
    families = families_for(vocals)
    fixed = ()
    if rng.integers(2):
        family = families[rng.integers(len(families))]
        fixed = (str(rng.choice(vocabulary()[family])),)
    return CaptionRequest(
        frames,
        fps=float(rng.choice([0.5, 1.0, 2.0])),
        vocals=vocals,
        duration_s=float(rng.integers(5, 61)),  # up to 2 lyrics sections keeps the test short
        hint=["", "upbeat, no drums", "slow and dark"][rng.integers(3)],
        fixed_tags=fixed,
    )


def test_every_answer_is_valid_for_100_seeds(captioner):
    vocab = vocabulary()
    requests = [random_request(seed) for seed in range(SEEDS)]
    answers = []
    for start in range(0, SEEDS, BATCH):
        answers += captioner.describe_batch(requests[start : start + BATCH])
    for request, answer in zip(requests, answers, strict=True):
        families = families_for(request.vocals)
        assert answer.caption and answer.caption.isprintable() and "\n" not in answer.caption
        assert len(answer.tags) == len(families)
        for family, tag in zip(families, answer.tags, strict=True):
            assert tag in vocab[family], (family, tag)
        for family, tag in request.fixed.items():
            assert answer.tags[families.index(family)] == tag
        if request.vocals:
            labels = [line for line in answer.lyrics.splitlines() if line.startswith("[")]
            assert labels == [f"[{s}]" for s in prompt.section_labels(request.duration_s)]
            sections = answer.lyrics.split("\n\n")
            assert all(len(s.splitlines()) == 1 + prompt.LYRIC_LINES for s in sections)
        else:
            assert answer.lyrics == ""


def test_batch_gives_the_answers_of_single_requests(captioner):
    requests = [random_request(seed) for seed in (3, 4, 5)]
    assert captioner.describe_batch(requests) == [
        captioner.describe_batch([r])[0] for r in requests
    ]


def test_a_batch_past_the_frame_budget_is_split_into_calls(captioner, monkeypatch):
    requests = [random_request(seed) for seed in (3, 4, 5)]
    whole = captioner.describe_batch(requests)
    calls: list[int] = []
    generate = captioner._generate
    monkeypatch.setattr(captioner, "_generate", lambda rs: calls.append(len(rs)) or generate(rs))
    frames = [len(r.frames) for r in requests]
    monkeypatch.setattr(captioner, "max_frames_per_forward", frames[0] + frames[1])
    assert captioner.describe_batch(requests) == whole  # same answers, in order
    assert calls == [2, 1]
    calls.clear()
    monkeypatch.setattr(captioner, "max_frames_per_forward", 1)  # below one request: alone
    assert captioner.describe_batch(requests) == whole
    assert calls == [1, 1, 1]


# The dynamic batcher's largest batch of videos of one length, as the client samples them (1 frame
# a second up to MAX_FRAMES): the frames of each `generate` call, in order, for a batch of 8.
@pytest.mark.parametrize(
    ("seconds", "calls"),
    [(10, [80]), (30, [240]), (45, [360]), (60, [360, 120]), (180, [360, 360, 360, 360])],
)
def test_the_largest_batch_is_split_by_frames(captioner, monkeypatch, seconds, calls):
    """What bounds the captioner's memory is the frames of one call, not the batch size."""
    frames = min(int(seconds * contract.SAMPLE_FPS), contract.MAX_FRAMES)
    requests = [
        CaptionRequest(np.zeros((frames, 16, 16, 3), np.uint8), contract.SAMPLE_FPS, hint=str(i))
        for i in range(contract.CAPTIONER_MAX_BATCH)
    ]
    seen: list[int] = []

    def generate(group: list[CaptionRequest]) -> list[Description]:
        seen.append(sum(len(r.frames) for r in group))
        return [Description(caption=r.hint, tags=()) for r in group]

    monkeypatch.setattr(captioner, "_generate", generate)
    assert captioner.max_frames_per_forward == MAX_FRAMES_PER_FORWARD
    answers = captioner.describe_batch(requests)
    assert [a.caption for a in answers] == [r.hint for r in requests]  # each its own, in order
    assert seen == calls


@pytest.mark.parametrize(("fps", "stamps"), [(1.0, "0.5 1.5 2.5 3.5"), (0.5, "1.0 3.0 5.0 7.0")])
def test_prompt_stamps_each_frame_with_its_own_time(captioner, fps, stamps):
    """The client takes frame i from the middle of its interval, (i + 0.5) / fps; the prompt
    says so (it said i / fps, half an interval early, before)."""
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    processor = captioner.processor
    text = processor.apply_chat_template(
        prompt.messages(False, 30.0), add_generation_prompt=True, tokenize=False
    )
    meta = frame_times(4, fps)
    ids = processor(text=[text], videos=[frames], video_metadata=[meta])["input_ids"][0]
    expanded = processor.tokenizer.decode(ids)
    assert re.findall(r"Time ([0-9.]+)s:", expanded) == stamps.split()


def test_the_client_samples_where_the_prompt_says():
    """Source frame of sample i over its time: (i + 0.5) / rate, as frame_times stamps it."""
    indices, rate = sample_indices(n_frames=300, src_fps=30.0, fps=1.0)
    np.testing.assert_allclose(indices / 30.0, (np.arange(len(indices)) + 0.5) / rate)
    indices, rate = sample_indices(n_frames=3000, src_fps=30.0, fps=1.0, max_frames=50)
    np.testing.assert_allclose(indices / 30.0, (np.arange(50) + 0.5) / rate, atol=1 / 30)


def test_hint_and_fixed_tags_go_into_the_prompt():
    user = prompt.messages(True, 70.0, "no drums", ("jazz",))[1]["content"][1]["text"]
    assert "no drums" in user and "jazz" in user and "3 sections" in user


def test_resolve_tags():
    assert resolve(["JAZZ", " piano "], vocals=False) == {"genre": "jazz", "instrument": "Piano"}
    assert set(resolve(["female", "airy vocal"], vocals=True)) == {"gender", "timbre"}
    with pytest.raises(UnknownTag, match="near: 'jazz'"):
        resolve(["jaz"], vocals=False)
    with pytest.raises(UnknownTag, match="vocal tag"):
        resolve(["female"], vocals=False)
    with pytest.raises(UnknownTag, match="more than one genre"):
        resolve(["jazz", "blues", "pop", "rock", "folk"], vocals=False)


def test_vocabulary_is_clean():
    vocab = vocabulary()
    assert tuple(vocab) == FAMILIES
    for tags in vocab.values():
        assert all(t == " ".join(t.split()) and t for t in tags)
        assert len({t.lower() for t in tags}) == len(tags)


def test_the_static_cache_gives_the_dynamic_caches_answers(weights, captioner):
    # $V2BGM_CAPTIONER_CACHE=static decodes on a static cache (compiled on a GPU); here, in fp32
    # and not compiled, both caches must give the same tokens, in a batch of ragged prompts too.
    static = VideoCaptioner.from_pretrained(weights)
    static.cache = "static"
    requests = [random_request(seed) for seed in (3, 4, 5)]
    assert captioner.cache == "dynamic"  # the default
    assert static.describe_batch(requests) == captioner.describe_batch(requests)
    assert static.describe(requests[0].frames, requests[0].fps) == captioner.describe(
        requests[0].frames, requests[0].fps
    )


def test_an_unknown_cache_is_refused(weights, monkeypatch):
    monkeypatch.setenv("V2BGM_CAPTIONER_CACHE", "paged")
    with pytest.raises(ValueError, match="captioner cache must be one of dynamic, static"):
        VideoCaptioner.from_pretrained(weights)
