"""Where each checkpoint lives inside a weights folder (models/tiny, models/full, real weights).

The tiny random-weight checkpoints built by `export/` and the real ones converted from the hub use
the same layout, so the server loads both through the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

VIDEOLLAMA3 = "videollama3"  # transformers `video_llama_3` layout (model + processor + tokenizer)
YUE_STAGE1 = "yue-s1"  # m-a-p/YuE-s1-7B-anneal-en-cot layout (LlamaForCausalLM)
YUE_STAGE2 = "yue-s2"  # m-a-p/YuE-s2-1B-general layout (LlamaForCausalLM)
YUE_TOKENIZER = "yue-tokenizer/tokenizer.model"  # YuE's mm_tokenizer_v0.2_hf SentencePiece model
XCODEC = "xcodec"  # transformers `xcodec` layout (XcodecModel), converted from YuE's X-Codec
# YuE's 44.1 kHz upsampler, in its own layout (xcodec_mini_infer/decoders): config.yaml and the
# vocal and instrumental decoder weights.
YUE_VOCODER = "yue-vocoder"

WEIGHTS_ENV = "V2BGM_WEIGHTS"
DEFAULT_WEIGHTS = Path("models/tiny")


def weights_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The weights folder: an explicit path, else $V2BGM_WEIGHTS, else ./models/tiny."""
    if override:
        return Path(override)
    return Path(os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)
