"""v2bgm-serve: its tritonserver command line (the model control mode is explicit) and how often
it restarts a server whose stub died."""

from __future__ import annotations

from pathlib import Path

from v2bgm.serve import MODEL_CONTROL_MODE, RestartBudget, TritonInstall, TritonServer

INSTALL = TritonInstall(Path("/opt/tritonserver/bin/tritonserver"), Path("/opt/backends"))


def test_model_control_mode_is_none_by_default():
    cmd = TritonServer(Path("repo"), Path("weights")).command(INSTALL)
    assert MODEL_CONTROL_MODE == "none"
    assert [a for a in cmd if a.startswith("--model-control-mode")] == ["--model-control-mode=none"]


def test_extra_arguments_choose_another_mode_once():
    extra = ["--model-control-mode=explicit", "--load-model=music_composer"]
    cmd = TritonServer(Path("repo"), Path("weights"), extra_args=extra).command(INSTALL)
    assert [a for a in cmd if a.startswith("--model-control-mode")] == [extra[0]]


def test_restart_budget_allows_three_restarts_in_ten_minutes():
    budget = RestartBudget()
    assert (budget.restarts, budget.window_s) == (3, 600.0)
    assert [budget.take(t) for t in (0.0, 10.0, 20.0)] == [True, True, True]
    assert not budget.take(30.0)  # a fourth within the window: give up
    fresh = RestartBudget()
    assert all(fresh.take(t) for t in (0.0, 300.0, 599.0))
    assert fresh.take(601.0)  # the first one has left the window
    assert not fresh.take(602.0)
