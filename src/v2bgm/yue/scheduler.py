"""Many compositions at once on one device: continuous batching of YuE's stages.

One thread owns stage 1: requests join its engine between steps (a slot each) and leave it when
done or cancelled, so a long request never holds a short one back. A second thread, on its own
CUDA stream, runs stage 2 and decoding of whatever stage 1 finished, so that work overlaps the
other requests' stage-1 steps instead of stopping them; requests that finish stage 1 close
together share stage 2's steps (it costs ~300 sequential frames whatever the length, so one
request after another would queue them). Callers submit and get a callback.

Admission is bounded: past `slots` requests decoding and `max_waiting` waiting for a slot, a
request is refused at once (`Busy`), which the served model answers as UNAVAILABLE for clients
to retry elsewhere or later.

A `Meter` hears of each request joining the line, taking a slot and being answered: the served
model records these as its metrics (v2bgm.triton.metrics), since Triton's own per-request
metrics end when `execute` hands the request over.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from v2bgm.composer import Busy, Cancelled, Music, MusicRequest, Progress, StageStats
from v2bgm.engine.stage1 import Stage1Engine, Stage1Job
from v2bgm.yue.composer import YuEComposer

Done = Callable[[Music | BaseException], None]
IDLE_WAIT_S = 0.05  # how long the stage-1 thread sleeps on an empty queue between checks


class Meter(Protocol):
    """What the scheduler reports, from whichever thread (v2bgm.triton.metrics.ModelMetrics)."""

    def queued(self) -> None:
        """A request joined the line for a slot."""

    def started(self, waited_s: float) -> None:
        """A request took a slot after `waited_s` seconds in the line."""

    def ended(self) -> None:
        """A started request was answered (music or error)."""


class NoMeter:
    """Reports nowhere (the default)."""

    def queued(self) -> None:
        pass

    def started(self, waited_s: float) -> None:
        pass

    def ended(self) -> None:
        pass


@dataclass
class _Work:
    request: MusicRequest
    progress: Progress | None
    done: Done
    job: Stage1Job | None = None
    plan: tuple = ()
    started: float = field(default_factory=time.perf_counter)  # submitted, then: took a slot
    stage1_s: float = 0.0


class ComposerScheduler:
    def __init__(
        self, composer: YuEComposer, max_waiting: int = 8, meter: Meter | None = None
    ) -> None:
        if not isinstance(composer.stage1, Stage1Engine):
            raise TypeError("continuous batching needs the engine's stage 1")
        self.composer = composer
        self.engine: Stage1Engine = composer.stage1
        self.max_waiting = max_waiting
        self.meter: Meter = meter or NoMeter()
        self.incoming: queue.Queue[_Work] = queue.Queue()
        self.finishing: queue.Queue[_Work | None] = queue.Queue()
        self.lock = threading.Lock()
        self.admitted = 0  # submitted and not yet answered
        self.running = True
        device = self.engine.model.device
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.threads = [
            threading.Thread(target=self._stage1_loop, name="yue-stage1", daemon=True),
            threading.Thread(target=self._finish_loop, name="yue-stage2", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    @property
    def capacity(self) -> int:
        return self.engine.slots + self.max_waiting

    def submit(self, request: MusicRequest, progress: Progress | None, done: Done) -> None:
        """Queue a composition; `done(music or error)` is called from a worker thread."""
        with self.lock:
            if not self.running:
                raise Busy("the composer is shutting down")
            if self.admitted >= self.capacity:
                raise Busy(
                    f"the composer is at capacity ({self.engine.slots} composing, "
                    f"{self.max_waiting} waiting): retry later"
                )
            self.admitted += 1
        self._measure(self.meter.queued)
        self.incoming.put(_Work(request, progress, done))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking requests; those admitted are still answered (within `timeout_s`)."""
        with self.lock:
            self.running = False
        for thread in self.threads:  # stage 1 drains, then tells stage 2 to stop
            thread.join(timeout_s)

    # -- stage 1 --------------------------------------------------------------------------------
    def _stage1_loop(self) -> None:
        waiting: list[_Work] = []
        decoding: list[_Work] = []
        with torch.inference_mode():
            while self.running or decoding or waiting:
                block = not (decoding or waiting) and self.running
                with contextlib.suppress(queue.Empty):
                    waiting.append(self.incoming.get(timeout=IDLE_WAIT_S if block else 0))
                    while True:
                        waiting.append(self.incoming.get_nowait())
                while waiting and self.engine.free_slots():
                    work = waiting.pop(0)
                    self._admit(work)
                    decoding.append(work)
                if self.engine.active:
                    self.engine.step()
                else:
                    self.engine.flush()
                for work in [w for w in decoding if w.job is not None and w.job.finished]:
                    decoding.remove(work)
                    work.stage1_s = time.perf_counter() - work.started
                    self._stage1_done(work)
        self.finishing.put(None)

    def _admit(self, work: _Work) -> None:
        self._measure(self.meter.started, time.perf_counter() - work.started)
        sections, frames, instrumental_only = self.composer.plan(work.request)
        work.plan = (frames, instrumental_only)
        work.started = time.perf_counter()
        r = work.request
        work.job = Stage1Job(r.tags, sections, frames, r.seed, work.progress)
        self.engine.add(work.job)

    def _stage1_done(self, work: _Work) -> None:
        assert work.job is not None
        if work.job.error is not None:
            self._answer(work, work.job.error)
        else:
            self.finishing.put(work)

    # -- stage 2 and decoding -------------------------------------------------------------------
    def _finish_loop(self) -> None:
        """Stage 2 for every request stage 1 has finished since the last round, in one batch of
        chunks (rows), then each request's decoding and answer."""
        stream = torch.cuda.stream(self.side) if self.side is not None else contextlib.nullcontext()
        with torch.inference_mode(), stream:
            stop = False
            while not stop:
                batch = [self.finishing.get()]
                with contextlib.suppress(queue.Empty):
                    while True:
                        batch.append(self.finishing.get_nowait())
                stop = None in batch
                works = [w for w in batch if w is not None]
                if works:
                    self._finish(works)

    def _finish(self, works: list[_Work]) -> None:
        tracks: list[tuple[int, str, np.ndarray]] = []  # (work, track name, codebook 0)
        for i, work in enumerate(works):
            assert work.job is not None and work.job.result is not None
            for name, codes0 in self.composer.tracks(work.job.result, work.plan[1]).items():
                tracks.append((i, name, codes0))
        cancelled: dict[int, Cancelled] = {}

        def progress(stage: str, fraction: float) -> None:  # a cancel drops one request
            for i, work in enumerate(works):
                if work.progress is not None and i not in cancelled:
                    try:
                        work.progress(stage, fraction)
                    except Cancelled as exc:
                        cancelled[i] = exc.with_traceback(None)
            if len(cancelled) == len(works):
                raise Cancelled("every request of this stage-2 batch was cancelled")

        clock = time.perf_counter()
        try:
            codes = self.composer.stage2_many([t[2] for t in tracks], progress)
        except Exception as exc:
            for i, work in enumerate(works):
                self._answer(work, cancelled.get(i) or exc.with_traceback(None))
            return
        stage2_s = time.perf_counter() - clock
        for i, work in enumerate(works):
            if i in cancelled:
                self._answer(work, cancelled[i])
                continue
            mine = {name: c for (j, name, _), c in zip(tracks, codes, strict=True) if j == i}
            try:
                music = self.composer.assemble(work.request, mine, stage2_s, work.progress)
                assert work.job is not None and work.job.result is not None
                stage1 = StageStats(work.stage1_s, work.job.result.tokens)
                music.stats = {"stage1": stage1, **music.stats}
                self._answer(work, music)
            except Cancelled as exc:
                self._answer(work, exc.with_traceback(None))
            except Exception as exc:
                self._answer(work, exc)

    def _answer(self, work: _Work, result: Music | BaseException) -> None:
        with self.lock:
            self.admitted -= 1
        self._measure(self.meter.ended)
        work.done(result)

    @staticmethod
    def _measure(report: Callable[..., None], *args: float) -> None:
        with contextlib.suppress(Exception):  # a metric never costs a request its answer
            report(*args)
