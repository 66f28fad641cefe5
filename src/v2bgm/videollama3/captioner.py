"""VideoLLaMA3 watches sampled frames and writes a caption, YuE tags and lyrics, in one generation.

Several videos can go through one `generate` call (Triton's dynamic batcher hands the Python
backend several requests at once): their prompts are left-padded to one length and each row
follows its own grammar. A batch holding more frames than `MAX_FRAMES_PER_FORWARD` is split
into several calls, one after the other: activations grow with the visual tokens, and the
captioner shares its GPU with YuE.

With `cache="static"` ($V2BGM_CAPTIONER_CACHE=static, GPU only in effect) the answer is decoded
on a static cache (`cache_implementation="static"`), with which `generate` compiles the decoding
step (torch.compile, CUDA graphs): in an experiment on an H200 a batch-1 step of VideoLLaMA3-7B
took 7.6 ms instead of 19.6 ms, and a 30-s video's captioning 1.05-1.19 s instead of 2.1-2.4 s
(docs/speed.md). The compilation takes ~30 s at its first call, so `warm_up` makes it before
the first request. It is not the default: the served benchmark with it on did not finish in
its time (its cause unmeasured; a compilation for each new batch shape is the suspect), so the
dynamic cache stays until that run is made. The tests check that both caches give the same
answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration
from transformers.video_utils import VideoMetadata

from v2bgm import checkpoints
from v2bgm.devices import model_dtype, placed_on
from v2bgm.tags import families_for, resolve, vocabulary
from v2bgm.videollama3 import prompt
from v2bgm.videollama3.constrained import CAPTION, LYRICS, GrammarLogitsProcessor, GrammarParts

# Frames one `generate` call takes (two videos at the 180-frame cap): peak memory of VideoLLaMA3-7B
# on an H200 (bf16, `v2bgm.bench.captioner`) was 27.3 GiB for 2 x 180 frames and 39.5 GiB for
# 4 x 180; next to the composer (~41 GiB with 16 slots) the latter overflows an 80 GB card. This,
# not the dynamic batcher's CAPTIONER_MAX_BATCH, bounds the captioner's peak memory.
MAX_FRAMES_PER_FORWARD = 360
CACHES = ("dynamic", "static")  # `generate`'s KV cache: "static" compiles the decoding step
CACHE_ENV = "V2BGM_CAPTIONER_CACHE"  # "static": opt in (see above); default "dynamic"
# Warm-up: batch 1, then a second size (torch.compile then makes the batch dimension dynamic,
# so the dynamic batcher's other sizes compile nothing more), a few frames each.
WARM_UP_BATCHES = (1, 2)
WARM_UP_FRAMES = 4
WARM_UP_SIZE = (252, 448)  # a 16:9 video as the client sends it


@dataclass(frozen=True)
class CaptionRequest:
    frames: np.ndarray  # uint8 [T, H, W, 3], sampled uniformly at `fps` from the video's start
    fps: float
    vocals: bool = False
    duration_s: float = prompt.DEFAULT_DURATION_S  # how much lyrics to write
    hint: str = ""  # free-text steering, goes into the prompt
    fixed_tags: tuple[str, ...] = ()  # YuE tags to keep; the model fills the other families

    def __post_init__(self) -> None:
        self.fixed  # noqa: B018 (raises UnknownTag now, not in the middle of a batch)

    @property
    def fixed(self) -> dict[str, str]:
        """The fixed tags by family, in YuE's spelling."""
        return resolve(list(self.fixed_tags), self.vocals)


@dataclass(frozen=True)
class Description:
    caption: str
    tags: tuple[str, ...]  # in YuE's family order
    lyrics: str = ""  # YuE's section format; empty: instrumental
    tokens: int = 0  # tokens generated (for metrics)

    @property
    def tag_line(self) -> str:
        return " ".join(self.tags)


