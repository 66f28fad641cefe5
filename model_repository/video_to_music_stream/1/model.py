"""Triton adapter of the streaming pipeline: video in, events out (v2bgm.triton.stream)."""

from v2bgm.triton.stream import StreamModel


class TritonPythonModel(StreamModel):
    pass
