"""Continuous batching of whole compositions (v2bgm.yue.scheduler) on the tiny models (CPU)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from v2bgm.composer import Busy, Cancelled, Music, MusicRequest
from v2bgm.yue.composer import YuEComposer
from v2bgm.yue.scheduler import ComposerScheduler

WAIT_S = 300  # generous: a shared 2-core machine


@pytest.fixture(scope="module")
def composer(weights) -> YuEComposer:
    return YuEComposer.from_pretrained(weights, "cpu", slots=2)


def collect(scheduler: ComposerScheduler, requests, progress=None):
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
    scheduler = ComposerScheduler(composer, max_waiting=4)  # 2 slots: two requests wait
    try:
        together = collect(scheduler, requests)
    finally:
        scheduler.close()
    for a, t, r in zip(alone, together, requests, strict=True):
        assert isinstance(t, Music)
        assert len(t.audio) == round(r.duration_s * t.sample_rate)
        np.testing.assert_array_equal(t.audio, a.audio)  # a request's music is its seed's alone
        assert list(t.stats) == ["stage1", "stage2", "decode"] and t.stats["stage1"].tokens > 0


def test_beyond_slots_and_line_is_refused_at_once(composer):
    scheduler = ComposerScheduler(composer, max_waiting=0)
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


def test_a_cancelled_request_ends_alone(composer):
    def cancel(stage: str, fraction: float) -> None:
        raise Cancelled("the caller went away")

    scheduler = ComposerScheduler(composer, max_waiting=2)
    try:
        kept, gone = collect(
            scheduler,
            [MusicRequest("jazz", 1.0, seed=1), MusicRequest("jazz", 1.0)],
            [None, cancel],
        )
    finally:
        scheduler.close()
    assert isinstance(kept, Music) and isinstance(gone, Cancelled)
    assert composer.stage1.active == 0