class VideoCaptioner:
    def __init__(
        self,
        model: VideoLlama3ForConditionalGeneration,
        processor,
        max_frames_per_forward: int = MAX_FRAMES_PER_FORWARD,
        cache: str | None = None,
    ) -> None:
        """`cache`: one of CACHES (default: $V2BGM_CAPTIONER_CACHE, else "dynamic")."""
        self.model = model
        self.processor = processor
        self.max_frames_per_forward = max_frames_per_forward
        self.processor.tokenizer.padding_side = "left"  # rows end together for generation
        self.cache = cache or os.environ.get(CACHE_ENV, "").strip() or "dynamic"
        if self.cache not in CACHES:
            caches = ", ".join(CACHES)
            raise ValueError(f"captioner cache must be one of {caches}, got {self.cache!r}")
        self.parts = GrammarParts(
            processor.tokenizer, vocabulary(), model.config.text_config.vocab_size
        )

    @classmethod
    def from_pretrained(cls, root: str | Path, device: str = "cpu") -> VideoCaptioner:
        path = Path(root) / checkpoints.VIDEOLLAMA3
        model = VideoLlama3ForConditionalGeneration.from_pretrained(
            path, dtype=model_dtype(device), **placed_on(device)
        )
        return cls(model.eval(), AutoProcessor.from_pretrained(path))

    def warm_up(self) -> None:
        """Compile what the first requests would otherwise wait for (static cache only)."""
        if self.cache != "static":
            return
        rng = np.random.default_rng(0)
        for batch in WARM_UP_BATCHES:
            frames = [
                rng.integers(0, 256, (WARM_UP_FRAMES, *WARM_UP_SIZE, 3), dtype=np.uint8)
                for _ in range(batch)
            ]
            self.describe_batch([CaptionRequest(f, 1.0) for f in frames])

    def describe(self, frames: np.ndarray, fps: float, **options) -> Description:
        return self.describe_batch([CaptionRequest(frames, fps, **options)])[0]

    def describe_batch(self, requests: list[CaptionRequest]) -> list[Description]:
        """Descriptions of `requests`, in order: consecutive requests share a `generate` call
        while their frames fit `max_frames_per_forward` (one request always gets its call)."""
        out: list[Description] = []
        group: list[CaptionRequest] = []
        for r in requests:
            if (
                group
                and sum(len(g.frames) for g in group) + len(r.frames) > self.max_frames_per_forward
            ):
                out += self._generate(group)
                group = []
            group.append(r)
        return out + (self._generate(group) if group else [])

    @torch.inference_mode()
    def _generate(self, requests: list[CaptionRequest]) -> list[Description]:
        texts, videos, metadata, grammars = [], [], [], []
        for r in requests:
            fixed_tags = tuple(r.fixed.values())
            chat = prompt.messages(r.vocals, r.duration_s, r.hint, fixed_tags)
            texts.append(
                self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            )
            videos.append(r.frames)
            metadata.append(frame_times(len(r.frames), r.fps))
            sections = prompt.section_labels(r.duration_s) if r.vocals else []
            grammars.append(self.parts.grammar(families_for(r.vocals), r.fixed, sections))
        inputs = self.processor(
            text=texts, videos=videos, video_metadata=metadata, padding=True, return_tensors="pt"
        )
        inputs.pop("video_metadata", None)
        inputs = inputs.to(self.model.device)
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.model.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        output = self.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max(g.max_tokens for g in grammars),
            logits_processor=[GrammarLogitsProcessor(grammars, prompt_length)],
            eos_token_id=self.parts.eos,
            pad_token_id=self.parts.eos,
            **({"cache_implementation": "static"} if self.cache == "static" else {}),
        )
        return [
            self._read(grammar, row[prompt_length:].tolist(), r)
            for grammar, row, r in zip(grammars, output, requests, strict=True)
        ]

    def _read(self, grammar, generated: list[int], request: CaptionRequest) -> Description:
        answer, _, _ = grammar.walk(generated)
        if not answer.done:
            raise RuntimeError("the captioner stopped before its answer was complete")
        decode = self.processor.tokenizer.decode
        tokens = (
            generated.index(self.parts.eos) + 1 if self.parts.eos in generated else len(generated)
        )
        return Description(
            caption=decode(answer.regions.get(CAPTION, [])).strip(),
            tags=tuple(answer.tags[f] for f in families_for(request.vocals)),
            lyrics=decode(answer.regions.get(LYRICS, [])).strip() if request.vocals else "",
            tokens=tokens,
        )


def frame_times(frames: int, fps: float) -> VideoMetadata:
    """Metadata that stamps frame i with its own time, (i + 0.5) / fps: the client takes each
    frame from the middle of its 1/fps-second interval (interface.FPS). The processor stamps
    frames_indices / fps, so the indices are counted in half intervals."""
    return VideoMetadata(
        total_num_frames=2 * frames,
        fps=2.0 * fps,
        frames_indices=[2 * i + 1 for i in range(frames)],
    )
