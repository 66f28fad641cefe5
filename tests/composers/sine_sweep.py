"""A second composer, for the tests: a sine sweep whose pitch rises over the piece.

A real `v2bgm.composer.Composer` (no model, no weights): it shows that a composer plugs into the
served model through the registry alone, with the model config's `composer` parameter set to
"tests.composers.sine_sweep:load". Its answer is a pure function of the request, so the tests
can check it sample for sample.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np

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
    StageStats,
)

SAMPLE_RATE = 16_000
LOW_HZ, HIGH_HZ = 220.0, 880.0  # the sweep: two octaves up, whatever the length
AMPLITUDE = 0.5
SWEEP, SHAPE = "sweep", "shape"  # its stages


def sweep(duration_s: float, seed: int) -> np.ndarray:
    """A linear chirp from LOW_HZ to HIGH_HZ; the seed shifts its phase."""
    n = round(duration_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rate = (HIGH_HZ - LOW_HZ) / duration_s
    phase = 2 * np.pi * (LOW_HZ * t + rate * t * t / 2) + seed % 360 * np.pi / 180
    return (AMPLITUDE * np.sin(phase)).astype(np.float32)


class SineSweep:
    sample_rate = SAMPLE_RATE
    stages = (SWEEP, SHAPE)
    token_stages = ()
    cache_bytes = 0  # no KV cache

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots, self.max_waiting = slots, max_waiting
        self.meter: Meter = NoMeter()
        self.line: queue.Queue = queue.Queue()
        self.admitted = 0
        self.lock = threading.Lock()
        self.worker = threading.Thread(target=self._work, name="sine-sweep", daemon=True)
        self.worker.start()

    def submit(self, request: MusicRequest, progress: Progress | None, done: Done) -> None:
        with self.lock:
            if self.admitted >= self.slots + self.max_waiting:
                raise Busy("the sine sweep is at capacity")
            self.admitted += 1
        self.meter.queued()
        self.line.put((request, progress, done, time.perf_counter()))

    def close(self) -> None:
        self.line.put(None)
        self.worker.join(5.0)

    def _work(self) -> None:
        while (item := self.line.get()) is not None:
            request, progress, done, queued = item
            self.meter.started(time.perf_counter() - queued)
            try:
                done(self._compose(request, progress))
            except Cancelled as exc:
                done(exc.with_traceback(None))
            except Exception as exc:
                done(exc)
            finally:
                with self.lock:
                    self.admitted -= 1
                self.meter.ended()

    def _compose(self, request: MusicRequest, progress: Progress | None) -> Music:
        clock = time.perf_counter()
        if progress is not None:
            progress(SWEEP, 0.0)
        audio = sweep(request.duration_s, request.seed)
        if progress is not None:
            progress(SWEEP, 1.0)
        swept = time.perf_counter()
        fade = min(len(audio), SAMPLE_RATE // 100)
        audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        stats = {
            SWEEP: StageStats(swept - clock),
            SHAPE: StageStats(time.perf_counter() - swept),
        }
        return Music(audio, SAMPLE_RATE, {"instrumental": audio}, stats)


def load(weights: Path, device: str, options: ComposerOptions) -> SineSweep:
    """The registry's loader (v2bgm.composers): nothing to load."""
    return SineSweep(options.slots, options.max_waiting)
