"""v2bgm-serve: its tritonserver command line (the model control mode is explicit) and how often
it restarts a server whose stub died."""

from __future__ import annotations

from pathlib import Path

from v2bgm import admin_api
from v2bgm.serve import (
    COMPILE_CACHE_ENV,
    MODEL_CONTROL_MODE,
    RestartBudget,
    TritonInstall,
    TritonServer,
)

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


def test_administrative_apis_need_the_admin_key_by_default():
    cmd = TritonServer(Path("repo"), Path("weights"), admin_key="k" * 16).command(INSTALL)
    rule = f"{','.join(admin_api.RESTRICTED_APIS)}:{admin_api.ADMIN_HEADER}={'k' * 16}"
    assert f"--grpc-restricted-protocol={rule}" in cmd
    assert f"--http-restricted-api={rule}" in cmd
    assert not set(admin_api.OPEN_APIS) & set(admin_api.RESTRICTED_APIS)


def test_without_a_configured_key_each_start_gets_a_random_one(monkeypatch):
    monkeypatch.delenv(admin_api.KEY_ENV, raising=False)
    monkeypatch.delenv(admin_api.KEY_FILE_ENV, raising=False)
    server = TritonServer(Path("repo"), Path("weights"))
    keys = {
        a.rsplit("=", 1)[1] for _ in range(2) for a in server.command(INSTALL) if "restricted" in a
    }
    assert len(keys) == 2 and all(admin_api.KEY_PATTERN.fullmatch(k) for k in keys)


def test_own_restriction_flags_replace_the_default():
    own = ["--http-restricted-api=logging:x=yyyyyyyyyyyyyyyy"]
    cmd = TritonServer(Path("repo"), Path("weights"), extra_args=own).command(INSTALL)
    assert [a for a in cmd if "restricted" in a] == own


def test_metrics_bind_to_loopback_unless_told():
    assert "--metrics-address=127.0.0.1" in TritonServer(Path("r"), Path("w")).command(INSTALL)
    pod = TritonServer(Path("r"), Path("w"), metrics_address="10.1.2.3").command(INSTALL)
    assert "--metrics-address=10.1.2.3" in pod


def test_compile_cache_directory_reaches_the_stubs_environment(monkeypatch, tmp_path):
    server = TritonServer(Path("repo"), Path("weights"))
    monkeypatch.delenv(COMPILE_CACHE_ENV, raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert "TORCHINDUCTOR_CACHE_DIR" not in server.environment(INSTALL)  # torch's own default
    monkeypatch.setenv(COMPILE_CACHE_ENV, str(tmp_path))
    env = server.environment(INSTALL)
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert env["TRITON_CACHE_DIR"] == str(tmp_path / "triton")
