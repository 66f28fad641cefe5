"""YuE v1's reference inference loops (inference/infer.py, branch YuE-v1), transcribed for parity.

Only what decides the tokens is kept: the stage-1 segment loop calling `generate` with CFG and the
reference's logits processors, and stage 2's per-frame `generate` over the whole prefix.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from v2bgm.yue import tokens
from v2bgm.yue.tokenizer import YuETokenizer


class BlockTokenRangeProcessor(LogitsProcessor):
    def __init__(self, start_id: int, end_id: int) -> None:
        self.blocked_token_ids = list(range(start_id, end_id))

    def __call__(self, input_ids, scores):
        scores[:, self.blocked_token_ids] = -float("inf")
        return scores


def stage1(
    model, tok: YuETokenizer, genres: str, lyrics: list[str], max_new_tokens: int, do_sample: bool
) -> np.ndarray:
    """infer.py's stage-1 loop over every section (its run_n_segments cut aside)."""
    prompt_texts = [tokens.header_text(genres, lyrics), *lyrics]
    start_of_segment = tok.encode("[start_of_segment]")
    end_of_segment = tok.encode("[end_of_segment]")
    raw_output = None
    for i, p in enumerate(prompt_texts):
        section_text = p.replace("[start_of_segment]", "").replace("[end_of_segment]", "")
        guidance_scale = 1.5 if i <= 1 else 1.2
        if i == 0:
            continue
        if i == 1:
            head_id = tok.encode(prompt_texts[0])
            prompt_ids = head_id + start_of_segment + tok.encode(section_text) + [32001, 32016]
        else:
            prompt_ids = end_of_segment + start_of_segment + tok.encode(section_text)
            prompt_ids += [32001, 32016]
        prompt_ids = torch.as_tensor(prompt_ids).unsqueeze(0)
        input_ids = torch.cat([raw_output, prompt_ids], dim=1) if i > 1 else prompt_ids
        max_context = 16384 - max_new_tokens - 1
        if input_ids.shape[-1] > max_context:
            input_ids = input_ids[:, -(max_context):]
        with torch.no_grad():
            output_seq = model.generate(
                input_ids=input_ids,
                max_new_tokens=max_new_tokens,
                min_new_tokens=100,
                do_sample=do_sample,
                top_p=0.93,
                top_k=50,  # transformers 4.x's default, which the reference got implicitly
                temperature=1.0,
                repetition_penalty=1.1,
                eos_token_id=32002,
                pad_token_id=32002,
                logits_processor=LogitsProcessorList(
                    [BlockTokenRangeProcessor(0, 32002), BlockTokenRangeProcessor(32016, 32016)]
                ),
                guidance_scale=guidance_scale,
            )
            if output_seq[0][-1].item() != 32002:
                output_seq = torch.cat((output_seq, torch.as_tensor([[32002]])), dim=1)
        if i > 1:
            raw_output = torch.cat(
                [raw_output, prompt_ids, output_seq[:, input_ids.shape[-1] :]], 1
            )
        else:
            raw_output = output_seq
    return raw_output[0].numpy()


def stage2_generate(model, codec_ids: np.ndarray, vocab_end: int) -> np.ndarray:
    """infer.py's `stage2_generate` for a batch of chunks of codebook-0 ids [B, F] -> [B, F*8].

    `vocab_end` is where the second blocked range ends: the reference uses the tokenizer's 83738,
    which leaves the model's rows 83738..83967 open; pass the model's vocab size for the intent.
    """
    batch = codec_ids.shape[0]
    prompt_ids = np.concatenate(
        [np.tile([32001, 32013], (batch, 1)), codec_ids, np.tile([32017], (batch, 1))], axis=1
    )
    codec_ids = torch.as_tensor(codec_ids)
    prompt_ids = torch.as_tensor(prompt_ids)
    len_prompt = prompt_ids.shape[-1]
    block_list = LogitsProcessorList(
        [BlockTokenRangeProcessor(0, 46358), BlockTokenRangeProcessor(53526, vocab_end)]
    )
    for frames_idx in range(codec_ids.shape[1]):
        cb0 = codec_ids[:, frames_idx : frames_idx + 1]
        prompt_ids = torch.cat([prompt_ids, cb0], dim=1)
        with torch.no_grad():
            stage2_output = model.generate(
                input_ids=prompt_ids,
                min_new_tokens=7,
                max_new_tokens=7,
                eos_token_id=32002,
                pad_token_id=32002,
                logits_processor=block_list,
                do_sample=False,
            )
        assert stage2_output.shape[1] - prompt_ids.shape[1] == 7
        prompt_ids = stage2_output
    return prompt_ids.numpy()[:, len_prompt:]
