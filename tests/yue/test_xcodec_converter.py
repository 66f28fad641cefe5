"""YuE's X-Codec checkpoint (SoundStream layout) -> transformers' XcodecModel."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import HubertConfig, XcodecConfig, XcodecModel

from export.convert_xcodec import (
    check_config,
    convert_state_dict,
    fold_weight_norm,
    xcodec_config_from_original,
)
from export.weights import Size
from export.xcodec import xcodec_config
from export.xcodec_original import OriginalCheckpoint, reference_decode
from v2bgm.yue.codec import XcodecDecoder

TINY_CODEBOOKS = 8  # what stage 2 writes
FRAMES = 50  # 1 s
HOP = 320

WN = r"\.(weight_g|weight_v|bias)"
# Every parameter of xcodec_mini_infer's SoundStream (4 DAC blocks, 2 RepCodec blocks of 2 units),
# written from the original modules (dac.model.dac, RepCodec modules, quantization/core_vq_lsx).
ORIGINAL_KEYS = [
    rf"encoder\.block\.0{WN}",
    r"encoder\.block\.[1-4]\.block\.[0-2]\.block\.[02]\.alpha",
    rf"encoder\.block\.[1-4]\.block\.[0-2]\.block\.[13]{WN}",
    r"encoder\.block\.[1-4]\.block\.3\.alpha",
    rf"encoder\.block\.[1-4]\.block\.4{WN}",
    r"encoder\.block\.5\.alpha",
    rf"encoder\.block\.6{WN}",
    rf"decoder_2\.model\.0{WN}",
    r"decoder_2\.model\.[1-4]\.block\.0\.alpha",
    rf"decoder_2\.model\.[1-4]\.block\.1{WN}",
    r"decoder_2\.model\.[1-4]\.block\.[2-4]\.block\.[02]\.alpha",
    rf"decoder_2\.model\.[1-4]\.block\.[2-4]\.block\.[13]{WN}",
    r"decoder_2\.model\.5\.alpha",
    rf"decoder_2\.model\.6{WN}",
    r"encoder_semantic\.conv\.conv\.weight",
    r"(en|de)coder_semantic\.conv_blocks\.[01]\.res_units\.[01]\.conv1\.conv\.weight",
    r"(en|de)coder_semantic\.conv_blocks\.[01]\.res_units\.[01]\.conv2\.weight",
    r"(en|de)coder_semantic\.conv_blocks\.[01]\.conv\.conv\.(weight|bias)",
    r"decoder_semantic\.conv[12]\.conv\.weight",
    r"fc_(prior|post1|post2)\.(weight|bias)",
    r"quantizer\.vq\.layers\.[0-7]\._codebook\.(inited|cluster_size|embed|embed_avg)",
    r"semantic_model\.encoder\.pos_conv_embed\.conv\.(weight_g|weight_v|bias)",
    r"semantic_model\.(?!encoder\.pos_conv_embed).*",
]


def test_original_checkpoint_has_soundstream_names(original_state: dict[str, torch.Tensor]) -> None:
    unmatched = [k for k in original_state if not any(re.fullmatch(p, k) for p in ORIGINAL_KEYS)]
    unused = [p for p in ORIGINAL_KEYS if not any(re.fullmatch(p, k) for k in original_state)]
    assert not unmatched and not unused
    # WNConvTranspose1d: weight [in, out, k], weight_norm(dim=0) -> g [in, 1, 1]
    assert original_state["decoder_2.model.1.block.1.weight_v"].shape == (32, 16, 16)
    assert original_state["decoder_2.model.1.block.1.weight_g"].shape == (32, 1, 1)


def test_weight_norm_is_folded_not_copied(original_state: dict[str, torch.Tensor]) -> None:
    g = original_state["decoder_2.model.0.weight_g"]
    v = original_state["decoder_2.model.0.weight_v"]
    assert not torch.allclose(v.flatten(1).norm(dim=1), g.flatten())  # ||v|| != g, as trained
    weight = fold_weight_norm(g, v)
    torch.testing.assert_close(weight.flatten(1).norm(dim=1), g.flatten())
    torch.testing.assert_close(weight / g, v / v.flatten(1).norm(dim=1)[:, None, None])


def test_round_trip_gives_back_every_tensor(
    tiny_xcodec: XcodecModel, original_state: dict[str, torch.Tensor]
) -> None:
    expected = tiny_xcodec.state_dict()
    converted = convert_state_dict(original_state, tiny_xcodec.config)
    assert converted.keys() == expected.keys()
    for key, value in expected.items():
        if key.endswith(".weight") and key.startswith("acoustic_"):  # weight-normed: rounding
            torch.testing.assert_close(converted[key], value, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(converted[key], value), key


def test_converted_decode_equals_the_original_decode_path(
    converted_dir: Path, original_state: dict[str, torch.Tensor]
) -> None:
    model = XcodecModel.from_pretrained(converted_dir).eval()
    codes = torch.randint(
        0, 1024, (1, TINY_CODEBOOKS, FRAMES), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        ours = model.decode(codes).audio_values
    ratios = list(model.config.acoustic_model_config.upsampling_ratios)
    reference = reference_decode(original_state, codes.transpose(0, 1), ratios)
    assert ours.shape == reference.shape == (1, 1, FRAMES * HOP)
    # Only the folded weight norm rounds differently (float64 once vs float32 every forward).
    scale = reference.abs().max()
    assert scale > 0
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5 * float(scale))
    decoder = XcodecDecoder(model)
    np.testing.assert_array_equal(decoder.decode(codes[0].numpy()), ours[0, 0].numpy())


def test_converted_folder_loads_without_missing_or_extra_keys(converted_dir: Path) -> None:
    model, info = XcodecModel.from_pretrained(converted_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_quantizers == TINY_CODEBOOKS
    assert model.config.hop_length == HOP and model.config.frame_rate == 50


def test_codec_embeddings_are_the_sum_of_codebook_rows(
    converted_dir: Path, original_state: dict[str, torch.Tensor]
) -> None:
    decoder = XcodecDecoder(XcodecModel.from_pretrained(converted_dir).eval())
    codes = np.random.default_rng(0).integers(0, 1024, (TINY_CODEBOOKS, 7))
    expected = sum(
        original_state[f"quantizer.vq.layers.{k}._codebook.embed"][codes[k]]
        for k in range(TINY_CODEBOOKS)
    )
    embeddings = decoder.embeddings(codes)
    assert embeddings.shape == (1, decoder.model.config.codebook_dim, 7)
    torch.testing.assert_close(embeddings[0].T, expected)


def test_parametrized_hubert_names_convert_too(
    tiny_xcodec: XcodecModel, original_state: dict[str, torch.Tensor]
) -> None:
    """A checkpoint saved under a newer transformers has HuBERT's pos-conv weight norm as
    parametrizations; both spellings must give the same model."""
    old = "semantic_model.encoder.pos_conv_embed.conv.weight_"
    new = "semantic_model.encoder.pos_conv_embed.conv.parametrizations.weight.original"
    renamed = {
        k.replace(f"{old}g", f"{new}0").replace(f"{old}v", f"{new}1"): v
        for k, v in original_state.items()
    }
    assert renamed.keys() != original_state.keys()
    a = convert_state_dict(original_state, tiny_xcodec.config)
    b = convert_state_dict(renamed, tiny_xcodec.config)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_or_missing_keys_are_refused(
    tiny_xcodec: XcodecModel, original_state: dict[str, torch.Tensor]
) -> None:
    with pytest.raises(KeyError, match="does not know"):
        convert_state_dict(
            {**original_state, "decoder_2.extra.weight": torch.zeros(1)}, tiny_xcodec.config
        )
    missing = {k: v for k, v in original_state.items() if k != "decoder_2.model.3.block.1.weight_g"}
    with pytest.raises(KeyError, match=re.escape("decoder_2.model.3.block.1.weight_g")):
        convert_state_dict(missing, tiny_xcodec.config)


@pytest.mark.parametrize(
    ("ratios", "ok"), [([8, 5, 4, 2], True), ([8, 8, 4, 2], False), ([5, 8, 4, 2], False)]
)
def test_output_padding_rules_must_agree(ratios: list[int], ok: bool) -> None:
    """SoundStream pads decoder block 1's output; XcodecModel pads every odd stride."""
    config = XcodecConfig(
        acoustic_model_config={"upsampling_ratios": ratios, "downsampling_ratios": ratios}
    )
    if ok:
        check_config(config)
    else:
        with pytest.raises(ValueError, match="output padding"):
            check_config(config)


