"""The build command: layout, determinism, --only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from export.parts import PART_NAMES, select_parts
from v2bgm.checkpoints import (
    VIDEOLLAMA3,
    XCODEC,
    YUE_STAGE1,
    YUE_STAGE2,
    YUE_TOKENIZER,
    YUE_VOCODER,
)

EXPECTED_FILES = {
    f"{VIDEOLLAMA3}/config.json",
    f"{VIDEOLLAMA3}/generation_config.json",
    f"{VIDEOLLAMA3}/model.safetensors",
    f"{VIDEOLLAMA3}/processor_config.json",
    f"{VIDEOLLAMA3}/tokenizer.json",
    f"{VIDEOLLAMA3}/tokenizer_config.json",
    f"{VIDEOLLAMA3}/chat_template.jinja",
    f"{YUE_STAGE1}/config.json",
    f"{YUE_STAGE1}/generation_config.json",
    f"{YUE_STAGE1}/model.safetensors",
    f"{YUE_STAGE2}/config.json",
    f"{YUE_STAGE2}/generation_config.json",
    f"{YUE_STAGE2}/model.safetensors",
    YUE_TOKENIZER,
    f"{XCODEC}/config.json",
    f"{XCODEC}/model.safetensors",
    f"{YUE_VOCODER}/config.yaml",
    f"{YUE_VOCODER}/decoder_131000.pth",  # vocal
    f"{YUE_VOCODER}/decoder_151000.pth",  # instrumental
}


Build = Callable[..., Path]
Digests = Callable[[Path], dict[str, str]]


def test_layout_uses_checkpoint_subfolders(tiny_dir: Path, digests: Digests) -> None:
    assert set(digests(tiny_dir)) == EXPECTED_FILES


def test_same_seed_gives_identical_bytes(
    tiny_dir: Path, tmp_path: Path, build: Build, digests: Digests
) -> None:
    again = build(tmp_path / "again")
    assert digests(again) == digests(tiny_dir)


def test_only_builds_one_part_with_the_same_bytes(
    tiny_dir: Path, tmp_path: Path, build: Build, digests: Digests
) -> None:
    only = digests(build(tmp_path / "only", "--only", YUE_STAGE2))
    assert set(only) == {f for f in EXPECTED_FILES if f.startswith(f"{YUE_STAGE2}/")}
    assert only.items() <= digests(tiny_dir).items()


def test_another_seed_changes_the_weights(
    tiny_dir: Path, tmp_path: Path, build: Build, digests: Digests
) -> None:
    other = digests(build(tmp_path / "seed1", "--only", YUE_STAGE2, seed=1))
    weights = f"{YUE_STAGE2}/model.safetensors"
    assert other[weights] != digests(tiny_dir)[weights]


def test_part_names_and_selection() -> None:
    parts = {VIDEOLLAMA3, YUE_STAGE1, YUE_STAGE2, XCODEC, YUE_VOCODER, "yue-tokenizer"}
    assert set(PART_NAMES) == parts
    assert [p.name for p in select_parts([XCODEC, VIDEOLLAMA3])] == [XCODEC, VIDEOLLAMA3]
    with pytest.raises(ValueError, match="unknown part"):
        select_parts(["nope"])
