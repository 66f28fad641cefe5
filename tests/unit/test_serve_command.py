"""v2bgm-serve's tritonserver command line: the model control mode is explicit."""

from __future__ import annotations

from pathlib import Path

from v2bgm.serve import MODEL_CONTROL_MODE, TritonInstall, TritonServer

INSTALL = TritonInstall(Path("/opt/tritonserver/bin/tritonserver"), Path("/opt/backends"))


def test_model_control_mode_is_none_by_default():
    cmd = TritonServer(Path("repo"), Path("weights")).command(INSTALL)
    assert MODEL_CONTROL_MODE == "none"
    assert [a for a in cmd if a.startswith("--model-control-mode")] == ["--model-control-mode=none"]


def test_extra_arguments_choose_another_mode_once():
    extra = ["--model-control-mode=explicit", "--load-model=music_composer"]
    cmd = TritonServer(Path("repo"), Path("weights"), extra_args=extra).command(INSTALL)
    assert [a for a in cmd if a.startswith("--model-control-mode")] == [extra[0]]
