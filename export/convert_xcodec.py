"""Convert YuE's X-Codec checkpoint to `transformers`' `XcodecModel` layout.

    X=xcodec_mini_infer   # m-a-p/xcodec_mini_infer (hub), or YuE's own commit 14153f7's copy
    python -m export.convert_xcodec --checkpoint $X/final_ckpt/ckpt_00360000.pth \\
        --config $X/final_ckpt/config.yaml --out WEIGHTS/xcodec

YuE's codec is `SoundStream` in xcodec_mini_infer/models/soundstream_hubert_new.py; infer.py builds
it from `config.yaml` (`generator.config`) and loads `torch.load(ckpt)["codec_model"]`. The same
network exists in `transformers` as `XcodecModel`, but the checkpoint does not load into it as is:

- every name differs (`decoder_2.model.N.block.M...` -> `acoustic_decoder.block.i.res_unitj...`,
  `quantizer.vq.layers.k._codebook` -> `quantizer.quantizers.k.codebook`, `fc_prior/fc_post1/
  fc_post2` -> `fc/fc1/fc2`, RepCodec's `conv.conv` wrappers -> `conv`; see `module_pairs`);
- the DAC convolutions carry old-style weight norm (`weight_g`, `weight_v`), which `XcodecModel`
  does not have by default: we fold it, `weight = g * v / ||v||` (norm over all dims but 0, as
  `torch.nn.utils.weight_norm(dim=0)` computes it, also for the transposed convolutions);
- the embedded HuBERT keeps its names; only its positional conv's weight norm is renamed to the
  parametrization names (`weight_g/weight_v` -> `parametrizations.weight.original0/1`);
- widths that SoundStream hard-codes (DAC encoder 64, DAC decoder 1024, HuBERT 768) are read from
  the weight shapes; the HuBERT config comes from `semantic_ckpts/hf_1_325000/config.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HubertConfig, XcodecConfig, XcodecModel

CODEC_STATE_KEY = "codec_model"  # infer.py: `torch.load(resume_path)["codec_model"]`
GENERATOR_NAME = "SoundStream"
# xcodec_mini_infer/final_ckpt/config.yaml -> xcodec_mini_infer/semantic_ckpts/hf_1_325000/
SEMANTIC_CONFIG_FROM_CODEC_CONFIG = Path("../semantic_ckpts/hf_1_325000/config.json")

PADDED_DECODER_BLOCK = 1  # dac.Decoder in xcodec_mini_infer: `out_pad = 1 if i == 1 else 0`
RESIDUAL_UNITS = 3  # DAC: dilations 1, 3, 9 in every encoder and decoder block
RESIDUAL_UNIT_LAYERS = ("snake1", "conv1", "snake2", "conv2")  # the original's block.0 .. block.3
SNAKE = ("alpha",)
CONV = ("weight", "bias")
CONV_NO_BIAS = ("weight",)
CODEBOOK = ("inited", "cluster_size", "embed", "embed_avg")
WEIGHT_G, WEIGHT_V = "weight_g", "weight_v"
HUBERT_POS_CONV = "semantic_model.encoder.pos_conv_embed.conv."
PARAMETRIZED_G = "parametrizations.weight.original0"
PARAMETRIZED_V = "parametrizations.weight.original1"
TO_PARAMETRIZED = {WEIGHT_G: PARAMETRIZED_G, WEIGHT_V: PARAMETRIZED_V}
FROM_PARAMETRIZED = {v: k for k, v in TO_PARAMETRIZED.items()}
V_SCALE_RANGE = (0.5, 2.0)  # ||v|| / g in the original-layout checkpoints we write


@dataclass(frozen=True)
class ModulePair:
    """One module in both layouts. Weight-normed modules have `weight_g/weight_v/bias` in the
    original and a plain `weight/bias` in `XcodecModel`; the others keep their parameter names."""

    original: str
    converted: str
    params: tuple[str, ...]
    weight_norm: bool = False


def _wn_conv(original: str, converted: str) -> ModulePair:
    return ModulePair(original, converted, CONV, weight_norm=True)


def _residual_unit(original: str, converted: str) -> Iterator[ModulePair]:
    """DAC's ResidualUnit: `block = Sequential(Snake1d, WNConv1d, Snake1d, WNConv1d)`."""
    for index, name in enumerate(RESIDUAL_UNIT_LAYERS):
        if name.startswith("snake"):
            yield ModulePair(f"{original}.block.{index}", f"{converted}.{name}", SNAKE)
        else:
            yield _wn_conv(f"{original}.block.{index}", f"{converted}.{name}")


