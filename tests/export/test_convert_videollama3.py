"""DAMO-NLP-SG's remote-code VideoLLaMA3 layout -> transformers' native `video_llama_3`.

No real checkpoint can be downloaded here, so a tiny native model is written in the ORIGINAL layout
(`export.videollama3_original`, the inverse mapping), checked against the original code's parameter
names, converted back with `export.convert_videollama3`, and compared with the model it came from.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    AutoProcessor,
    Qwen2Tokenizer,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)
from transformers.video_utils import VideoMetadata

from export.convert_videollama3 import (
    CONFIG_FILE,
    NATIVE_CHAT_TEMPLATE,
    SAFETENSORS_METADATA,
    TOKENIZER_CONFIG_FILE,
    VIDEO_FPS,
    VIDEO_MAX_FRAMES,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    add_media_tokens,
    check_original_config,
    check_weights,
    convert,
    expected_shapes,
    main,
    native_config,
    native_key,
    original_key,
)
from export.videollama3 import build_processor, videollama3_config
from export.videollama3_original import (
    DAMO_ADDED_TOKENS,
    DAMO_CHAT_TEMPLATE,
    write_original_checkpoint,
)
from export.videollama3_tokenizer import CHAT_TEMPLATE, IMAGE_PAD, VIDEO_PAD, build_tokenizer
from export.weights import Size, build_model

SEED = 0
VOCAB_MULTIPLE = 128  # Qwen2.5 pads its embedding table (151936, 152064) to a multiple of 128
FRAMES, HEIGHT, WIDTH = 4, 64, 96
STATIC_COLUMNS = 48  # the left half never changes, so token compression drops its tokens
NEW_TOKENS = 8
# The captioner's prompt shape (v2bgm.videollama3.prompt): a system text, then a video and a text.
SYSTEM = "You are a film composer's assistant. You watch a video and choose its background music."
QUESTION = "Describe in one sentence what is seen in the video."

# Videollama3Qwen2ForCausalLM's parameters (DAMO-NLP-SG/VideoLLaMA3 at commit 05cee23):
# - inference/transformers_api/modeling_videollama3.py: Videollama3Qwen2Model is transformers
#   4.46's Qwen2Model (embed_tokens, layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj,
#   input_layernorm, post_attention_layernorm}, norm) plus `vision_encoder` and `mm_projector`
#   (MlpGeluProjector: readout = build_mlp(2) = Linear, GELU, Linear -> readout.0 and readout.2);
#   Videollama3Qwen2ForCausalLM adds lm_head;
# - inference/transformers_api/modeling_videollama3_encoder.py: Videollama3VisionEncoderModel =
#   embeddings.patch_embedding (Conv2d 3 -> hidden, kernel = stride = patch), encoder.layers.N.
#   {self_attn.{k,v,q,out}_proj, layer_norm1, mlp.{fc1,fc2}, layer_norm2}, post_layernorm.
# Shapes in the original config.json's terms (see `original_dims`).
CONV_KERNEL = ("vision", "channels", "patch", "patch")  # Conv2d weight: out, in, kh, kw
TEXT_LAYER = r"model\.layers\.\d+\."
VISION_LAYER = r"model\.vision_encoder\.encoder\.layers\.\d+\."
ORIGINAL_KEYS: dict[str, tuple[str, ...]] = {
    r"model\.embed_tokens\.weight": ("vocab", "text"),
    TEXT_LAYER + r"self_attn\.q_proj\.weight": ("text", "text"),
    TEXT_LAYER + r"self_attn\.q_proj\.bias": ("text",),
    TEXT_LAYER + r"self_attn\.[kv]_proj\.weight": ("kv", "text"),
    TEXT_LAYER + r"self_attn\.[kv]_proj\.bias": ("kv",),
    TEXT_LAYER + r"self_attn\.o_proj\.weight": ("text", "text"),
    TEXT_LAYER + r"mlp\.(gate|up)_proj\.weight": ("ffn", "text"),
    TEXT_LAYER + r"mlp\.down_proj\.weight": ("text", "ffn"),
    TEXT_LAYER + r"(input|post_attention)_layernorm\.weight": ("text",),
    r"model\.norm\.weight": ("text",),
    r"lm_head\.weight": ("vocab", "text"),
    r"model\.vision_encoder\.embeddings\.patch_embedding\.weight": CONV_KERNEL,
    r"model\.vision_encoder\.embeddings\.patch_embedding\.bias": ("vision",),
    VISION_LAYER + r"self_attn\.(q|k|v|out)_proj\.weight": ("vision", "vision"),
    VISION_LAYER + r"self_attn\.(q|k|v|out)_proj\.bias": ("vision",),
    VISION_LAYER + r"layer_norm[12]\.(weight|bias)": ("vision",),
    VISION_LAYER + r"mlp\.fc1\.weight": ("vision_ffn", "vision"),
    VISION_LAYER + r"mlp\.fc1\.bias": ("vision_ffn",),
    VISION_LAYER + r"mlp\.fc2\.weight": ("vision", "vision_ffn"),
    VISION_LAYER + r"mlp\.fc2\.bias": ("vision",),
    r"model\.vision_encoder\.post_layernorm\.(weight|bias)": ("vision",),
    r"model\.mm_projector\.readout\.0\.weight": ("text", "vision"),
    r"model\.mm_projector\.readout\.0\.bias": ("text",),
    r"model\.mm_projector\.readout\.2\.weight": ("text", "text"),
    r"model\.mm_projector\.readout\.2\.bias": ("text",),
}
KEYS_PER_TEXT_LAYER = 12  # q/k/v weight+bias, o, gate, up, down, two norms
KEYS_PER_VISION_LAYER = 16  # q/k/v/out weight+bias, two layer norms x2, fc1/fc2 weight+bias


# --- fixtures ------------------------------------------------------------------------------------


def tiny_native(*, tie: bool) -> tuple[VideoLlama3ForConditionalGeneration, VideoLlama3Processor]:
    """The export's tiny VideoLLaMA3 with a padded vocabulary, like Qwen2.5's: DAMO's `<image>`
    and stream tokens need rows of their own."""
    tokenizer = build_tokenizer()
    config = videollama3_config(Size.TINY, tokenizer)
    rows = len(tokenizer) + len(DAMO_ADDED_TOKENS)
    config.text_config.vocab_size = math.ceil(rows / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = tie
    model = build_model(VideoLlama3ForConditionalGeneration, config, seed=SEED, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, build_processor(Size.TINY, tokenizer)


@pytest.fixture(scope="module")
def native() -> tuple[VideoLlama3ForConditionalGeneration, VideoLlama3Processor]:
    return tiny_native(tie=False)


@pytest.fixture(scope="module")
def original_dir(native: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, processor = native
    return write_original_checkpoint(model, processor, tmp_path_factory.mktemp("damo") / "7B")


@pytest.fixture(scope="module")
def converted_dir(original_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("native") / "videollama3"
    assert main(["--src", str(original_dir), "--out", str(out)]) == 0  # the CLI a user runs
    return out


@pytest.fixture(scope="module")
def converted(
    converted_dir: Path,
) -> tuple[VideoLlama3ForConditionalGeneration, VideoLlama3Processor]:
    model = VideoLlama3ForConditionalGeneration.from_pretrained(converted_dir).eval()
    return model, AutoProcessor.from_pretrained(converted_dir)


def video() -> tuple[np.ndarray, VideoMetadata]:
    """4 frames at 1 fps; the left half is the same in every frame."""
    rng = np.random.default_rng(SEED)
    frames = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames[:, :, :STATIC_COLUMNS] = frames[0, :, :STATIC_COLUMNS]
    metadata = VideoMetadata(
        total_num_frames=FRAMES, fps=VIDEO_FPS, frames_indices=list(range(FRAMES))
    )
    return frames, metadata


def messages(question: str = QUESTION) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]},
    ]


def server_inputs(processor: VideoLlama3Processor) -> dict[str, torch.Tensor]:
    """What the captioner feeds the model (v2bgm.videollama3.captioner.VideoCaptioner.describe):
    frames it sampled itself, with their timestamps."""
    frames, metadata = video()
    text = processor.apply_chat_template(messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt")
    inputs.pop("video_metadata", None)
    return dict(inputs)


def original_dims(config: dict) -> dict[str, int]:
    vision = config["vision_encoder_config"]
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    return {
        "vocab": config["vocab_size"],
        "text": config["hidden_size"],
        "kv": config["num_key_value_heads"] * head_dim,
        "ffn": config["intermediate_size"],
        "vision": vision["hidden_size"],
        "vision_ffn": vision["intermediate_size"],
        "channels": vision.get("num_channels", 3),
        "patch": vision["patch_size"],
    }


# --- transformers ships nothing for this ---------------------------------------------------------


def test_transformers_ships_no_videollama3_converter() -> None:
    """If a later transformers adds one, use it (or compare with it) instead of ours."""
    package = Path(transformers.__file__).parent / "models" / "video_llama_3"
    assert package.is_dir()
    assert not list(package.glob("convert_*.py"))


# --- the original layout is DAMO's ---------------------------------------------------------------


def test_original_layout_has_damo_parameter_names_and_shapes(original_dir: Path) -> None:
    config = json.loads((original_dir / CONFIG_FILE).read_text())
    dims = original_dims(config)
    with safe_open(original_dir / WEIGHTS_FILE, framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    matches = {k: [p for p in ORIGINAL_KEYS if re.fullmatch(p, k)] for k in shapes}
    assert all(len(m) == 1 for m in matches.values()), {
        k: m for k, m in matches.items() if len(m) != 1
    }
    assert {m[0] for m in matches.values()} == set(ORIGINAL_KEYS)  # every pattern is used
    for key, (pattern,) in matches.items():
        assert shapes[key] == tuple(dims[d] for d in ORIGINAL_KEYS[pattern]), key
    vision = config["vision_encoder_config"]
    text_layers = sum(k.startswith("model.layers.") for k in shapes)
    vision_layers = sum(k.startswith("model.vision_encoder.encoder.layers.") for k in shapes)
    assert text_layers == KEYS_PER_TEXT_LAYER * config["num_hidden_layers"]
    assert vision_layers == KEYS_PER_VISION_LAYER * vision["num_hidden_layers"]


def test_original_config_and_tokenizer_are_damo_s(original_dir: Path) -> None:
    config = json.loads((original_dir / CONFIG_FILE).read_text())
    assert config["model_type"] == "videollama3_qwen2"
    assert config["mm_projector_type"] == "mlp2x_gelu"
    assert config["vision_encoder_config"]["model_type"] == "videollama3_vision_encoder"
    tokenizer = Qwen2Tokenizer.from_pretrained(original_dir)
    assert tokenizer.convert_tokens_to_ids(DAMO_ADDED_TOKENS[0]) == config["image_token_index"]
    assert not hasattr(tokenizer, "image_token")  # Qwen2.5's tokenizer does not name it
    settings = json.loads((original_dir / TOKENIZER_CONFIG_FILE).read_text())
    assert settings["processor_class"] == "Videollama3Qwen2Processor"


def test_key_mapping_is_a_bijection(native: tuple) -> None:
    model, _ = native
    keys = list(model.state_dict())
    originals = [original_key(k) for k in keys]
    assert len(set(originals)) == len(keys)
    assert [native_key(k) for k in originals] == keys
    assert original_key("model.language_model.layers.0.mlp.up_proj.weight") == (
        "model.layers.0.mlp.up_proj.weight"
    )
    assert native_key("model.vision_encoder.post_layernorm.bias") == (
        "model.vision_model.post_layernorm.bias"
    )
    with pytest.raises(KeyError):
        native_key("vision_tower.weight")


# --- round trip ----------------------------------------------------------------------------------


def test_round_trip_gives_back_every_tensor(native: tuple, converted: tuple) -> None:
    expected, actual = native[0].state_dict(), converted[0].state_dict()
    assert list(actual) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key
        assert actual[key].dtype == tensor.dtype


def test_converted_processor_prepares_the_same_inputs(native: tuple, converted: tuple) -> None:
    expected, actual = server_inputs(native[1]), server_inputs(converted[1])
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key
    mask = expected["video_compression_mask"]
    assert 0 < int(mask.sum()) < mask.numel()  # the static half was compressed away


def test_generate_on_a_4_frame_video_gives_identical_tokens(
    native: tuple, converted: tuple
) -> None:
    outputs = []
    for model, processor in (native, converted):
        inputs = server_inputs(processor)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        outputs.append(out[0, inputs["input_ids"].shape[1] :])
    assert len(outputs[0]) == NEW_TOKENS
    assert torch.equal(outputs[0], outputs[1])


# --- config, tokenizer, processor ----------------------------------------------------------------


def test_converted_config(native: tuple, converted: tuple, converted_dir: Path) -> None:
    reference, model = native[0].config, converted[0].config
    tokenizer = converted[1].tokenizer
    assert model.model_type == "video_llama_3"
    assert model.architectures == ["VideoLlama3ForConditionalGeneration"]
    assert model.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    assert model.video_token_id == tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    assert (model.image_token_id, model.video_token_id) == (
        reference.image_token_id, reference.video_token_id,
    )  # fmt: skip
    vision, expected_vision = model.vision_config.to_dict(), reference.vision_config.to_dict()
    assert vision.pop("dtype") == "float32"  # the original's torch_dtype
    assert vision == {k: v for k, v in expected_vision.items() if k != "dtype"}
    for field in ("vocab_size", "hidden_size", "num_key_value_heads", "rms_norm_eps"):
        assert getattr(model.text_config, field) == getattr(reference.text_config, field), field
    assert model.text_config.rope_parameters == reference.text_config.rope_parameters
    assert model.tie_word_embeddings is False
    assert "auto_map" not in json.loads((converted_dir / CONFIG_FILE).read_text())


def test_converted_tokenizer_keeps_damo_ids(original_dir: Path, converted: tuple) -> None:
    damo = Qwen2Tokenizer.from_pretrained(original_dir)
    tokenizer = converted[1].tokenizer
    assert tokenizer.get_vocab() == damo.get_vocab()  # `<image>` and the stream tokens included
    assert (tokenizer.image_token, tokenizer.video_token) == (IMAGE_PAD, VIDEO_PAD)
    text = "<|im_start|>user\n<|video_pad|>\nWhat is the cat doing?<|im_end|>\n"
    assert tokenizer(text).input_ids == damo(text).input_ids


def test_converted_processor_loads_natively(converted: tuple, converted_dir: Path) -> None:
    processor = converted[1]
    assert isinstance(processor, VideoLlama3Processor)
    video = processor.video_processor
    assert isinstance(video, VideoLlama3VideoProcessor)
    assert (video.fps, video.max_frames, video.do_sample_frames) == (
        VIDEO_FPS,
        VIDEO_MAX_FRAMES,
        False,
    )
    assert (processor.image_processor.merge_size, video.merge_size) == (1, 2)
    assert video.use_token_compression
    # min_tokens 1 / max_tokens 32 merged tokens in the tiny original layout
    assert (video.size["shortest_edge"], video.size["longest_edge"]) == (1 * 28**2, 32 * 28**2)
    image = processor.image_processor.size
    assert (image["shortest_edge"], image["longest_edge"]) == (1 * 14**2, 32 * 14**2)
    assert processor.chat_template == NATIVE_CHAT_TEMPLATE
    settings = json.loads((converted_dir / TOKENIZER_CONFIG_FILE).read_text())
    assert "auto_map" not in settings
    assert settings["processor_class"] == "VideoLlama3Processor"


def test_native_template_renders_the_server_prompt_like_the_export(converted: tuple) -> None:
    tokenizer = converted[1].tokenizer
    for question in (QUESTION, "Which music fits?"):
        native = tokenizer.apply_chat_template(
            messages(question),
            chat_template=NATIVE_CHAT_TEMPLATE,
            add_generation_prompt=True,
            tokenize=False,
        )
        export = tokenizer.apply_chat_template(
            messages(question),
            chat_template=CHAT_TEMPLATE,
            add_generation_prompt=True,
            tokenize=False,
        )
        assert native == export


def test_native_prompt_equals_damo_template_after_expansion_and_compression(
    converted: tuple,
) -> None:
    """DAMO: its template writes `Time t.ts:<image>` per frame, its processor repeats each
    `<image>` per merged patch and the model drops compressed ones. Natively the processor writes
    the kept `<|video_pad|>`s directly. With `<image>` read as `<|video_pad|>` the ids agree."""
    processor = converted[1]
    inputs = server_inputs(processor)
    kept = inputs["video_compression_mask"].view(FRAMES, -1).sum(dim=1).tolist()
    conversation = messages()
    conversation[1]["content"][0] = {
        "type": "video",
        "num_frames": FRAMES,
        "timestamps": [i / VIDEO_FPS for i in range(FRAMES)],
    }
    damo = processor.tokenizer.apply_chat_template(
        conversation,
        chat_template=DAMO_CHAT_TEMPLATE,
        add_generation_prompt=True,
        tokenize=False,
        image_token=DAMO_ADDED_TOKENS[0],
    )
    chunks = damo.split(DAMO_ADDED_TOKENS[0])
    assert len(chunks) == FRAMES + 1
    expanded = chunks[0] + "".join(VIDEO_PAD * n + c for n, c in zip(kept, chunks[1:], strict=True))
    assert processor.tokenizer(expanded).input_ids == inputs["input_ids"][0].tolist()


# --- variants and failures -----------------------------------------------------------------------


def shard(folder: Path) -> None:
    """Split model.safetensors in two shards with an index, as the 7B ships (4 shards)."""
    state = load_file(folder / WEIGHTS_FILE)
    (folder / WEIGHTS_FILE).unlink()
    keys = sorted(state)
    names = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2 :])
    for name, part in zip(names, halves, strict=True):
        save_file({k: state[k] for k in part}, folder / name, metadata=SAFETENSORS_METADATA)
    weight_map = {k: name for name, part in zip(names, halves, strict=True) for k in part}
    (folder / WEIGHTS_INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_tied_sharded_checkpoint_round_trips(tmp_path: Path) -> None:
    """The 2B ties lm_head to the embeddings (no lm_head.weight saved); the 7B is sharded."""
    model, processor = tiny_native(tie=True)
    original = write_original_checkpoint(model, processor, tmp_path / "2B")
    shard(original)
    index = json.loads((original / WEIGHTS_INDEX_FILE).read_text())
    assert "lm_head.weight" not in index["weight_map"]
    config = convert(original, tmp_path / "native")
    assert config.tie_word_embeddings and config.text_config.tie_word_embeddings
    assert (tmp_path / "native" / WEIGHTS_INDEX_FILE).is_file()
    reloaded = VideoLlama3ForConditionalGeneration.from_pretrained(tmp_path / "native")
    assert reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    expected = model.state_dict()
    for key, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, expected[key]), key


def test_missing_media_tokens_are_added_inside_the_embedding_table() -> None:
    vocab = {
        t: i for t, i in build_tokenizer().get_vocab().items() if t not in (IMAGE_PAD, VIDEO_PAD)
    }
    plain = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None)
    rows = len(plain) + 2  # a padded table has room for them
    assert add_media_tokens(plain, rows) == [IMAGE_PAD, VIDEO_PAD]
    assert plain.convert_tokens_to_ids([IMAGE_PAD, VIDEO_PAD]) == [rows - 2, rows - 1]
    assert add_media_tokens(plain, rows) == []
    full = Qwen2Tokenizer(vocab=dict(vocab), merges=[], unk_token=None)
    with pytest.raises(ValueError, match="embedding table"):
        add_media_tokens(full, len(full))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "qwen2"}, "videollama3_qwen2"),
        ({"mm_projector_type": "linear"}, "no native counterpart"),
        ({"vision_encoder_config": None}, "not a hub"),
    ],
)
def test_unmappable_configs_are_refused(original_dir: Path, change: dict, message: str) -> None:
    config = json.loads((original_dir / CONFIG_FILE).read_text()) | change
    with pytest.raises(ValueError, match=message):
        check_original_config(config)


def test_weights_that_do_not_fit_the_native_model_are_refused(native: tuple) -> None:
    config = native[0].config
    shapes = expected_shapes(config)
    assert set(shapes) == set(native[0].state_dict())
    check_weights(config, shapes)
    without_projector = {k: v for k, v in shapes.items() if ".projector." not in k}
    with pytest.raises(ValueError, match="missing"):
        check_weights(config, without_projector)
    with pytest.raises(ValueError, match="unexpected"):
        check_weights(config, shapes | {"model.vision_model.head.weight": (1,)})
    with pytest.raises(ValueError, match="wrong shapes"):
        check_weights(config, shapes | {"lm_head.weight": (1, 1)})


# DAMO-NLP-SG/VideoLLaMA3-7B's config.json as far as public copies show it: the text fields from
# time-warp/VideoLLaMA-3-7b-implicit's copy (`_name_or_path: DAMO-NLP-SG/VideoLLaMA3-7B`), the
# vision encoder from the 2B's (same VL3-SigLIP-NaViT), the vocabulary from Qwen2.5-7B. The 7B's own
# file was not readable from here.
DAMO_7B_CONFIG = {
    "architectures": ["Videollama3Qwen2ForCausalLM"],
    "model_type": "videollama3_qwen2",
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "image_token_index": 151665,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "mm_projector_type": "mlp2x_gelu",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "use_token_compression": True,
    "vision_encoder": None,
    "vision_encoder_config": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "model_type": "videollama3_vision_encoder",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
    },
    "vocab_size": 152064,
}


def test_damo_7b_config_maps_to_the_full_size_export() -> None:
    """The real 7B converts to the architecture `python -m export --size full` builds (shapes
    compared on the meta device; the token ids differ: the export's tokenizer is a small one)."""
    tokenizer = build_tokenizer()
    config = native_config(DAMO_7B_CONFIG, tokenizer)
    assert config.dtype == torch.bfloat16
    assert config.text_config.rope_parameters["rope_theta"] == 1e6
    assert expected_shapes(config) == expected_shapes(videollama3_config(Size.FULL, tokenizer))


# DAMO-NLP-SG/VideoLLaMA3-2B's config.json (cbipok/VideoLLaMA3-2B-fork's copy): Qwen2.5-1.5B with
# tied embeddings.
DAMO_2B_CONFIG = DAMO_7B_CONFIG | {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "max_window_layers": 21,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    "use_cache": False,
    "vocab_size": 151936,
}


def test_damo_2b_config_keeps_its_tied_embeddings() -> None:
    config = native_config(DAMO_2B_CONFIG, build_tokenizer())
    assert config.tie_word_embeddings and config.text_config.tie_word_embeddings
    assert config.text_config.use_cache  # DAMO's saved `false` is a training setting
    shapes = expected_shapes(config)
    assert shapes["model.language_model.embed_tokens.weight"] == (151936, 1536)
    assert shapes["model.projector.readout.0.weight"] == (1536, 1152)
