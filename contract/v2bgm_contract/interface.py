"""The Triton interface of the service, written down once.

Model names, tensor names, datatypes, shapes and limits live here and nowhere else: the server's
Python-backend models validate against these specs and the client builds its requests from them.
This module imports only numpy, so a backend service can use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- model names -------------------------------------------------------------------------------
CAPTIONER_MODEL = "video_captioner"
COMPOSER_MODEL = "music_composer"
PIPELINE_MODEL = "video_to_music"  # ensemble: captioner -> composer

# --- what the client sends: frame sampling, read by both sides ---------------------------------
SAMPLE_FPS = 1.0  # VideoLLaMA3's own default: one frame per second
MAX_FRAMES = 180  # VideoLLaMA3's default cap; beyond it frames are spaced uniformly
MAX_FRAME_SIDE = 448  # the longer side of a frame after the client's resize
MIN_FRAME_SIDE = 16

# --- limits the server enforces again (a raw gRPC caller skips the client) ---------------------
MIN_DURATION_S = 1.0
# The ceiling both sides check: 20 minutes of music, a long YouTube video. A server composes up to
# its operator's cap, at most this (10 minutes by default; its INVALID_ARGUMENT names the cap).
MAX_DURATION_S = 1200.0
MAX_FPS = 240.0
MAX_TAGS_BYTES = 1024
MAX_LYRICS_BYTES = 16384
MAX_HINT_BYTES = 512
MAX_FIXED_TAGS = 5  # one per YuE tag family at most
MAX_CUTS = 64  # edit points a request may carry (CUTS_S)
# Videos the captioner's dynamic batcher may hand it at once. Its memory is bounded by the frames
# of one `generate` call (v2bgm.videollama3.captioner.MAX_FRAMES_PER_FORWARD), not by this: a
# batch past them runs as several calls (four 180-s videos: 39.5 GiB in one call, 27.3 GiB split
# in two). With VideoLLaMA3-7B's shapes on an H200 (docs/speed.md, The captioner), 30-s videos
# cost 0.98 s each at batch 8 (one call, 28.5 GiB) against 1.80 s at batch 4; at 4, eight 10-s
# videos sent at once took 27.7 s served where the composer alone needs 10.6 s.
CAPTIONER_MAX_BATCH = 8
SEED_MIN = 0
SEED_MAX = 2**31 - 1


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a model: its name, Triton datatype and shape (-1 = any)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    @property
    def numpy_dtype(self) -> type:
        return TRITON_TO_NUMPY[self.datatype]

    @property
    def config_type(self) -> str:
        """The datatype as `config.pbtxt` spells it (TYPE_UINT8, TYPE_STRING, ...)."""
        return "TYPE_STRING" if self.datatype == "BYTES" else f"TYPE_{self.datatype}"


TRITON_TO_NUMPY: dict[str, type] = {
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "FP32": np.float32,
    "BYTES": np.object_,
}

# --- tensors (shapes of one item; every model batches, so a request adds a leading batch dim) ---
FRAMES = TensorSpec("FRAMES", "UINT8", (-1, -1, -1, 3))  # [T, H, W, RGB]
# Rate at which FRAMES were sampled from the video: frame i shows the video at (i + 0.5) / FPS
# seconds, the middle of its interval (as the client samples and VideoLLaMA3 is told).
FPS = TensorSpec("FPS", "FP32", (1,))
CAPTION = TensorSpec("CAPTION", "BYTES", (1,))
TAGS = TensorSpec("TAGS", "BYTES", (1,))  # YuE tags, space separated
LYRICS = TensorSpec("LYRICS", "BYTES", (1,), optional=True)  # empty: instrumental
DURATION_S = TensorSpec("DURATION_S", "FP32", (1,))
SEED = TensorSpec("SEED", "INT64", (1,), optional=True)
AUDIO = TensorSpec("AUDIO", "FP32", (-1,))  # mono samples in [-1, 1]
SAMPLE_RATE = TensorSpec("SAMPLE_RATE", "INT32", (1,))
# The composer's stems at SAMPLE_RATE: row 0 instrumental, row 1 vocal (silent when instrumental).
# Sent only to callers that ask for this output.
STEMS = TensorSpec("STEMS", "FP32", (2, -1))
STEM_ROWS = ("instrumental", "vocal")
# The composer's seconds per stage of this request, as JSON {"stage1": 12.3, ...}: stage names
# are the composer's own. Sent only to callers that ask (the streaming model does).
TIMINGS = TensorSpec("TIMINGS", "BYTES", (1,))
# Steering the captioner (all optional): vocals and lyrics, a free-text hint, tags to keep.
VOCALS = TensorSpec("VOCALS", "BOOL", (1,), optional=True)
HINT = TensorSpec("HINT", "BYTES", (1,), optional=True)
FIXED_TAGS = TensorSpec("FIXED_TAGS", "BYTES", (-1,), optional=True)  # one YuE tag each
MUSIC_DURATION_S = TensorSpec("DURATION_S", "FP32", (1,), optional=True)  # lyrics length
# The picture's cuts, seconds from its start (sorted, within the music): sections change there.
CUTS_S = TensorSpec("CUTS_S", "FP32", (-1,), optional=True)
# The section plan the music follows, JSON: [{"label": "[verse]", "start_s": 0, "end_s": 9.5}]
SECTIONS = TensorSpec("SECTIONS", "BYTES", (1,))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)


CAPTIONER = ModelSpec(
    CAPTIONER_MODEL,
    inputs=(FRAMES, FPS, VOCALS, MUSIC_DURATION_S, HINT, FIXED_TAGS),
    outputs=(CAPTION, TAGS, LYRICS),
    max_batch_size=CAPTIONER_MAX_BATCH,
)
COMPOSER = ModelSpec(
    COMPOSER_MODEL,
    inputs=(TAGS, LYRICS, DURATION_S, SEED, CUTS_S),
    outputs=(AUDIO, SAMPLE_RATE, STEMS, TIMINGS, SECTIONS),
    max_batch_size=CAPTIONER_MAX_BATCH,  # an ensemble's batch size bounds its steps'
)
PIPELINE = ModelSpec(
    PIPELINE_MODEL,
    inputs=(FRAMES, FPS, DURATION_S, SEED, VOCALS, HINT, FIXED_TAGS, CUTS_S),
    outputs=(CAPTION, TAGS, LYRICS, AUDIO, SAMPLE_RATE, SECTIONS),
    max_batch_size=CAPTIONER_MAX_BATCH,
)
MODELS: dict[str, ModelSpec] = {m.name: m for m in (CAPTIONER, COMPOSER, PIPELINE)}

# --- the streaming pipeline: a decoupled BLS model, typed events on one gRPC stream ------------
STREAM_MODEL = "video_to_music_stream"
MAX_CANDIDATES = 4  # soundtracks per streaming request, composed one after the other
CANDIDATES = TensorSpec("CANDIDATES", "INT32", (1,), optional=True)  # default 1
TARGET_DURATION_S = TensorSpec("DURATION_S", "FP32", (1,), optional=True)  # default: T / FPS
# One JSON event per response (v2bgm_contract.events); AUDIO and SAMPLE_RATE ride on "audio" events.
EVENT = TensorSpec("EVENT", "BYTES", (1,))
STREAM = ModelSpec(
    STREAM_MODEL,
    inputs=(FRAMES, FPS, TARGET_DURATION_S, SEED, VOCALS, HINT, FIXED_TAGS, CANDIDATES, CUTS_S),
    outputs=(EVENT, AUDIO, SAMPLE_RATE),
    max_batch_size=CAPTIONER_MAX_BATCH,
)
MODELS[STREAM.name] = STREAM


class InvalidInput(ValueError):
    """A request that breaks the interface; the server answers it with INVALID_ARGUMENT."""


def check_frames(frames: np.ndarray) -> None:
    """Raise InvalidInput unless `frames` is a [T, H, W, 3] uint8 array within the limits."""
    if frames.dtype != np.uint8:
        raise InvalidInput(f"{FRAMES.name} must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInput(f"{FRAMES.name} must have shape [T, H, W, 3], got {list(frames.shape)}")
    t, h, w, _ = frames.shape
    if t < 1:
        raise InvalidInput(f"{FRAMES.name} holds zero frames")
    if t > MAX_FRAMES:
        raise InvalidInput(f"{FRAMES.name} holds {t} frames, more than the limit {MAX_FRAMES}")
    if max(h, w) > MAX_FRAME_SIDE or min(h, w) < MIN_FRAME_SIDE:
        raise InvalidInput(
            f"{FRAMES.name} frames are {w}x{h}; each side must lie in "
            f"[{MIN_FRAME_SIDE}, {MAX_FRAME_SIDE}] pixels (resize before sending)"
        )


def check_fps(fps: float) -> None:
    if not np.isfinite(fps) or not 0 < fps <= MAX_FPS:
        raise InvalidInput(f"{FPS.name} must be in (0, {MAX_FPS}], got {fps}")


def check_duration(duration_s: float) -> None:
    if not np.isfinite(duration_s) or not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise InvalidInput(
            f"{DURATION_S.name} must be in [{MIN_DURATION_S}, {MAX_DURATION_S}] seconds, "
            f"got {duration_s}"
        )


def check_cuts(cuts_s: np.ndarray | list[float], duration_s: float) -> list[float]:
    """The cuts as a list, or InvalidInput naming the rule they break: at most MAX_CUTS finite
    times, strictly increasing, each after 0 and before `duration_s`."""
    cuts = np.asarray(cuts_s, dtype=np.float64).reshape(-1)
    if len(cuts) > MAX_CUTS:
        raise InvalidInput(f"{CUTS_S.name} holds {len(cuts)} cuts, more than {MAX_CUTS}")
    if not np.all(np.isfinite(cuts)):
        raise InvalidInput(f"{CUTS_S.name} holds NaN or infinite times")
    if len(cuts) and (cuts[0] <= 0 or cuts[-1] >= duration_s):
        raise InvalidInput(
            f"{CUTS_S.name} must lie strictly between 0 and the duration {duration_s:g} s, "
            f"got {cuts[0]:g} ... {cuts[-1]:g}"
        )
    if np.any(np.diff(cuts) <= 0):
        raise InvalidInput(f"{CUTS_S.name} must be sorted in increasing order, without repeats")
    return [float(c) for c in cuts]


def check_fixed_tags(tags: list[str]) -> None:
    if len(tags) > MAX_FIXED_TAGS:
        raise InvalidInput(f"{FIXED_TAGS.name} holds {len(tags)} tags, more than {MAX_FIXED_TAGS}")


def check_candidates(candidates: int) -> None:
    if not 1 <= candidates <= MAX_CANDIDATES:
        raise InvalidInput(f"{CANDIDATES.name} must be in [1, {MAX_CANDIDATES}], got {candidates}")


def check_seed(seed: int) -> None:
    if not SEED_MIN <= seed <= SEED_MAX:
        raise InvalidInput(f"{SEED.name} must be in [{SEED_MIN}, {SEED_MAX}], got {seed}")


def check_text(spec: TensorSpec, text: bytes, limit: int) -> str:
    """Decode a BYTES element as UTF-8 within `limit` bytes."""
    if len(text) > limit:
        raise InvalidInput(f"{spec.name} is {len(text)} bytes, more than the limit {limit}")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{spec.name} is not valid UTF-8: {exc}") from None
