"""YuE's own inference code (multimodal-art-projection/YuE, `inference/`), imported as published.

The code is not part of this repository: clone it into `reference/YuE` (git-ignored) or point
$V2BGM_YUE_REFERENCE at a clone (tests/reference/README.md). `mmtokenizer.py` and
`codecmanipulator.py` import cleanly; `infer.py` is a script that parses arguments and loads its
models at import, so its functions are taken out of its syntax tree and run in a namespace that
holds what they use from the script (`mmtokenizer`, `codectool`, `device`, its imports).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
ENV = "V2BGM_YUE_REFERENCE"
TOKENIZER = Path("mm_tokenizer_v0.2_hf/tokenizer.model")  # shipped in the repository (1.7 MB)


def inference_dir() -> Path | None:
    """YuE's `inference/` folder, or None when the code is not there."""
    root = Path(os.environ.get(ENV) or ROOT / "reference" / "YuE")
    folder = root / "inference"
    return folder if (folder / "infer.py").is_file() else None


def missing() -> str | None:
    """Why the reference suite cannot run here, or None."""
    if inference_dir() is None:
        return f"YuE's code is not in reference/YuE nor ${ENV} (tests/reference/README.md)"
    for module in ("einops", "sentencepiece"):
        if importlib.util.find_spec(module) is None:
            return f"YuE's code needs {module!r}: pip install {module}"
    return None


def module(name: str) -> ModuleType:
    """One of YuE's modules (`mmtokenizer`, `codecmanipulator`), imported from its file."""
    folder = inference_dir()
    assert folder is not None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def script_functions(names: tuple[str, ...], namespace: dict) -> dict:
    """The named top-level functions and classes of infer.py, defined in `namespace` (which
    must hold the script's globals they read)."""
    folder = inference_dir()
    assert folder is not None
    source = (folder / "infer.py").read_text()
    tree = ast.parse(source)
    keep = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in names
    ]
    found = {node.name for node in keep}
    if found != set(names):
        raise LookupError(f"infer.py has no {sorted(set(names) - found)}")
    code = compile(ast.Module(body=keep, type_ignores=[]), str(folder / "infer.py"), "exec")
    exec(code, namespace)
    return {name: namespace[name] for name in names}
