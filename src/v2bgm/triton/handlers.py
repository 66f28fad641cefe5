"""Request handlers of the served models: numpy tensors in, numpy tensors out.

They hold everything a model does between Triton's tensors and the model code, and know nothing of
Triton itself, so they are unit-tested without a server. Every model batches: a request's tensors
carry a leading batch dimension, and `batch` answers a list of requests (Triton's dynamic batcher
hands over several at once), one result or one error each.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from v2bgm_contract import interface as contract

from v2bgm.composer import Busy, Cancelled, Composer, Music, MusicRequest, Progress, StageStats
from v2bgm.triton.metrics import CAPTIONING
from v2bgm.triton.progress_channel import ComposerReport
from v2bgm.videollama3.captioner import CaptionRequest, Description, VideoCaptioner
from v2bgm.yue.composer import YuEComposer
from v2bgm.yue.scheduler import ComposerScheduler, Meter
from v2bgm.yue.tags import UnknownTag

Tensors = dict[str, np.ndarray]
Result = Tensors | Exception
Params = dict[str, str]  # a model config's `parameters`
Answer = Callable[[Result, dict[str, StageStats]], None]  # a request's result and its costs


DEFAULT_SLOTS = 16  # compositions decoding at once on one device (model parameter `slots`)
DEFAULT_MAX_WAITING = 8  # beyond the slots, before refusing (`max_waiting`)
# Overrides the config's `slots` without rebuilding the image: each slot holds a whole context
# window of stage-1 cache (~1.2 GB at full size), so a smaller card wants fewer.
SLOTS_ENV = "V2BGM_COMPOSER_SLOTS"


def split_rows(inputs: Tensors) -> list[Tensors]:
    """A request's batched tensors -> one dict per item (batch dimension removed)."""
    sizes = {value.shape[0] if value.ndim else 0 for value in inputs.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise contract.InvalidInput(f"inputs must share one batch size >= 1, got {sorted(sizes)}")
    (size,) = sizes
    return [{name: value[i] for name, value in inputs.items()} for i in range(size)]


def scalar(row: Tensors, spec: contract.TensorSpec) -> np.generic | bytes | None:
    """The single element of a [1] tensor, or None when an optional input is absent."""
    if spec.name not in row:
        if spec.optional:
            return None
        raise contract.InvalidInput(f"missing input {spec.name}")
    value = row[spec.name]
    if value.size != 1:
        raise contract.InvalidInput(
            f"{spec.name} must hold one element, got shape {list(value.shape)}"
        )
    return value.reshape(-1)[0]


def decode_text(spec: contract.TensorSpec, value: object, limit: int) -> str:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return contract.check_text(spec, bytes(value), limit)


def text(row: Tensors, spec: contract.TensorSpec, limit: int) -> str:
    value = scalar(row, spec)
    return "" if value is None else decode_text(spec, value, limit)


def bytes_column(values: list[str]) -> np.ndarray:
    """Strings -> a BYTES tensor [B, 1]."""
    return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)


class CaptionerHandler:
    spec = contract.CAPTIONER

    def __init__(self, captioner: VideoCaptioner) -> None:
        self.captioner = captioner

    @classmethod
    def load(cls, weights: Path, device: str, params: Params | None = None) -> CaptionerHandler:
        return cls(VideoCaptioner.from_pretrained(weights, device))

    def batch(
        self, requests: list[Tensors], progress: list[Progress] | None = None
    ) -> list[Result]:
        """All valid requests' videos in one forward; a bad request fails alone. (One forward
        of a few seconds: `progress` is not called, and a cancelled request runs to its end.)"""
        parsed: list[list[CaptionRequest] | Exception] = []
        for inputs in requests:
            try:
                parsed.append([self.parse(row) for row in split_rows(inputs)])
            except (contract.InvalidInput, UnknownTag) as exc:
                parsed.append(contract.InvalidInput(str(exc)))
        items = [r for p in parsed if isinstance(p, list) for r in p]
        clock = time.perf_counter()
        descriptions = iter(self.captioner.describe_batch(items) if items else [])
        seconds = time.perf_counter() - clock  # each request of the batch waited that long
        results: list[Result] = []
        self.batch_stats: list[dict[str, StageStats]] = []  # per request, for metrics
        for p in parsed:
            if isinstance(p, Exception):
                results.append(p)
                self.batch_stats.append({})
            else:
                done = [next(descriptions) for _ in p]
                results.append(self.outputs(done))
                tokens = sum(d.tokens for d in done)
                self.batch_stats.append({CAPTIONING: StageStats(seconds, tokens)})
        return results

    @staticmethod
    def parse(row: Tensors) -> CaptionRequest:
        frames = row.get(contract.FRAMES.name)
        if frames is None:
            raise contract.InvalidInput(f"missing input {contract.FRAMES.name}")
        contract.check_frames(frames)
        fps = float(scalar(row, contract.FPS))
        contract.check_fps(fps)
        duration = scalar(row, contract.MUSIC_DURATION_S)
        if duration is not None:
            contract.check_duration(float(duration))
        fixed = []
        if contract.FIXED_TAGS.name in row:
            values = row[contract.FIXED_TAGS.name].reshape(-1)
            fixed = [decode_text(contract.FIXED_TAGS, v, contract.MAX_TAGS_BYTES) for v in values]
            fixed = [tag for tag in fixed if tag.strip()]  # empty strings pad ragged rows
            contract.check_fixed_tags(fixed)
        vocals = scalar(row, contract.VOCALS)
        options = {
            "vocals": bool(vocals) if vocals is not None else False,
            "hint": " ".join(text(row, contract.HINT, contract.MAX_HINT_BYTES).split()),
            "fixed_tags": tuple(fixed),
        }
        if duration is not None:
            options["duration_s"] = float(duration)
        return CaptionRequest(frames, fps, **options)  # UnknownTag names near matches

    @staticmethod
    def outputs(descriptions: list[Description]) -> Tensors:
        return {
            contract.CAPTION.name: bytes_column([d.caption for d in descriptions]),
            contract.TAGS.name: bytes_column([d.tag_line for d in descriptions]),
            contract.LYRICS.name: bytes_column([d.lyrics for d in descriptions]),
        }


