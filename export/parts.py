"""The parts of a weights folder, each with the subfolder the server expects (v2bgm.checkpoints)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from export.videollama3 import export_videollama3, videollama3_parameter_count
from export.weights import Size
from export.xcodec import export_xcodec, xcodec_parameter_count
from export.yue import export_yue_stage, yue_parameter_count
from export.yue_tokenizer import export_yue_tokenizer
from export.yue_vocoder import export_yue_vocoder, yue_vocoder_parameter_count
from v2bgm.checkpoints import (
    VIDEOLLAMA3,
    XCODEC,
    YUE_STAGE1,
    YUE_STAGE2,
    YUE_TOKENIZER,
    YUE_VOCODER,
)

YUE_TOKENIZER_DIR = PurePosixPath(YUE_TOKENIZER).parts[0]
YUE_TOKENIZER_FILE = PurePosixPath(YUE_TOKENIZER).relative_to(YUE_TOKENIZER_DIR)

# export(size, part folder, seed=..., device=...) -> parameter count (0 for the tokenizer)
Exporter = Callable[..., int]


def _export_tokenizer(size: Size, out_dir: Path, *, seed: int, device: str) -> int:
    del size, seed, device  # one tokenizer for every size; nothing random in it
    export_yue_tokenizer(out_dir / YUE_TOKENIZER_FILE)
    return 0


@dataclass(frozen=True)
class Part:
    name: str  # the `--only` value and the subfolder name
    export: Exporter
    parameter_count: Callable[[Size], int] | None  # for --dry-run; None: no weights

    def folder(self, root: Path) -> Path:
        return root / self.name

    def build(self, root: Path, size: Size, *, seed: int, device: str) -> int:
        folder = self.folder(root)
        if folder.exists():  # no stale shards from an earlier build
            shutil.rmtree(folder)
        return self.export(size, folder, seed=seed, device=device)


def _stage(stage: str) -> Exporter:
    def export(size: Size, out_dir: Path, *, seed: int, device: str) -> int:
        return export_yue_stage(stage, size, out_dir, seed=seed, device=device)

    return export


PARTS: tuple[Part, ...] = (
    Part(YUE_TOKENIZER_DIR, _export_tokenizer, None),
    Part(XCODEC, export_xcodec, xcodec_parameter_count),
    Part(YUE_VOCODER, export_yue_vocoder, yue_vocoder_parameter_count),
    Part(YUE_STAGE2, _stage("s2"), lambda size: yue_parameter_count("s2", size)),
    Part(YUE_STAGE1, _stage("s1"), lambda size: yue_parameter_count("s1", size)),
    Part(VIDEOLLAMA3, export_videollama3, videollama3_parameter_count),
)
PART_NAMES: tuple[str, ...] = tuple(part.name for part in PARTS)


def select_parts(names: list[str] | None) -> list[Part]:
    if not names:
        return list(PARTS)
    unknown = sorted(set(names) - set(PART_NAMES))
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose from {list(PART_NAMES)}")
    return [part for part in PARTS if part.name in names]
