"""`v2bgm-weights check DIR`: is this weights folder what the server will load, before it loads it?

For each component (v2bgm.checkpoints): every expected file is there; each `config.json` parses
and names the expected architecture; the tensors' names, shapes and dtypes match what the config
builds (the model is built on torch's meta device: no memory, no weights read), read from the
safetensors headers (sharded or not; a file shorter than its header says is truncated) and from
the vocoder's `.pth` key lists (loaded onto the meta device); YuE's tokenizer has YuE's pieces
and special ids. It prints one table (component, files, parameters, dtype, ok) and one line per
problem naming the file and what is wrong; it exits 1 when there is any. `v2bgm-serve` runs it
before tritonserver starts and never starts on a folder that fails.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from v2bgm import checkpoints

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
HEADER_LENGTH_BYTES = 8  # a safetensors file opens with its JSON header's length (u64, LE)
MAX_HEADER_BYTES = 100 * 2**20
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "fp8"}
# component folder -> (model_type, architecture named in config.json)
TRANSFORMERS_COMPONENTS = {
    checkpoints.YUE_STAGE1: ("llama", "LlamaForCausalLM"),
    checkpoints.YUE_STAGE2: ("llama", "LlamaForCausalLM"),
    checkpoints.XCODEC: ("xcodec", "XcodecModel"),
    checkpoints.VIDEOLLAMA3: ("video_llama_3", "VideoLlama3ForConditionalGeneration"),
}
VIDEOLLAMA3_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json")


@dataclass
class Component:
    name: str
    files: int = 0
    parameters: int = 0
    dtypes: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # "path: what is wrong"

    @property
    def ok(self) -> bool:
        return not self.problems


class Unreadable(Exception):
    """A file that cannot be read as what it should be: the message says why."""


# --- reading without loading -------------------------------------------------------------------
def safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {"dtype", "shape", "data_offsets"}, from the header alone; raises
    Unreadable when the file is not safetensors or is shorter than its header says."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(HEADER_LENGTH_BYTES)
        if len(raw) < HEADER_LENGTH_BYTES:
            raise Unreadable(f"{size} bytes: not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER_BYTES, size - HEADER_LENGTH_BYTES):
            raise Unreadable(f"header length {length} does not fit the file: not safetensors")
        try:
            header = json.loads(f.read(length))
        except ValueError as exc:
            raise Unreadable(f"header is not JSON ({exc})") from None
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if HEADER_LENGTH_BYTES + length + end > size:
        missing = HEADER_LENGTH_BYTES + length + end - size
        raise Unreadable(f"truncated: {size} bytes, {missing} bytes short of its tensors")
    return header


def checkpoint_tensors(folder: Path, component: Component) -> dict[str, tuple[str, tuple]] | None:
    """Name -> (dtype, shape) of a transformers checkpoint (one file or an index of shards);
    None when a file is missing or unreadable (that is the problem to report, not its tensors)."""
    index = folder / SAFETENSORS_INDEX
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            component.problems.append(f"{index}: not a safetensors index ({exc})")
            return None
    else:
        shards = [SAFETENSORS]
    tensors: dict[str, tuple[str, tuple]] = {}
    complete = True
    for shard in shards:
        path = folder / shard
        if not path.exists():
            component.problems.append(f"{path}: missing")
            complete = False
            continue
        component.files += 1
        try:
            header = safetensors_header(path)
        except Unreadable as exc:
            component.problems.append(f"{path}: {exc}")
            complete = False
            continue
        for name, info in header.items():
            dtype = SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"].lower())
            tensors[name] = (dtype, tuple(info["shape"]))
    return tensors if complete else None


def compare(
    where: Path, expected: dict[str, tuple], found: dict[str, tuple[str, tuple]], c: Component
) -> None:
    """Names and shapes of `found` against `expected` (name -> shape); one line per kind of
    difference, naming a few."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [
        f"{n} is {list(found[n][1])}, expected {list(expected[n])}"
        for n in sorted(set(expected) & set(found))
        if tuple(found[n][1]) != tuple(expected[n])
    ]
    for label, names in (("missing tensors", missing), ("unexpected tensors", unexpected)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            c.problems.append(f"{where}: {label}: {', '.join(names[:3])}{more}")
    for line in wrong[:3]:
        c.problems.append(f"{where}: wrong shape: {line}")
    if len(wrong) > 3:
        c.problems.append(f"{where}: {len(wrong) - 3} more tensors of the wrong shape")
    c.parameters += sum(_numel(found[n][1]) for n in set(expected) & set(found))
    c.dtypes |= {found[n][0] for n in found}


def _numel(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# --- the components ----------------------------------------------------------------------------
def check_transformers(root: Path, name: str) -> Component:
    import torch
    import transformers

    c = Component(name)
    folder = root / name
    config_path = folder / "config.json"
    if not config_path.exists():
        c.problems.append(f"{config_path}: missing")
        return c
    model_type, architecture = TRANSFORMERS_COMPONENTS[name]
    try:
        raw = json.loads(config_path.read_text())
    except ValueError as exc:
        c.problems.append(f"{config_path}: not JSON ({exc})")
        return c
    if raw.get("model_type") != model_type:
        c.problems.append(
            f"{config_path}: model_type is {raw.get('model_type')!r}, expected {model_type!r}"
        )
        return c
    if architecture not in raw.get("architectures", [architecture]):
        names = raw["architectures"]
        c.problems.append(f"{config_path}: architectures {names}, not {architecture}")
    try:
        config = transformers.AutoConfig.from_pretrained(folder)
        with torch.device("meta"):  # shapes only: no memory, no weights read
            model = getattr(transformers, architecture)._from_config(config)
    except Exception as exc:  # a config transformers cannot build from
        c.problems.append(f"{config_path}: cannot build {architecture} from it ({exc})")
        return c
    c.files += 1
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = checkpoint_tensors(folder, c)
    if found is not None:
        compare(folder, expected, found, c)
    if name == checkpoints.VIDEOLLAMA3:
        for file in VIDEOLLAMA3_FILES:
            path = folder / file
            c.files += path.exists()
            if not path.exists():
                c.problems.append(f"{path}: missing")
    return c


def check_tokenizer(root: Path) -> Component:
    from v2bgm.yue.tokenizer import YuETokenizer

    c = Component(Path(checkpoints.YUE_TOKENIZER).parent.name)
    path = root / checkpoints.YUE_TOKENIZER
    if not path.exists():
        c.problems.append(f"{path}: missing")
        return c
    c.files = 1
    try:
        YuETokenizer(path)
    except ValueError as exc:  # wrong piece count or special ids (the message names them)
        c.problems.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
    except Exception as exc:
        c.problems.append(f"{path}: not a SentencePiece model ({type(exc).__name__}: {exc})")
    return c


def check_vocoder(root: Path) -> Component:
    import torch

    from v2bgm.yue.vocoder import CONFIG_FILE, DECODER_FILES
    from v2bgm.yue.vocos import VocosConfig, VocosDecoder

    c = Component(checkpoints.YUE_VOCODER)
    folder = root / checkpoints.YUE_VOCODER
    config_path = folder / CONFIG_FILE
    if not config_path.exists():
        c.problems.append(f"{config_path}: missing")
        return c
    try:
        config = VocosConfig.from_yaml(config_path)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in VocosDecoder(config).state_dict().items()}
    except Exception as exc:
        c.problems.append(f"{config_path}: not a vocoder config ({type(exc).__name__}: {exc})")
        return c
    c.files = 1
    for name in DECODER_FILES.values():
        path = folder / name
        if not path.exists():
            c.problems.append(f"{path}: missing")
            continue
        c.files += 1
        try:
            state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
        except Exception as exc:
            c.problems.append(f"{path}: cannot be read ({type(exc).__name__}: {exc})")
            continue
        if not isinstance(state, dict):
            c.problems.append(f"{path}: holds a {type(state).__name__}, not a state dict")
            continue
        found = {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in state.items()}
        compare(path, expected, found, c)
    return c


CHECKS: dict[str, Callable[[Path], Component]] = {
    checkpoints.YUE_STAGE1: lambda r: check_transformers(r, checkpoints.YUE_STAGE1),
    checkpoints.YUE_STAGE2: lambda r: check_transformers(r, checkpoints.YUE_STAGE2),
    "yue-tokenizer": check_tokenizer,
    checkpoints.XCODEC: lambda r: check_transformers(r, checkpoints.XCODEC),
    checkpoints.YUE_VOCODER: check_vocoder,
    checkpoints.VIDEOLLAMA3: lambda r: check_transformers(r, checkpoints.VIDEOLLAMA3),
}


def check(root: Path) -> list[Component]:
    if not root.is_dir():
        missing = Component(str(root))
        missing.problems.append(f"{root}: no such folder")
        return [missing]
    return [run(root) for run in CHECKS.values()]


def report(components: list[Component]) -> str:
    rows = [("component", "files", "parameters", "dtype", "ok")]
    for c in components:
        dtype = ",".join(sorted(c.dtypes)) or "-"
        rows.append((c.name, str(c.files), f"{c.parameters:,}", dtype, "ok" if c.ok else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    problems = [p for c in components for p in c.problems]
    return "\n".join(lines + problems)


def fetch_verified(url: str, path: Path, sha256: str) -> Path:
    """Download `url` to `path`, kept only if its SHA-256 is `sha256` (ValueError otherwise;
    nothing is left at `path` then)."""
    import hashlib
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"{url}: SHA-256 {digest}, expected {sha256}; not written")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v2bgm-weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    checking = sub.add_parser("check", help="check a weights folder without loading it")
    checking.add_argument("folder", type=Path, nargs="?", default=checkpoints.weights_root())
    fetching = sub.add_parser(
        "fetch-tokenizer", help="download YuE's tokenizer (pinned commit) and check its SHA-256"
    )
    fetching.add_argument("folder", type=Path)
    fetching.add_argument("--url", default=checkpoints.YUE_TOKENIZER_URL)
    fetching.add_argument("--sha256", default=checkpoints.YUE_TOKENIZER_SHA256)
    args = parser.parse_args(argv)
    if args.command == "fetch-tokenizer":
        try:
            path = fetch_verified(args.url, args.folder / checkpoints.YUE_TOKENIZER, args.sha256)
        except (OSError, ValueError) as exc:
            print(f"v2bgm-weights: {exc}", file=sys.stderr)
            return 1
        print(f"{path}: sha256 {args.sha256} ok")
        return 0
    components = check(args.folder)
    print(report(components))
    return 0 if all(c.ok for c in components) else 1


if __name__ == "__main__":
    sys.exit(main())
