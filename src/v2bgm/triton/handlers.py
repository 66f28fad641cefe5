"""Request handlers of the served models: numpy tensors in, numpy tensors out.

They hold everything a model does between Triton's tensors and the model code, and know nothing of
Triton itself, so they are unit-tested without a server. Two kinds (`v2bgm.triton.backend` serves
each): the captioner answers a batch of requests in one call (Triton's dynamic batcher hands over
several at once); the composer takes each request as it comes and answers it later from its own
threads (continuous batching). The composer is any `v2bgm.composer.Composer`, chosen by name in
the model config (`composer`, see `v2bgm.composers`): nothing here names a model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from v2bgm_contract import interface as contract

from v2bgm import composers
from v2bgm.composer import (
    WARM_UPS,
    Composer,
    ComposerOptions,
    Lap,
    Meter,
    Music,
    MusicRequest,
    Progress,
    StageStats,
    no_lap,
)
from v2bgm.tags import UnknownTag
from v2bgm.triton import limits
from v2bgm.triton.rows import (
    bytes_column,
    required,
    scalar,
    single_row,
    split_rows,
    text,
    texts,
    vector,
)
from v2bgm.videollama3.captioner import CaptionRequest, Description, VideoCaptioner

Tensors = dict[str, np.ndarray]
Result = Tensors | Exception
Params = dict[str, str]  # a model config's `parameters`
Answer = Callable[[Result, dict[str, StageStats]], None]  # a request's result and its costs

CAPTIONING = "captioning"  # the captioner's one stage
DEFAULT_SLOTS = 16  # compositions computed at once on one device (model parameter `slots`)
DEFAULT_MAX_WAITING = 8  # beyond the slots, before refusing (`max_waiting`)
# Overrides the config's `slots` (the most compositions computed at once) without rebuilding
# the image; how many fit also depends on the cache (`cache_gib`).
SLOTS_ENV = "V2BGM_COMPOSER_SLOTS"
# Overrides the config's `cache_gib`: GiB of stage-1 KV cache, from which each composition
# takes what its length needs (30 s of background music: 0.36 GB at full size, with lyrics
# 0.49 GB; from ~2.5 min on, a whole 16,384-token window: 1.28 GB).
CACHE_ENV = "V2BGM_COMPOSER_CACHE_GIB"
PRECISION_ENV = "V2BGM_COMPOSER_PRECISION"  # overrides the config's `precision` ("bf16", "fp8")
# Overrides the config's `warm_up`: "full" (default) or "first", only the first request's path
# before the server is ready (v2bgm.composer.WARM_UPS; docs/speed.md, Cold start).
WARM_UP_ENV = "V2BGM_COMPOSER_WARM_UP"


class CaptionerHandler:
    spec = contract.CAPTIONER
    stages = (CAPTIONING,)
    token_stages = (CAPTIONING,)
    cache_bytes = 0  # its cache lives and dies with each batch

    def __init__(
        self, captioner: VideoCaptioner, max_duration_s: float = limits.DEFAULT_MAX_DURATION_S
    ) -> None:
        self.captioner = captioner
        self.slots = contract.CAPTIONER_MAX_BATCH  # videos in one forward, at most
        # DURATION_S above the operator's cap is refused here, before captioning: in the ensemble
        # the composer would refuse it anyway, after the captioner's work.
        self.max_duration_s = max_duration_s

    @classmethod
    def load(
        cls, weights: Path, device: str, params: Params, lap: Lap | None = None
    ) -> CaptionerHandler:
        cap = limits.max_duration_s(params)  # a bad value fails before the weights load
        lap = lap or no_lap
        captioner = VideoCaptioner.from_pretrained(weights, device)
        lap("weights: videollama3")
        captioner.warm_up()  # a static cache: compiles the decoding step before the first request
        lap(f"warm-up ({captioner.cache} cache)")
        return cls(captioner, cap)

    def batch(self, requests: list[Tensors]) -> list[tuple[Result, dict[str, StageStats]]]:
        """All valid requests' videos in one forward; a bad request fails alone. (One forward
        of a few seconds: a cancelled request runs to its end.) Each answer with its costs."""
        parsed: list[list[CaptionRequest] | Exception] = []
        for inputs in requests:
            try:
                parsed.append([self.parse(row, self.max_duration_s) for row in split_rows(inputs)])
            except (contract.InvalidInput, UnknownTag) as exc:
                parsed.append(contract.InvalidInput(str(exc)))
        items = [r for p in parsed if isinstance(p, list) for r in p]
        clock = time.perf_counter()
        descriptions = iter(self.captioner.describe_batch(items) if items else [])
        seconds = time.perf_counter() - clock  # each request of the batch waited that long
        answers: list[tuple[Result, dict[str, StageStats]]] = []
        for p in parsed:
            if isinstance(p, Exception):
                answers.append((p, {}))
                continue
            done = [next(descriptions) for _ in p]
            tokens = sum(d.tokens for d in done)
            answers.append((self.outputs(done), {CAPTIONING: StageStats(seconds, tokens)}))
        return answers

    @staticmethod
    def parse(
        row: Tensors, max_duration_s: float = limits.DEFAULT_MAX_DURATION_S
    ) -> CaptionRequest:
        frames = row.get(contract.FRAMES.name)
        if frames is None:
            raise contract.InvalidInput(f"missing input {contract.FRAMES.name}")
        contract.check_frames(frames)
        fps = float(required(row, contract.FPS))
        contract.check_fps(fps)
        duration = scalar(row, contract.MUSIC_DURATION_S)
        if duration is not None:
            limits.check_duration(float(duration), max_duration_s)
        fixed = texts(row, contract.FIXED_TAGS, contract.MAX_TAGS_BYTES)
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

    def close(self) -> None:
        pass


def sections_json(music: Music) -> str:
    """SECTIONS: the plan the music follows, times in seconds to the millisecond."""
    return json.dumps([section.as_dict() for section in music.sections])


def composer_slots(params: Params, environ: Mapping[str, str] = os.environ) -> int:
    """The composer's slots: $V2BGM_COMPOSER_SLOTS, else the config's `slots`, else 16."""
    given = environ.get(SLOTS_ENV, "").strip()
    if not given:
        return int(params.get("slots") or DEFAULT_SLOTS)
    if not given.isdigit() or int(given) < 1:
        raise ValueError(f"{SLOTS_ENV} must be a whole number >= 1, got {given!r}")
    return int(given)


def composer_cache_gib(params: Params, environ: Mapping[str, str] = os.environ) -> float | None:
    """$V2BGM_COMPOSER_CACHE_GIB, else the config's `cache_gib`, else None (the composer's
    default); a value that is not a positive number stops the model from loading."""
    given = environ.get(CACHE_ENV, "").strip()
    source = f"${CACHE_ENV}" if given else "the model config's cache_gib"
    value = given or params.get("cache_gib", "").strip()
    if not value:
        return None
    try:
        gib = float(value)
    except ValueError:
        gib = float("nan")
    if not gib > 0 or gib == float("inf"):
        raise ValueError(f"{source} must be a positive number of GiB, got {value!r}")
    return gib


def composer_precision(params: Params, environ: Mapping[str, str] = os.environ) -> str:
    """$V2BGM_COMPOSER_PRECISION, else the config's `precision`, else the composer's default
    (the composer checks the value)."""
    given = environ.get(PRECISION_ENV, "").strip() or params.get("precision", "").strip()
    return given or ComposerOptions.precision


def composer_warm_up(params: Params, environ: Mapping[str, str] = os.environ) -> str:
    """$V2BGM_COMPOSER_WARM_UP, else the config's `warm_up`, else "full"; a value not in
    WARM_UPS stops the model from loading, naming where it came from."""
    given = environ.get(WARM_UP_ENV, "").strip()
    source = f"${WARM_UP_ENV}" if given else "the model config's warm_up"
    value = given or params.get("warm_up", "").strip() or ComposerOptions.warm_up
    if value not in WARM_UPS:
        raise ValueError(f"{source} must be one of {', '.join(WARM_UPS)}, got {value!r}")
    return value


class ComposerHandler:
    """Hands each request to the composer and answers it when its music is done."""

    spec = contract.COMPOSER

    def __init__(
        self, composer: Composer, max_duration_s: float = limits.DEFAULT_MAX_DURATION_S
    ) -> None:
        self.composer = composer
        self.stages = composer.stages
        self.token_stages = composer.token_stages
        self.slots = composer.slots
        self.cache_bytes = composer.cache_bytes
        self.max_duration_s = max_duration_s  # the operator's cap (v2bgm.triton.limits)

    @classmethod
    def load(
        cls, weights: Path, device: str, params: Params, lap: Lap | None = None
    ) -> ComposerHandler:
        cap = limits.max_duration_s(params)  # a bad value fails before the weights load
        options = ComposerOptions(
            slots=composer_slots(params),
            max_waiting=int(params.get("max_waiting") or DEFAULT_MAX_WAITING),
            precision=composer_precision(params),
            warm_up=composer_warm_up(params),
            cache_gib=composer_cache_gib(params),
            lap=lap,
        )
        name = params.get("composer") or composers.DEFAULT
        return cls(composers.load(name, weights, device, options), cap)

    def instrument(self, meter: Meter) -> None:
        """The composer reports its line for a slot to `meter` (the served model's metrics)."""
        self.composer.meter = meter

    def submit(self, inputs: Tensors, progress: Progress | None, answer: Answer) -> None:
        """Start one request's composition; `answer` gets its outputs or its error, now (a bad
        request, no room) or from the composer's thread."""
        try:
            request = self.parse(
                single_row(inputs, "one composition per request"), self.max_duration_s
            )
        except Exception as exc:
            answer(exc, {})
            return

        def done(music: Music | BaseException) -> None:
            if not isinstance(music, Music):
                answer(music if isinstance(music, Exception) else RuntimeError(music), {})
                return
            try:
                answer(self.outputs(music), music.stats)
            except Exception as exc:
                answer(exc, music.stats)

        try:
            self.composer.submit(request, progress, done)
        except Exception as exc:  # Busy: no room now
            answer(exc, {})

    def close(self) -> None:
        self.composer.close()

    @staticmethod
    def outputs(music: Music) -> Tensors:
        silence = np.zeros_like(music.audio)
        stems = np.stack([music.stems.get(name, silence) for name in contract.STEM_ROWS])
        timings = {stage: round(cost.seconds, 6) for stage, cost in music.stats.items()}
        return {
            contract.AUDIO.name: music.audio.astype(np.float32)[None],
            contract.SAMPLE_RATE.name: np.array([[music.sample_rate]], dtype=np.int32),
            contract.STEMS.name: stems.astype(np.float32)[None],
            contract.TIMINGS.name: bytes_column([json.dumps(timings)]),
            contract.SECTIONS.name: bytes_column([sections_json(music)]),
        }

    @staticmethod
    def parse(row: Tensors, max_duration_s: float = limits.DEFAULT_MAX_DURATION_S) -> MusicRequest:
        tags = text(row, contract.TAGS, contract.MAX_TAGS_BYTES).strip()
        if not tags:
            raise contract.InvalidInput(f"{contract.TAGS.name} is empty")
        lyrics = text(row, contract.LYRICS, contract.MAX_LYRICS_BYTES)
        duration = float(required(row, contract.DURATION_S))
        limits.check_duration(duration, max_duration_s)
        seed_value = scalar(row, contract.SEED)
        seed = 0 if seed_value is None else int(seed_value)
        contract.check_seed(seed)
        cuts = vector(row, contract.CUTS_S)
        cuts_s = tuple(contract.check_cuts(cuts, duration)) if cuts is not None else ()
        return MusicRequest(tags=tags, lyrics=lyrics, duration_s=duration, seed=seed, cuts_s=cuts_s)
