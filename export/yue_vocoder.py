"""YuE's 44.1 kHz upsampler in its own layout (xcodec_mini_infer/decoders): `yue-vocoder/`.

Writes `config.yaml` (same keys and class paths as decoders/config.yaml) and the two decoders as
plain `torch.save(state_dict)` files under their original names (`v2bgm.yue.vocoder`).

Full follows decoders/config.yaml: input 1024 (X-Codec's RVQ width), dim 512, intermediate 1536,
8 ConvNeXt blocks, n_fft 3528, hop 882 (about 18M parameters per decoder). Tiny shrinks the
backbone but keeps n_fft and hop (they fix 44.1 kHz and 882 samples per frame) and takes its input
width from the tiny X-Codec, whose RVQ embedding it decodes.

Random weights follow the original's init (`VocosBackbone._init_weights`): conv and linear weights
truncated normal with std 0.02, biases 0; LayerNorms at 1/0; layer scale 1/num_layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from export.weights import Size, count_parameters, count_parameters_on_meta, seed_all
from export.xcodec import xcodec_config
from v2bgm.yue.vocoder import CONFIG_FILE, DECODER_FILES
from v2bgm.yue.vocos import VocosConfig, VocosDecoder

N_FFT = 3528
HOP_LENGTH = 882
INIT_STD = 0.02
FULL_BACKBONE = {"dim": 512, "intermediate_dim": 1536, "num_layers": 8}
TINY_BACKBONE = {"dim": 16, "intermediate_dim": 32, "num_layers": 2}


def vocoder_config(size: Size) -> VocosConfig:
    backbone = TINY_BACKBONE if size is Size.TINY else FULL_BACKBONE
    input_channels = int(xcodec_config(size).codebook_dim)  # 1024 at full size
    return VocosConfig(
        input_channels=input_channels, n_fft=N_FFT, hop_length=HOP_LENGTH, **backbone
    )


@torch.no_grad()
def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=INIT_STD)
        nn.init.zeros_(module.bias)


def export_yue_vocoder(size: Size, out_dir: Path, *, seed: int, device: str) -> int:
    config = vocoder_config(size)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    seed_all(seed)  # vocal first, then instrumental: different weights from one seed
    count = 0
    for name in DECODER_FILES.values():
        with torch.device(device):
            decoder = VocosDecoder(config)
        decoder.apply(_init_weights)
        state = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
        torch.save(state, out_dir / name)
        count += count_parameters(decoder)
    return count


def yue_vocoder_parameter_count(size: Size) -> int:
    """Both decoders."""
    return len(DECODER_FILES) * count_parameters_on_meta(lambda: VocosDecoder(vocoder_config(size)))