def _acoustic_encoder(blocks: int) -> Iterator[ModulePair]:
    """dac.model.dac.Encoder: block = [WNConv1d, EncoderBlock x n, Snake1d, WNConv1d];
    EncoderBlock.block = [ResidualUnit x 3, Snake1d, WNConv1d]."""
    yield _wn_conv("encoder.block.0", "acoustic_encoder.conv1")
    for i in range(blocks):
        original, converted = f"encoder.block.{i + 1}.block", f"acoustic_encoder.block.{i}"
        for unit in range(RESIDUAL_UNITS):
            yield from _residual_unit(f"{original}.{unit}", f"{converted}.res_unit{unit + 1}")
        yield ModulePair(f"{original}.{RESIDUAL_UNITS}", f"{converted}.snake1", SNAKE)
        yield _wn_conv(f"{original}.{RESIDUAL_UNITS + 1}", f"{converted}.conv1")
    yield ModulePair(f"encoder.block.{blocks + 1}", "acoustic_encoder.snake1", SNAKE)
    yield _wn_conv(f"encoder.block.{blocks + 2}", "acoustic_encoder.conv2")


def _acoustic_decoder(blocks: int) -> Iterator[ModulePair]:
    """dac.model.dac.Decoder (SoundStream.decoder_2): model = [WNConv1d, DecoderBlock x n, Snake1d,
    WNConv1d]; DecoderBlock.block = [Snake1d, WNConvTranspose1d, ResidualUnit x 3]."""
    yield _wn_conv("decoder_2.model.0", "acoustic_decoder.conv1")
    for i in range(blocks):
        original, converted = f"decoder_2.model.{i + 1}.block", f"acoustic_decoder.block.{i}"
        yield ModulePair(f"{original}.0", f"{converted}.snake1", SNAKE)
        yield _wn_conv(f"{original}.1", f"{converted}.conv_t1")
        for unit in range(RESIDUAL_UNITS):
            yield from _residual_unit(f"{original}.{unit + 2}", f"{converted}.res_unit{unit + 1}")
    yield ModulePair(f"decoder_2.model.{blocks + 1}", "acoustic_decoder.snake1", SNAKE)
    yield _wn_conv(f"decoder_2.model.{blocks + 2}", "acoustic_decoder.conv2")


def _semantic_residual_units(prefix: str, units: int) -> Iterator[ModulePair]:
    """RepCodec's ResidualUnit: conv1 is its `Conv1d` wrapper (`.conv`), conv2 a bare Conv1d;
    both without bias."""
    for u in range(units):
        yield ModulePair(f"{prefix}.{u}.conv1.conv", f"{prefix}.{u}.conv1", CONV_NO_BIAS)
        yield ModulePair(f"{prefix}.{u}.conv2", f"{prefix}.{u}.conv2", CONV_NO_BIAS)


def _semantic_encoder(blocks: int, units: int) -> Iterator[ModulePair]:
    """RepCodec Encoder (SoundStream.encoder_semantic)."""
    yield ModulePair("encoder_semantic.conv.conv", "encoder_semantic.conv", CONV_NO_BIAS)
    for b in range(blocks):
        block = f"encoder_semantic.conv_blocks.{b}"  # same path in both layouts
        yield from _semantic_residual_units(f"{block}.res_units", units)
        yield ModulePair(f"{block}.conv.conv", f"{block}.conv", CONV)


def _semantic_decoder(blocks: int, units: int) -> Iterator[ModulePair]:
    """RepCodec Decoder (SoundStream.decoder_semantic); stride-1 blocks only (`check_config`)."""
    yield ModulePair("decoder_semantic.conv1.conv", "decoder_semantic.conv1", CONV_NO_BIAS)
    for b in range(blocks):
        block = f"decoder_semantic.conv_blocks.{b}"
        yield ModulePair(f"{block}.conv.conv", f"{block}.conv", CONV)
        yield from _semantic_residual_units(f"{block}.res_units", units)
    yield ModulePair("decoder_semantic.conv2.conv", "decoder_semantic.conv2", CONV_NO_BIAS)


def module_pairs(config: XcodecConfig) -> list[ModulePair]:
    """Every module outside the HuBERT, original name -> `XcodecModel` name."""
    blocks = len(config.acoustic_model_config.upsampling_ratios)
    semantic_blocks, units = len(config.strides), len(config.block_dilations)
    pairs = [
        *_acoustic_encoder(blocks),
        *_acoustic_decoder(blocks),
        *_semantic_encoder(semantic_blocks, units),
        *_semantic_decoder(semantic_blocks, units),
        ModulePair("fc_prior", "fc", CONV),
        ModulePair("fc_post1", "fc1", CONV),
        ModulePair("fc_post2", "fc2", CONV),
    ]
    for k in range(config.num_quantizers):
        original, converted = f"quantizer.vq.layers.{k}._codebook", f"quantizer.quantizers.{k}"
        pairs.append(ModulePair(original, f"{converted}.codebook", CODEBOOK))
    return pairs


