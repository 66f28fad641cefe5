"""Triton adapter of the captioner: sampled frames -> caption and YuE tags (v2bgm.videollama3)."""

from v2bgm.triton.backend import BackendModel
from v2bgm.triton.handlers import CaptionerHandler


class TritonPythonModel(BackendModel):
    def __init__(self) -> None:
        super().__init__(CaptionerHandler.load)
