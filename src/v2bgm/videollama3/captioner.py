"""VideoLLaMA3 watches sampled frames and writes a caption and YuE tags, in one generation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration
from transformers.video_utils import VideoMetadata

from v2bgm import checkpoints
from v2bgm.devices import model_dtype
from v2bgm.videollama3 import prompt
from v2bgm.videollama3.constrained import AnswerGrammar, GrammarLogitsProcessor
from v2bgm.yue.tags import families_for, vocabulary


@dataclass(frozen=True)
class Description:
    caption: str
    tags: tuple[str, ...]  # in YuE's family order
    lyrics: str = ""  # empty: instrumental
    tokens: int = 0  # tokens generated (for metrics)

    @property
    def tag_line(self) -> str:
        return " ".join(self.tags)


class VideoCaptioner:
    def __init__(self, model: VideoLlama3ForConditionalGeneration, processor) -> None:
        self.model = model
        self.processor = processor
        vocab_size = model.config.text_config.vocab_size
        self.grammars = {
            vocals: AnswerGrammar(
                processor.tokenizer, vocabulary(), families_for(vocals), vocab_size
            )
            for vocals in (False, True)
        }

    @classmethod
    def from_pretrained(cls, root: str | Path, device: str = "cpu") -> VideoCaptioner:
        path = Path(root) / checkpoints.VIDEOLLAMA3
        model = VideoLlama3ForConditionalGeneration.from_pretrained(path, dtype=model_dtype(device))
        return cls(model.to(device).eval(), AutoProcessor.from_pretrained(path))

    @torch.inference_mode()
    def describe(self, frames: np.ndarray, fps: float, vocals: bool = False) -> Description:
        """frames: uint8 [T, H, W, 3], sampled uniformly at `fps` from the start of the video."""
        n = len(frames)
        text = self.processor.apply_chat_template(
            prompt.messages(vocals), add_generation_prompt=True, tokenize=False
        )
        # True timestamps: frame i of the request was taken at i / fps seconds.
        metadata = VideoMetadata(total_num_frames=n, fps=fps, frames_indices=list(range(n)))
        inputs = self.processor(
            text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt"
        )
        inputs.pop("video_metadata", None)
        inputs = inputs.to(self.model.device)
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.model.dtype)
        grammar = self.grammars[vocals]
        prompt_length = inputs["input_ids"].shape[1]
        output = self.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=grammar.max_tokens,
            logits_processor=[GrammarLogitsProcessor(grammar, prompt_length)],
            eos_token_id=grammar.eos,
            pad_token_id=grammar.eos,
        )
        answer, _ = grammar.walk(output[0, prompt_length:].tolist())
        if not answer.done:
            raise RuntimeError("the captioner stopped before its answer was complete")
        caption = self.processor.tokenizer.decode(answer.caption_ids).strip()
        tags = tuple(answer.tags[f] for f in families_for(vocals))
        generated = output.shape[1] - prompt_length
        return Description(caption=caption, tags=tags, tokens=generated)