def composer_slots(params: Params, environ: Mapping[str, str] = os.environ) -> int:
    """The composer's slots: $V2BGM_COMPOSER_SLOTS, else the config's `slots`, else 16."""
    given = environ.get(SLOTS_ENV, "").strip()
    if not given:
        return int(params.get("slots") or DEFAULT_SLOTS)
    if not given.isdigit() or int(given) < 1:
        raise ValueError(f"{SLOTS_ENV} must be a whole number >= 1, got {given!r}")
    return int(given)


class ComposerHandler:
    """Composes either one request at a time (`batch`) or, with a scheduler, many at once
    (`submit`: the served model answers each request when its music is done)."""

    spec = contract.COMPOSER

    def __init__(self, composer: Composer, scheduler: ComposerScheduler | None = None) -> None:
        self.composer = composer
        self.scheduler = scheduler
        self.last_stats: dict[str, StageStats] = {}  # of the last composition, for metrics

    @classmethod
    def load(cls, weights: Path, device: str, params: Params | None = None) -> ComposerHandler:
        params = params or {}
        slots = composer_slots(params)
        composer = YuEComposer.from_pretrained(weights, device, slots=slots)
        composer.warm_up()
        waiting = int(params.get("max_waiting") or DEFAULT_MAX_WAITING)
        return cls(composer, ComposerScheduler(composer, max_waiting=waiting))

    @property
    def concurrent(self) -> bool:
        return self.scheduler is not None

    @property
    def slots(self) -> int:
        """Compositions computed at once, at most."""
        return self.scheduler.engine.slots if self.scheduler is not None else 1

    def instrument(self, meter: Meter) -> None:
        """Report the scheduler's line and slots to `meter` (the served model's metrics)."""
        if self.scheduler is not None:
            self.scheduler.meter = meter

    def submit(self, inputs: Tensors, progress: Progress | None, answer: Answer) -> None:
        """Start one request's composition; `answer` gets its outputs or its error, now (a bad
        request, no room) or from the scheduler's thread."""
        assert self.scheduler is not None
        try:
            rows = split_rows(inputs)
            if len(rows) != 1:
                raise contract.InvalidInput(
                    f"one composition per request, got a batch of {len(rows)}"
                )
            request = self.parse(rows[0])
        except Exception as exc:
            answer(exc, {})
            return

        def done(music: Music | BaseException) -> None:
            if isinstance(music, BaseException):
                answer(music if isinstance(music, Exception) else RuntimeError(music), {})
                return
            try:
                answer(self.outputs(music, progress), music.stats)
            except Exception as exc:
                answer(exc, music.stats)

        try:
            self.scheduler.submit(request, progress, done)
        except Busy as exc:
            answer(exc, {})

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()

    def batch(
        self, requests: list[Tensors], progress: list[Progress] | None = None
    ) -> list[Result]:
        results: list[Result] = []
        self.batch_stats: list[dict[str, StageStats]] = []  # per request, for metrics
        for i, inputs in enumerate(requests):
            self.last_stats = {}
            try:
                results.append(self(inputs, progress[i] if progress else None))
            except Cancelled as exc:  # its traceback holds the frames, and so the KV caches
                results.append(exc.with_traceback(None))
            except Exception as exc:  # answered as an error of this request alone
                results.append(exc)
            self.batch_stats.append(self.last_stats)
        if any(isinstance(result, Cancelled) for result in results):
            release_cached_memory()  # out of the except block: its traceback is gone now
        return results

    def __call__(self, inputs: Tensors, progress: Progress | None = None) -> Tensors:
        rows = split_rows(inputs)
        if len(rows) != 1:
            raise contract.InvalidInput(f"one composition per request, got a batch of {len(rows)}")
        music = self.composer.compose(self.parse(rows[0]), progress)
        self.last_stats = music.stats
        return self.outputs(music, progress)

    @staticmethod
    def outputs(music: Music, progress: Progress | None) -> Tensors:
        if isinstance(progress, ComposerReport):  # a streaming caller shows stage timings
            progress.finished({stage: cost.seconds for stage, cost in music.stats.items()})
        silence = np.zeros_like(music.audio)
        stems = np.stack([music.stems.get(name, silence) for name in contract.STEM_ROWS])
        return {
            contract.AUDIO.name: music.audio.astype(np.float32)[None],
            contract.SAMPLE_RATE.name: np.array([[music.sample_rate]], dtype=np.int32),
            contract.STEMS.name: stems.astype(np.float32)[None],
        }

    @staticmethod
    def parse(row: Tensors) -> MusicRequest:
        tags = text(row, contract.TAGS, contract.MAX_TAGS_BYTES).strip()
        if not tags:
            raise contract.InvalidInput(f"{contract.TAGS.name} is empty")
        lyrics = text(row, contract.LYRICS, contract.MAX_LYRICS_BYTES)
        duration = float(scalar(row, contract.DURATION_S))
        contract.check_duration(duration)
        seed_value = scalar(row, contract.SEED)
        seed = 0 if seed_value is None else int(seed_value)
        contract.check_seed(seed)
        return MusicRequest(tags=tags, lyrics=lyrics, duration_s=duration, seed=seed)


def release_cached_memory() -> None:
    """Give back what a cancelled composition held: CUDA's cache keeps freed blocks reserved."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
