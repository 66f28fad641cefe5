"""Continuous batching of whole compositions (v2bgm.yue.scheduler) on the tiny models (CPU)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from v2bgm.composer import Busy, Cancelled, Music, MusicRequest
from v2bgm.yue.composer import YuEComposer
from v2bgm.yue.scheduler import YuEScheduler

WAIT_S = 300  # generous: a shared 2-core machine


@pytest.fixture(scope="module")
def composer(weights) -> YuEComposer:
    return YuEComposer.from_pretrained(weights, "cpu", slots=2)


class Recorder:
    """A Meter that keeps the line and the requests composing as gauges, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = self.composing = self.ended_count = 0
        self.waits: list[float] = []
        self.low = 0  # lowest value either gauge reached (never below 0)
        self.cache = self.cache_most = 0  # KV cache bytes taken, now and at most

    def queued(self) -> None:
        with self.lock:
            self.waiting += 1

    def started(self, waited_s: float) -> None:
        with self.lock:
            self.waiting -= 1
            self.composing += 1
            self.waits.append(waited_s)
            self.low = min(self.low, self.waiting)

    def ended(self) -> None:
        with self.lock:
            self.composing -= 1
            self.ended_count += 1
            self.low = min(self.low, self.composing)

    def cache_used(self, delta_bytes: float) -> None:
        with self.lock:
            self.cache += delta_bytes
            self.cache_most = max(self.cache_most, self.cache)
            self.low = min(self.low, self.cache)


def collect(scheduler: YuEScheduler, requests, progress=None):
    results: dict[int, Music | BaseException] = {}
    finished = threading.Event()

    def done_for(i):
        def done(result):
            results[i] = result
            if len(results) == len(requests):
                finished.set()

        return done

    for i, request in enumerate(requests):
        scheduler.submit(request, progress[i] if progress else None, done_for(i))
    assert finished.wait(WAIT_S)
    return [results[i] for i in range(len(requests))]


def test_concurrent_requests_equal_one_at_a_time(composer):
    requests = [MusicRequest("pop piano", 0.6 + 0.2 * i, seed=i) for i in range(4)]
    alone = [composer.compose(r) for r in requests]
    meter = Recorder()
    scheduler = YuEScheduler(composer, max_waiting=4)  # 2 slots: two wait
    scheduler.meter = meter
    try:
        together = collect(scheduler, requests)
    finally:
        scheduler.close()
    assert (len(meter.waits), meter.ended_count, meter.low) == (4, 4, 0)
    assert (meter.waiting, meter.composing, meter.cache) == (0, 0, 0)
    # two compositions' pages at most (2 slots), each a whole page or more
    page = composer.stage1.decoder.cache.page_bytes
    assert 2 * page <= meter.cache_most <= scheduler.cache_bytes
    assert meter.cache_most % page == 0
    # the last two waited for a slot: at least until a first request's stage 1 was done
    first_stage1_s = min(t.stats["stage1"].seconds for t in together if isinstance(t, Music))
    assert sorted(meter.waits)[-2] >= 0.5 * first_stage1_s
    for a, t, r in zip(alone, together, requests, strict=True):
        assert isinstance(t, Music)
        assert len(t.audio) == round(r.duration_s * t.sample_rate)
        np.testing.assert_array_equal(t.audio, a.audio)  # a request's music is its seed's alone
        assert list(t.stats) == ["stage1", "stage2", "decode"] and t.stats["stage1"].tokens > 0


