"""The composers the server can load, by name: the model config's `composer` parameter.

A name maps to its loader as "module:function" (a `v2bgm.composer.Loader`), imported only when
that composer is chosen, so the served model imports no model package itself. A composer that
lives outside this package is named by its own "module:function".
"""

from __future__ import annotations

import importlib
from pathlib import Path

from v2bgm.composer import Composer, ComposerOptions, Loader

BUILT_IN = {
    "yue-v1": "v2bgm.yue.scheduler:load",  # YuE v1 (Apache-2.0 weights), continuous batching
}
DEFAULT = "yue-v1"


class UnknownComposer(ValueError):
    """The configured composer is neither a built-in name nor an importable loader."""


def loader(name: str) -> Loader:
    """The loader of `name`: a built-in name or "module:function"."""
    target = BUILT_IN.get(name, name)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise UnknownComposer(
            f"unknown composer {name!r}: use one of {sorted(BUILT_IN)} or 'module:function'"
        )
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UnknownComposer(f"composer {name!r}: cannot load {target} ({exc})") from exc
    if not callable(found):
        raise UnknownComposer(f"composer {name!r}: {target} is not callable")
    return found


def load(name: str, weights: Path, device: str, options: ComposerOptions) -> Composer:
    return loader(name)(weights, device, options)
