"""X-Codec, YuE's audio codec, as `transformers`' `XcodecModel`.

Full size follows YuE's `xcodec_mini_infer/final_ckpt/config.yaml` (SoundStream generator):
16 kHz, DAC ratios 8,5,4,2 (hop 320 = 50 frames/s), acoustic dim D=256, codebooks of 1024,
target bandwidths up to 6 kbps = 12 codebooks (0.5 kbps each), a HuBERT-base semantic teacher
(768 hidden, 12 layers; `semantic_ckpts/hf_1_325000/config.json` equals `HubertConfig()`). So the
RVQ works in 256 + 768 = 1024 dims and `fc2` is Linear 1024 -> 256 before the DAC decoder
(decoder width 1024), as in the notes.

Tiny keeps what the serving code depends on (16 kHz, hop 320, codebooks of 1024, 8 codebooks =
what stage 2 produces) and shrinks every width and depth.

`XcodecModel` initialises its RVQ codebooks to zeros, which would decode every code to the same
frame; we fill them with seeded noise so that different codes give different audio.

The folder is written the way real weights get there: the random model is saved in YuE's ORIGINAL
layout (xcodec_mini_infer's SoundStream checkpoint, `export/xcodec_original.py`) and converted back
with `export/convert_xcodec.py`, so every build exercises the converter.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import XcodecConfig, XcodecModel

from export.convert_xcodec import convert_checkpoint
from export.weights import Size, build_model, count_parameters, count_parameters_on_meta
from export.xcodec_original import write_original_checkpoint

SAMPLE_RATE = 16000
DAC_RATIOS = (8, 5, 4, 2)  # product 320: the hop
CODEBOOK_SIZE = 1024
FULL_BANDWIDTHS_KBPS = (0.5, 1, 1.5, 2, 4, 6)  # 6 kbps / 0.5 kbps per codebook = 12 codebooks
TINY_BANDWIDTHS_KBPS = (0.5, 1, 1.5, 2, 4)  # 8 codebooks
FULL_ACOUSTIC_DIM = 256  # D
FULL_ENCODER_WIDTH = 64
FULL_DECODER_WIDTH = 1024
CODEBOOK_INIT_STD = 1.0
XCODEC_DTYPE = torch.float32  # the codec runs in float32 in YuE, at every size

# Tiny widths: the DAC decoder halves its width at each of the 4 upsampling blocks, so it must be
# a multiple of 16; HuBERT's positional conv groups must divide its hidden size.
TINY_ACOUSTIC = {
    "encoder_hidden_size": 4,
    "decoder_hidden_size": 32,
    "hidden_size": 8,
    "n_codebooks": 2,  # DAC's own quantizer is built and then dropped by XcodecModel
    "codebook_size": 16,
    "codebook_dim": 4,
}
TINY_HUBERT = {
    "model_type": "hubert",
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_dim": [16] * 7,  # the kernels/strides stay HuBERT's: 320 samples per frame
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def xcodec_config(size: Size) -> XcodecConfig:
    acoustic = {
        "downsampling_ratios": list(DAC_RATIOS),
        "upsampling_ratios": list(DAC_RATIOS),
        "sampling_rate": SAMPLE_RATE,
    }
    if size is Size.TINY:
        return XcodecConfig(
            target_bandwidths=list(TINY_BANDWIDTHS_KBPS),
            sample_rate=SAMPLE_RATE,
            codebook_size=CODEBOOK_SIZE,
            acoustic_model_config={**acoustic, **TINY_ACOUSTIC},
            semantic_model_config=dict(TINY_HUBERT),
            dtype=XCODEC_DTYPE,
        )
    return XcodecConfig(
        target_bandwidths=list(FULL_BANDWIDTHS_KBPS),
        sample_rate=SAMPLE_RATE,
        codebook_size=CODEBOOK_SIZE,
        acoustic_model_config={
            **acoustic,
            "encoder_hidden_size": FULL_ENCODER_WIDTH,
            "decoder_hidden_size": FULL_DECODER_WIDTH,
            "hidden_size": FULL_ACOUSTIC_DIM,
        },
        semantic_model_config={"model_type": "hubert"},  # HuBERT base
        dtype=XCODEC_DTYPE,
    )


@torch.no_grad()
def randomize_codebooks(model: XcodecModel) -> None:
    for quantizer in model.quantizer.quantizers:
        codebook = quantizer.codebook
        codebook.embed.normal_(std=CODEBOOK_INIT_STD)
        codebook.embed_avg.copy_(codebook.embed)
        codebook.cluster_size.fill_(1.0)


def export_xcodec(size: Size, out_dir: Path, *, seed: int, device: str) -> int:
    model = build_model(
        XcodecModel, xcodec_config(size), seed=seed, dtype=XCODEC_DTYPE, device=device
    )
    randomize_codebooks(model)
    with tempfile.TemporaryDirectory(prefix="xcodec-original-") as tmp:
        original = write_original_checkpoint(model, Path(tmp), seed=seed)
        convert_checkpoint(original.checkpoint, original.config, out_dir)
    return count_parameters(model)


def xcodec_parameter_count(size: Size) -> int:
    return count_parameters_on_meta(lambda: XcodecModel(xcodec_config(size)))
