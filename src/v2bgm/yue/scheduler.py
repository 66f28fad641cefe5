"""YuE served: many compositions at once on one device, through the composer port.

One thread owns stage 1: compositions join its decoder between steps (a slot each) and leave it
when done or cancelled, so a long request never holds a short one back. A second thread, on its
own CUDA stream, runs stage 2 and decoding of compositions whose stage 1 is over, beside the
stage-1 steps of the others; stage 1's stream has the higher priority. A composition's 6-s
chunks go to stage 2 together when its stage 1 ends (`early_stage2` sends each as soon as stage 1
has made its frames final: slower on a GPU, see `YuEScheduler`), and chunks waiting together, of
any compositions, share stage 2's steps (a pass costs ~300 sequential frames whatever its number
of chunks). Both threads run the steps of `v2bgm.yue.composer.YuEComposer`, the same ones
`compose` runs for one request.

Admission is bounded: past `slots` requests decoding and `max_waiting` waiting for a slot, a
request is refused at once (`Busy`), which the served model answers as UNAVAILABLE for clients
to retry elsewhere or later. The `meter` hears of each request joining the line, taking a slot
and being answered (Triton's own per-request metrics end when `execute` hands it over).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from v2bgm.composer import (
    Busy,
    Cancelled,
    ComposerOptions,
    Done,
    Meter,
    Music,
    MusicRequest,
    NoMeter,
    Progress,
    no_lap,
)
from v2bgm.yue.composer import Chunk, Composition, YuEComposer

# torch clamps it to the device's highest priority (lower is higher; 0 is the default)
STAGE1_STREAM_PRIORITY = -5
IDLE_WAIT_S = 0.05  # how long the stage-1 thread sleeps on an empty queue between checks


@dataclass
class _Work:
    composition: Composition
    done: Done
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Stage1Ended:
    """Follows the last of a composition's chunks on the way to stage 2."""

    work: _Work


_Finishing = Chunk | _Stage1Ended | None  # None: stop


