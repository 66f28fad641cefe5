"""How far stage 1's FP8 weights move its predictions from the same weights in bf16.

    python -m v2bgm.bench.precision --weights models/full --device cuda [--tokens 256]

Both engines read the same token sequence (stage 1's own greedy continuation of a prompt, made
in bf16) one position at a time, and each step's logits are compared:

- max and mean absolute logit error (over the whole vocabulary), beside the logits' spread;
- KL(bf16 || fp8) of the next-token distribution over the ids stage 1 may sample (codebook 0
  and <EOA>), at temperature 1 before CFG and the sampler's filters, mean and worst step;
- greedy agreement: the share of steps whose most likely allowed id is the same.

Run it on the published weights before serving `precision: fp8` (docs/speed.md): random weights
give near-flat distributions, on which any rounding flips more argmaxes than real ones do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from v2bgm import checkpoints
from v2bgm.bench.report import finish
from v2bgm.devices import model_dtype
from v2bgm.engine.llama import Part, StaticLlama
from v2bgm.yue import tokens
from v2bgm.yue.stage1 import Stage1, Stage1Settings, allowed_mask
from v2bgm.yue.tokenizer import YuETokenizer

TAGS = "cinematic orchestral piano uplifting"


@torch.inference_mode()
def teacher_forced_logits(model: StaticLlama, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """fp32 logits [len(ids) - prompt, V]: row i predicts ids[prompt + i] from ids before it
    (the prompt in one forward, then one position per step, as decoding runs)."""
    device = model.device
    seq = ids.to(device)[None]
    pool = model.pool(1, seq.shape[1])
    positions = torch.arange(seq.shape[1], device=device)[None]
    out = [model.forward(seq[:, :prompt], positions[:, :prompt], [Part(pool, 0, 1, prompt)])]
    for p in range(prompt, seq.shape[1] - 1):
        step = [Part(pool, 0, 1, p + 1)]
        out.append(model.forward(seq[:, p : p + 1], positions[:, p : p + 1], step))
    return torch.cat(out).float()


def compare(reference: torch.Tensor, candidate: torch.Tensor, allowed: torch.Tensor) -> dict:
    """Logits [steps, V] of two models at the same positions; `allowed` [V] bool."""
    error = (candidate - reference).abs()
    p = reference[:, allowed].log_softmax(-1)
    q = candidate[:, allowed].log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    return {
        "steps": reference.shape[0],
        "max_abs_logit_error": error.max().item(),
        "mean_abs_logit_error": error.mean().item(),
        "reference_logit_std": reference.std().item(),
        "kl_allowed_mean": kl.mean().item(),
        "kl_allowed_max": kl.max().item(),
        "greedy_agreement": (p.argmax(-1) == q.argmax(-1)).float().mean().item(),
    }


def continuation(model: StaticLlama, tokenizer: YuETokenizer, new_tokens: int) -> tuple:
    """Stage 1's greedy ids for one instrumental prompt: (ids, prompt length)."""
    settings = Stage1Settings(
        max_segment_tokens=new_tokens, min_segment_tokens=new_tokens, do_sample=False
    )
    sections = tokens.split_sections(tokens.INSTRUMENTAL_LYRICS)
    out = Stage1(model, tokenizer, settings, slots=1).generate(TAGS, sections, new_tokens // 2, 0)
    ids = torch.as_tensor(out.ids, dtype=torch.long)
    return ids, len(ids) - out.tokens


def fp8_against_bf16(model: StaticLlama, fp8: StaticLlama, tokenizer, new_tokens: int) -> dict:
    ids, prompt = continuation(model, tokenizer, new_tokens)
    allowed = allowed_mask(model.vocab_size, False, torch.device("cpu")) == 0
    reference = teacher_forced_logits(model, ids, prompt).cpu()
    candidate = teacher_forced_logits(fp8, ids, prompt).cpu()
    return {"prompt_tokens": prompt, **compare(reference, candidate, allowed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("models/full"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=256, help="positions compared")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    tokenizer = YuETokenizer(args.weights / checkpoints.YUE_TOKENIZER)
    s1 = AutoModelForCausalLM.from_pretrained(
        args.weights / checkpoints.YUE_STAGE1, dtype=model_dtype(args.device)
    )
    s1 = s1.to(args.device).eval()
    report = fp8_against_bf16(
        StaticLlama(s1), StaticLlama(s1, precision="fp8"), tokenizer, args.tokens
    )
    return finish(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
