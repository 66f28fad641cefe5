"""Triton adapter of the captioner: sampled frames -> caption and tags (v2bgm.videollama3)."""

from v2bgm.triton.backend import BatchModel
from v2bgm.triton.handlers import CaptionerHandler


class TritonPythonModel(BatchModel):
    load = staticmethod(CaptionerHandler.load)