def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`torch.nn.utils.weight_norm(dim=0)`'s weight, computed in float64 and stored in v's dtype
    (the original recomputes it in float32 at every forward; the two differ by rounding only)."""
    weight = g.double() * v.double() / _norm_except_dim0(v.double())
    return weight.to(v.dtype)


def unfold_weight_norm(
    weight: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (g, v) pair whose weight-normed weight is `weight`. v is `weight` scaled by a random
    positive factor per output slice, as trained checkpoints have ||v|| != g."""
    scale = torch.empty(weight.shape[0], dtype=torch.float64)
    scale.uniform_(*V_SCALE_RANGE, generator=generator)
    v = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    return _norm_except_dim0(weight.double()).to(weight.dtype), v.to(weight.dtype)


def _rename_hubert(key: str, renames: Mapping[str, str]) -> str:
    """HuBERT keeps its names; only its positional conv's weight-norm parameters differ."""
    if key.startswith(HUBERT_POS_CONV):
        suffix = key[len(HUBERT_POS_CONV) :]
        return HUBERT_POS_CONV + renames.get(suffix, suffix)
    return key


def convert_state_dict(
    original: Mapping[str, torch.Tensor], config: XcodecConfig
) -> dict[str, torch.Tensor]:
    """SoundStream state dict -> `XcodecModel` state dict. Raises on missing or unknown keys."""
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in original:
            raise KeyError(f"the X-Codec checkpoint has no {key!r}")
        used.add(key)
        return original[key]

    for pair in module_pairs(config):
        if pair.weight_norm:
            g, v = take(f"{pair.original}.{WEIGHT_G}"), take(f"{pair.original}.{WEIGHT_V}")
            converted[f"{pair.converted}.weight"] = fold_weight_norm(g, v)
            converted[f"{pair.converted}.bias"] = take(f"{pair.original}.bias")
        else:
            for param in pair.params:
                converted[f"{pair.converted}.{param}"] = take(f"{pair.original}.{param}")
    for key, value in original.items():
        if key.startswith("semantic_model."):
            converted[_rename_hubert(key, TO_PARAMETRIZED)] = value
            used.add(key)
    unknown = sorted(set(original) - used)
    if unknown:
        raise KeyError(f"keys this converter does not know: {unknown[:10]} ({len(unknown)})")
    return converted