def test_real_config_yaml_gives_the_full_size_xcodec() -> None:
    """final_ckpt/config.yaml's generator block (numbers as in xcodec_mini_infer) plus the real
    weight shapes -> the same XcodecConfig as `export --size full`."""
    generator = {
        "n_filters": 32,
        "D": 256,
        "target_bandwidths": [0.5, 1, 1.5, 2, 4, 6],
        "ratios": [8, 5, 4, 2],
        "sample_rate": 16000,
        "bins": 1024,
    }
    shapes = {
        "encoder.block.0.weight_v": (64, 1, 7),
        "decoder_2.model.0.weight_v": (1024, 256, 7),
        "fc_post1.weight": (768, 1024),
        "fc_post2.weight": (256, 1024),
    }
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    config = xcodec_config_from_original(generator, state, HubertConfig())
    full = xcodec_config(Size.FULL)
    assert config.num_quantizers == full.num_quantizers == 12
    assert config.codebook_dim == full.codebook_dim == 1024
    assert config.frame_rate == 50 and config.hop_length == HOP
    for name in ("encoder_hidden_size", "decoder_hidden_size", "hidden_size", "upsampling_ratios"):
        assert getattr(config.acoustic_model_config, name) == getattr(
            full.acoustic_model_config, name
        )


def test_original_layout_files(original: OriginalCheckpoint) -> None:
    assert original.checkpoint.name == "ckpt_00360000.pth" and original.config.name == "config.yaml"
    checkpoint = torch.load(original.checkpoint, map_location="cpu", weights_only=True)
    assert list(checkpoint) == ["codec_model"]