class YuEScheduler:
    """A `v2bgm.composer.Composer`."""

    def __init__(
        self,
        composer: YuEComposer,
        max_waiting: int = 8,
        early_stage2: bool = False,
        stage1_priority: bool = True,
    ) -> None:
        self.composer = composer
        # Chunks go to stage 2 while stage 1 runs: off by default. Both stages are bound by
        # memory bandwidth and a stage-2 pass reads all its weights 2,100 times whatever the
        # number of chunks in it, so a chunk filled alone costs as much as a whole track's
        # chunks together and slows stage 1 as much (30-s track on an H200: 27.3 s early,
        # 18.7 s after, docs/speed.md).
        self.early_stage2 = early_stage2
        self.decoder = composer.stage1.decoder
        self.cache_bytes = self.decoder.cache.nbytes
        self._cache_reported = 0  # bytes of it the meter has heard are taken
        self.max_waiting = max_waiting
        self.sample_rate = composer.sample_rate
        self.stages = composer.stages
        self.token_stages = composer.token_stages
        self.meter: Meter = NoMeter()
        self.incoming: queue.Queue[_Work] = queue.Queue()
        self.finishing: queue.Queue[_Finishing] = queue.Queue()
        self.lock = threading.Lock()
        self.admitted = 0  # submitted and not yet answered
        self.running = True
        device = composer.stage1.decoder.model.device
        self.main: torch.cuda.Stream | None = None  # stage 1's (None: the current one)
        self.side: torch.cuda.Stream | None = None  # stage 2's and decoding's
        if device.type == "cuda":
            # Stage 1 sets the pace: its kernels' blocks go first wherever stage 2's wait too.
            high = STAGE1_STREAM_PRIORITY if stage1_priority else 0
            self.main = torch.cuda.Stream(device, priority=high)
            self.side = torch.cuda.Stream(device, priority=0)
        self.threads = [
            threading.Thread(target=self._stage1_loop, name="yue-stage1", daemon=True),
            threading.Thread(target=self._finish_loop, name="yue-stage2", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    @property
    def slots(self) -> int:
        return self.decoder.slots

    @property
    def capacity(self) -> int:
        return self.slots + self.max_waiting

    def submit(self, request: MusicRequest, progress: Progress | None, done: Done) -> None:
        """Queue a composition; `done(music or error)` is called from a worker thread."""
        with self.lock:
            if not self.running:
                raise Busy("the composer is shutting down")
            if self.admitted >= self.capacity:
                raise Busy(
                    f"the composer is at capacity ({self.slots} composing, "
                    f"{self.max_waiting} waiting): retry later"
                )
            self.admitted += 1
        self._measure(self.meter.queued)
        self.incoming.put(_Work(self.composer.plan(request, progress), done))

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
        stream = torch.cuda.stream(self.main) if self.main is not None else contextlib.nullcontext()
        with torch.inference_mode(), stream:
            while self.running or decoding or waiting:
                block = not (decoding or waiting) and self.running
                with contextlib.suppress(queue.Empty):
                    waiting.append(self.incoming.get(timeout=IDLE_WAIT_S if block else 0))
                    while True:
                        waiting.append(self.incoming.get_nowait())
                while waiting and self.decoder.can_add(waiting[0].composition.stage1):
                    work = waiting.pop(0)
                    self._measure(self.meter.started, time.perf_counter() - work.submitted)
                    work.composition.clock = time.perf_counter()  # stage 1 starts now
                    self.decoder.add(work.composition.stage1)
                    decoding.append(work)
                if self.decoder.active:
                    self.decoder.step()
                else:
                    self.decoder.flush()
                self._report_cache()
                for work in decoding:  # chunks made final by this step go to stage 2 now
                    if self.early_stage2 and not work.composition.stage1.finished:
                        self._send_chunks(work)
                for work in [w for w in decoding if w.composition.stage1.finished]:
                    decoding.remove(work)
                    self.composer.stage1_done(work.composition)
                    if work.composition.error is not None:
                        self._answer(work, work.composition.error)
                    else:
                        self._send_chunks(work)
                        self.finishing.put(_Stage1Ended(work))
        self.finishing.put(None)

    def _report_cache(self) -> None:
        cache = self.decoder.cache
        used = cache.used_pages * cache.page_bytes
        if used != self._cache_reported:
            self._measure(self.meter.cache_used, used - self._cache_reported)
            self._cache_reported = used

    def _send_chunks(self, work: _Work) -> None:
        try:
            for chunk in self.composer.new_chunks(work.composition):
                self.finishing.put(chunk)
        except Exception as exc:  # stage 2 would fail on them: the composition fails now
            work.composition.error = work.composition.error or exc

    # -- stage 2 and decoding -------------------------------------------------------------------
    def _finish_loop(self) -> None:
        """Stage 2 for every chunk sent since the last round, in one batch of rows; then the
        decoding and answer of each composition whose stage 1 has ended and whose chunks are
        all filled."""
        stream = torch.cuda.stream(self.side) if self.side is not None else contextlib.nullcontext()
        ended: list[_Work] = []  # stage 1 over, chunks still being filled
        with torch.inference_mode(), stream:
            stop = False
            while not stop:
                items = [self.finishing.get()]
                with contextlib.suppress(queue.Empty):
                    while True:
                        items.append(self.finishing.get_nowait())
                stop = None in items
                chunks = [
                    item for item in items if isinstance(item, Chunk) and _alive(item.composition)
                ]
                if chunks:
                    self.composer.fill_chunks(chunks)
                ended += [item.work for item in items if isinstance(item, _Stage1Ended)]
                for work in [w for w in ended if _finished(w.composition)]:
                    ended.remove(work)
                    self._finish(work)
            for work in ended:  # only after a failure inside the loop's own steps
                self._answer(work, work.composition.error or RuntimeError("stage 2 stopped"))

    def _finish(self, work: _Work) -> None:
        c = work.composition
        if c.error is not None:
            self._answer(work, c.error)
            return
        try:
            self.composer.stage2_done(c)
            self._answer(work, self.composer.decode(c))
        except Cancelled as exc:  # its traceback holds the tracks: drop it
            self._answer(work, exc.with_traceback(None))
        except Exception as exc:  # logged with its traceback by the served model
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


def _alive(composition: Composition) -> bool:
    """Whether stage 2 should still fill this composition's chunks."""
    return composition.error is None and composition.stage1.error is None


def _finished(composition: Composition) -> bool:
    return composition.error is not None or composition.stage2_complete


def load(weights: Path, device: str, options: ComposerOptions) -> YuEScheduler:
    """The registry's loader of "yue-v1" (v2bgm.composers): load, warm up, serve."""
    lap = options.lap or no_lap
    lap("imports: composer")  # this module and what it imports, imported for this call
    composer = YuEComposer.from_pretrained(
        weights,
        device,
        slots=options.slots,
        precision=options.precision,
        lap=lap,
        cache_gib=options.cache_gib,
    )
    composer.warm_up(options.warm_up, lap=lap)
    return YuEScheduler(composer, max_waiting=options.max_waiting)