def to_original_state_dict(
    converted: Mapping[str, torch.Tensor], config: XcodecConfig, *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The inverse of `convert_state_dict`: `XcodecModel` state dict -> SoundStream's names, with
    the DAC convolutions weight-normed again (old-style `weight_g/weight_v`, as SoundStream has)."""
    generator = torch.Generator().manual_seed(seed)
    original: dict[str, torch.Tensor] = {}
    for pair in module_pairs(config):
        if pair.weight_norm:
            g, v = unfold_weight_norm(converted[f"{pair.converted}.weight"], generator)
            original[f"{pair.original}.{WEIGHT_G}"] = g
            original[f"{pair.original}.{WEIGHT_V}"] = v
            original[f"{pair.original}.bias"] = converted[f"{pair.converted}.bias"]
        else:
            for param in pair.params:
                original[f"{pair.original}.{param}"] = converted[f"{pair.converted}.{param}"]
    for key, value in converted.items():
        if key.startswith("semantic_model."):
            original[_rename_hubert(key, FROM_PARAMETRIZED)] = value
    return original


def check_config(config: XcodecConfig) -> None:
    """Refuse what `XcodecModel` cannot express for a SoundStream checkpoint."""
    for i, stride in enumerate(config.acoustic_model_config.upsampling_ratios):
        # dac.Decoder in xcodec_mini_infer pads the output of block 1 only; XcodecModel pads every
        # odd stride. The same for YuE's ratios 8, 5, 4, 2, not in general.
        if (i == PADDED_DECODER_BLOCK) != (stride % 2 == 1):
            raise ValueError(
                f"upsampling ratio {stride} at block {i}: the output padding differs between "
                "SoundStream and XcodecModel"
            )
    if any(stride != 1 for stride in config.strides):
        # RepCodec's transposed convs have a bias, XcodecModel's do not.
        raise ValueError("semantic strides other than 1 are not supported")


def xcodec_config_from_original(
    generator_config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    semantic_config: HubertConfig,
) -> XcodecConfig:
    """`XcodecConfig` for a SoundStream: numbers from `generator.config`, the widths SoundStream
    hard-codes from the weight shapes, HuBERT from its own config."""
    ratios = list(generator_config["ratios"])
    acoustic_dim = int(generator_config["D"])
    semantic_dim = int(state["fc_post1.weight"].shape[0])
    if semantic_dim != semantic_config.hidden_size:
        raise ValueError(
            f"HuBERT config says hidden {semantic_config.hidden_size}, weights say {semantic_dim}"
        )
    if state["fc_post2.weight"].shape[0] != acoustic_dim:
        shape = tuple(state["fc_post2.weight"].shape)
        raise ValueError(f"config D={acoustic_dim} but fc_post2.weight is {shape}")
    config = XcodecConfig(
        target_bandwidths=list(generator_config["target_bandwidths"]),
        sample_rate=int(generator_config["sample_rate"]),
        codebook_size=int(generator_config["bins"]),
        acoustic_model_config={
            "encoder_hidden_size": int(state[f"encoder.block.0.{WEIGHT_V}"].shape[0]),
            "decoder_hidden_size": int(state[f"decoder_2.model.0.{WEIGHT_V}"].shape[0]),
            "hidden_size": acoustic_dim,
            "downsampling_ratios": ratios,
            "upsampling_ratios": ratios,
            "sampling_rate": int(generator_config["sample_rate"]),
        },
        semantic_model_config=semantic_config.to_dict(),
        dtype=torch.float32,
    )
    check_config(config)
    return config


def load_original_state_dict(path: Path, *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals([io.BytesIO]):  # some X-Codec dumps carry BytesIO
            checkpoint = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as error:
        raise RuntimeError(
            f"{path} holds objects other than tensors; if you trust it, pass --unsafe-pickle "
            "(YuE's infer.py loads it with weights_only=False)"
        ) from error
    if CODEC_STATE_KEY not in checkpoint:
        raise KeyError(f"{path} has no {CODEC_STATE_KEY!r} entry (keys: {list(checkpoint)[:10]})")
    return {k: v for k, v in checkpoint[CODEC_STATE_KEY].items() if isinstance(v, torch.Tensor)}


def load_semantic_config(codec_config: Path, semantic_config: Path | None) -> HubertConfig:
    """The given HuBERT config.json, else the one next to the codec config in xcodec_mini_infer,
    else `HubertConfig()` (equal to YuE's hf_1_325000/config.json in every shape)."""
    path = semantic_config or codec_config.parent / SEMANTIC_CONFIG_FROM_CODEC_CONFIG
    if path.is_file():
        return HubertConfig(**json.loads(path.read_text()))
    if semantic_config is not None:
        raise FileNotFoundError(semantic_config)
    return HubertConfig()


@torch.no_grad()
def convert_checkpoint(
    checkpoint: Path,
    codec_config: Path,
    out_dir: Path,
    *,
    semantic_config: Path | None = None,
    unsafe_pickle: bool = False,
) -> XcodecModel:
    """Convert and `save_pretrained` into `out_dir`; returns the loaded model."""
    generator = yaml.safe_load(codec_config.read_text())["generator"]
    if generator["name"] != GENERATOR_NAME:
        raise ValueError(f"expected a {GENERATOR_NAME} generator, got {generator['name']}")
    state = load_original_state_dict(checkpoint, unsafe_pickle=unsafe_pickle)
    hubert = load_semantic_config(codec_config, semantic_config)
    config = xcodec_config_from_original(generator["config"], state, hubert)
    model = XcodecModel(config).eval()
    model.load_state_dict(convert_state_dict(state, config), strict=True)
    model.save_pretrained(out_dir)
    return model


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export.convert_xcodec", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", type=Path, required=True, help="final_ckpt/ckpt_*.pth")
    parser.add_argument("--config", type=Path, required=True, help="final_ckpt/config.yaml")
    parser.add_argument("--out", type=Path, required=True, help="output folder (XcodecModel)")
    parser.add_argument(
        "--semantic-config", type=Path,
        help="HuBERT config.json (default: ../semantic_ckpts/hf_1_325000/config.json next to "
        "--config, else HubertConfig())",
    )  # fmt: skip
    parser.add_argument(
        "--unsafe-pickle", action="store_true",
        help="load the checkpoint with weights_only=False (only for a file you trust)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = convert_checkpoint(
        args.checkpoint,
        args.config,
        args.out,
        semantic_config=args.semantic_config,
        unsafe_pickle=args.unsafe_pickle,
    )
    config = model.config
    print(
        f"wrote {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{config.num_quantizers} codebooks of {config.codebook_size}, dim {config.codebook_dim}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
