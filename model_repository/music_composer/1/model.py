"""Triton adapter of the composer: tags, lyrics, duration, seed -> YuE music (see v2bgm.yue)."""

from v2bgm.triton.backend import BackendModel
from v2bgm.triton.handlers import ComposerHandler


class TritonPythonModel(BackendModel):
    def __init__(self) -> None:
        super().__init__(ComposerHandler.load)