@pytest.mark.parametrize("early", [False, True], ids=["after-stage1", "early"])
def test_when_chunks_go_to_stage2_and_the_music_is_unchanged(composer, early):
    # 850 frames: chunks of 300, 300 and 250. By default all three go to stage 2 in one batch
    # once stage 1 is over (one pass reads stage 2's weights for all). With `early_stage2`,
    # chunk 0 is final at frame 300, with two thirds of stage 1 to go: it is filled then, not
    # after the last token. The music is the same either way.
    request = MusicRequest("pop piano", 17.0, seed=5)
    alone = composer.compose(request)
    batches: list[list[tuple[int, bool]]] = []  # (chunk, its stage 1 over) per stage-2 batch
    fill = composer.fill_chunks

    def recording(chunks):
        batches.append([(c.index, c.composition.stage1.finished) for c in chunks])
        fill(chunks)

    composer.fill_chunks = recording
    scheduler = YuEScheduler(composer, early_stage2=early)
    try:
        (music,) = collect(scheduler, [request])
    finally:
        scheduler.close()
        del composer.fill_chunks
    assert sorted(i for batch in batches for i, _ in batch) == [0, 1, 2]
    if early:
        assert batches[0] == [(0, False)], batches
    else:
        assert batches == [[(0, True), (1, True), (2, True)]], batches
    assert isinstance(music, Music)
    np.testing.assert_array_equal(music.audio, alone.audio)
    assert music.stats["stage2"].tokens == alone.stats["stage2"].tokens == 850 * 7


def test_background_music_follows_the_plan_sections_on_the_cuts(composer):
    # 12 s with a cut at 5.0 s (and one at 5.9 s, too close to carry a section): stage 1 makes
    # a [verse] of exactly 250 frames and an [outro] of 350, the music says so, and it fades
    # out over half the outro (no click guard of 50 ms).
    request = MusicRequest("pop piano", 12.0, seed=3, cuts_s=(5.0, 5.9))
    music = composer.compose(request)
    assert [(s.label, s.start_s, s.end_s) for s in music.sections] == [
        ("[verse]", 0.0, 5.0),
        ("[outro]", 5.0, 12.0),
    ]
    rate = music.sample_rate
    fade = np.abs(music.audio[-round(3.5 * rate) :])
    assert len(music.audio) == 12 * rate and music.audio[-1] == 0.0
    head, tail = fade[: rate // 2].max(), fade[-rate // 2 :].max()
    assert tail < 0.3 * head  # still fading well before the last 50 ms
    plain = composer.compose(MusicRequest("pop piano", 12.0, seed=3))
    assert [s.label for s in plain.sections] == ["[verse]", "[outro]"]  # no cuts: 8 s + 4 s
    assert (plain.sections[0].end_s, plain.sections[1].end_s) == (8.0, 12.0)
    lyrics = composer.compose(MusicRequest("pop", 4.0, "[verse]\nla la\n[chorus]\noh", seed=1))
    assert lyrics.sections[0].label == "[verse]" and lyrics.sections[-1].end_s == 4.0


def test_beyond_slots_and_line_is_refused_at_once(composer):
    meter = Recorder()
    scheduler = YuEScheduler(composer, max_waiting=0)
    scheduler.meter = meter
    release = threading.Event()

    def hold(stage: str, fraction: float) -> None:
        release.wait(WAIT_S)

    try:
        results: list = []
        for seed in range(2):  # both slots taken, held at their first token
            scheduler.submit(MusicRequest("rock", 1.0, seed=seed), hold, results.append)
        with pytest.raises(Busy, match="capacity"):
            scheduler.submit(MusicRequest("rock", 1.0), None, results.append)
        release.set()
    finally:
        scheduler.close(timeout_s=WAIT_S)
    assert len(results) == 2 and all(isinstance(r, Music) for r in results)
    assert scheduler.admitted == 0
    assert (len(meter.waits), meter.ended_count) == (2, 2)  # the refused one never queued


def test_a_cancelled_request_ends_alone(composer):
    def cancel(stage: str, fraction: float) -> None:
        raise Cancelled("the caller went away")

    scheduler = YuEScheduler(composer, max_waiting=2)
    try:
        kept, gone = collect(
            scheduler,
            [MusicRequest("jazz", 1.0, seed=1), MusicRequest("jazz", 1.0)],
            [None, cancel],
        )
    finally:
        scheduler.close()
    assert isinstance(kept, Music) and isinstance(gone, Cancelled)
    assert composer.stage1.decoder.active == 0
