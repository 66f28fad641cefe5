"""Triton adapter of the composer: tags, lyrics, duration, seed -> music, from the composer the
config's `composer` parameter names (v2bgm.composers; YuE v1 by default)."""

from v2bgm.triton.backend import ConcurrentModel
from v2bgm.triton.handlers import ComposerHandler


class TritonPythonModel(ConcurrentModel):
    load = staticmethod(ComposerHandler.load)
