"""Every checkpoint loads straight onto its device (`v2bgm.devices.placed_on`: `device_map`), with
the same tensors as the previous path (the whole model loaded on the host, then `.to(device)`),
on the tiny checkpoints: on the CPU here, on a GPU too where there is one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    VideoLlama3ForConditionalGeneration,
    XcodecModel,
)

from v2bgm import checkpoints
from v2bgm.devices import model_dtype, placed_on
from v2bgm.videollama3.captioner import VideoCaptioner
from v2bgm.yue.composer import YuEComposer
from v2bgm.yue.vocoder import CONFIG_FILE, DECODER_FILES, Upsampler
from v2bgm.yue.vocos import VocosConfig, VocosDecoder

DEVICES = [
    "cpu",
    pytest.param(
        "cuda:0",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine"),
    ),
]
MODELS = {  # folder -> class, as the server loads them
    checkpoints.YUE_STAGE1: AutoModelForCausalLM,
    checkpoints.YUE_STAGE2: AutoModelForCausalLM,
    checkpoints.XCODEC: XcodecModel,
    checkpoints.VIDEOLLAMA3: VideoLlama3ForConditionalGeneration,
}


def dtypes(folder: str, device: str) -> list[torch.dtype]:
    """X-Codec is always fp32; the others load in the device's dtype, and in bf16 (the files'
    own dtype, a GPU's) on the CPU too."""
    if folder == checkpoints.XCODEC:
        return [torch.float32]
    return sorted({model_dtype(device), torch.bfloat16}, key=str)


def assert_same(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], device: str):
    assert before.keys() == after.keys()
    for name, tensor in after.items():
        assert tensor.device == torch.device(device), name
        assert tensor.dtype == before[name].dtype, name
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("folder", list(MODELS))
def test_device_map_loads_the_same_tensors_onto_the_device(weights: Path, folder, device):
    cls = MODELS[folder]
    for dtype in dtypes(folder, device):
        before = cls.from_pretrained(weights / folder, dtype=dtype).to(device)  # the old path
        after = cls.from_pretrained(weights / folder, dtype=dtype, **placed_on(device))
        assert {p.device for p in after.parameters()} == {torch.device(device)}
        assert_same(before.state_dict(), after.state_dict(), device)
        assert not [n for n, m in after.named_modules() if hasattr(m, "_hf_hook")]  # no offload


@pytest.mark.parametrize("device", DEVICES)
def test_the_vocoder_loads_the_same_tensors_onto_the_device(weights: Path, device):
    folder = weights / checkpoints.YUE_VOCODER
    upsampler = Upsampler.from_pretrained(folder, device)
    config = VocosConfig.from_yaml(folder / CONFIG_FILE)
    for track, name in DECODER_FILES.items():
        before = VocosDecoder(config)  # the old path: built on the host, state read on the host
        before.load_state_dict(torch.load(folder / name, map_location="cpu", weights_only=True))
        before = before.to(device=device, dtype=torch.float32)
        assert_same(before.state_dict(), upsampler.decoders[track].state_dict(), device)
        assert all(p.requires_grad for p in upsampler.decoders[track].parameters()) == all(
            p.requires_grad for p in before.parameters()
        )
    assert upsampler.device == torch.device(device)


@pytest.mark.parametrize("device", DEVICES)
def test_the_served_loaders_put_every_weight_on_the_device(weights: Path, device, monkeypatch):
    loads: list[tuple[str, object]] = []  # (class, device_map) of every from_pretrained
    original = PreTrainedModel.from_pretrained.__func__

    def recorded(cls, *args, **kwargs):
        loads.append((cls.__name__, kwargs.get("device_map")))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(recorded))
    laps = []
    composer = YuEComposer.from_pretrained(weights, device, slots=2, lap=laps.append)
    on = torch.device(device)
    for engine in (composer.stage1.decoder.model, composer.stage2_engine.model):
        tensors = [engine.embed, engine.norm, engine.lm_head.weight, engine.cos]
        for layer in engine.layers:
            tensors += [layer.norm1, layer.norm2, layer.qkv.weight, layer.o.weight]
            tensors += [layer.gate_up.weight, layer.down.weight]
        assert engine.device == on and {t.device for t in tensors} == {on}
    assert {p.device for p in composer.codec.model.parameters()} == {on}
    assert composer.upsampler.device == on
    assert laps == ["weights: yue-s1", "weights: yue-s2", "weights: x-codec, vocoder"]
    captioner = VideoCaptioner.from_pretrained(weights, device)
    assert {p.device for p in captioner.model.parameters()} == {on}
    assert captioner.model.dtype == model_dtype(device)
    assert sorted(set(loads)) == sorted(
        (name, device)
        for name in ("LlamaForCausalLM", "XcodecModel", "VideoLlama3ForConditionalGeneration")
    )
