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
# Not on the hub: in YuE's GitHub repository, pinned to a commit, with the file's SHA-256 (read
# from that commit's blob, 1,761,962 bytes; tests/reference checks it against YuE's own code).
YUE_REPOSITORY_COMMIT = "9f1394bae1d8d218fea750c1413c2d9d731c7310"
YUE_TOKENIZER_URL = (
    "https://raw.githubusercontent.com/multimodal-art-projection/YuE/"
    f"{YUE_REPOSITORY_COMMIT}/inference/mm_tokenizer_v0.2_hf/tokenizer.model"
)
YUE_TOKENIZER_SHA256 = "ee5c7cbf32da93989f14d9ba635e3e1d1ab2cc88a92908a5ed0f149375f6ee49"
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
