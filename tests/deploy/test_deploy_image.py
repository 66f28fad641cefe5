"""docker/Dockerfile and its build context, checked without a Docker engine (none here).

hadolint lints the Dockerfile in `make lint`; these tests check what the image is made of.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from v2bgm_contract import interface as contract

from tests.deploy.chart import default_values
from tests.deploy.dockerfile import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    Instruction,
    Stage,
    ignore_patterns,
    is_ignored,
    stages,
)
from v2bgm.triton.model_configs import CPU_CONFIG_NAME, PYTHON_MODELS, render

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# The nvidia-pytriton release the Makefile unpacks -> the NGC release of the same tritonserver.
TRITON_RELEASE_OF_PYTRITON = {"0.7.0": "24.10"}  # both tritonserver 2.51.0
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|pip|pip3|gcc|g\+\+|make|cmake|conda|virtualenv)\b")
MIN_START_PERIOD_MIN = 20  # 7B weights load for minutes before the health check counts
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[Stage]]:
    return stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(parsed: tuple[dict[str, str], list[Stage]]) -> Stage:
    return parsed[1][-1]


@pytest.fixture(scope="module")
def patterns() -> list:
    return ignore_patterns(DOCKERIGNORE.read_text())


def copies(stage: Stage) -> list[tuple[list[str], list[str]]]:
    """(flags, paths) of each COPY; the last path is the destination."""
    out = []
    for instruction in stage.all("COPY"):
        words = instruction.words()
        flags = [w for w in words if w.startswith("--")]
        out.append((flags, [w for w in words if not w.startswith("--")]))
    return out


def test_every_stage_is_nvidias_triton_24_10(parsed) -> None:
    args, all_stages = parsed
    assert args["TRITON_IMAGE"] == TRITON_IMAGE
    assert len(all_stages) >= 2  # a builder, then the runtime
    assert all(stage.base == TRITON_IMAGE for stage in all_stages)
    assert all_stages[0].name == "builder"


def test_triton_release_is_the_one_the_tests_run() -> None:
    pytriton = re.search(r"^PYTRITON_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    release = TRITON_RELEASE_OF_PYTRITON[pytriton.group(1)]
    assert TRITON_IMAGE.endswith(f":{release}-py3")


def test_runtime_stage_adds_no_build_tools(final: Stage) -> None:
    for run in final.all("RUN"):
        assert not BUILD_TOOLS.search(run.value), run.value
    from_builder = [paths for flags, paths in copies(final) if "--from=builder" in flags]
    assert from_builder == [["/opt/v2bgm/venv", "/opt/v2bgm/venv"]]


def test_builder_installs_the_lock_from_wheels_and_builds_the_server_and_its_contract(
    parsed,
) -> None:
    runs = " ".join(run.value for run in parsed[1][0].all("RUN"))
    assert "--only-binary=:all: -r docker/requirements.txt" in runs
    assert re.search(r"pip wheel .*\./contract \.", runs)
    assert "client" not in runs  # the server stands on the contract, not on the client
    assert runs.rstrip().endswith("pip check")  # nothing excused


def test_runtime_runs_as_the_charts_non_root_user(final: Stage) -> None:
    (user,) = final.all("USER")
    uid = dict(i.value.split("=", 1) for i in final.all("ARG"))["V2BGM_UID"]
    assert user.value == "${V2BGM_UID}:${V2BGM_UID}"
    assert uid not in ("0", "root")
    assert int(uid) == default_values()["podSecurityContext"]["runAsUser"]


def test_healthcheck_asks_triton_readiness_after_a_long_start_period(final: Stage) -> None:
    (check,) = final.all("HEALTHCHECK")
    assert check.value.endswith('CMD ["v2bgm-health", "ready"]')
    start_period = re.search(r"--start-period=(\d+)m", check.value)
    assert int(start_period.group(1)) >= MIN_START_PERIOD_MIN
    assert (
        'ENDPOINTS = {"live": "/v2/health/live", "ready": "/v2/health/ready"}'
        in (ROOT / "docker" / "health.py").read_text()
    )


def test_entrypoint_and_tools_are_installed_executable(final: Stage) -> None:
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint == Instruction("ENTRYPOINT", '["v2bgm-entrypoint"]')
    installed = {paths[-1]: (flags, paths[0]) for flags, paths in copies(final)}
    for command, source in [
        ("v2bgm-entrypoint", "docker/entrypoint.sh"),
        ("v2bgm-fetch-weights", "docker/fetch-weights.sh"),
        ("v2bgm-health", "docker/health.py"),
    ]:
        flags, copied = installed[f"/usr/local/bin/{command}"]
        assert copied == source and "--chmod=755" in flags


def test_weights_come_from_the_volume_only(final: Stage, patterns) -> None:
    env = " ".join(i.value for i in final.all("ENV"))
    assert "V2BGM_WEIGHTS=/weights" in env
    assert [v.value for v in final.all("VOLUME")] == ['["/weights"]']
    assert default_values()["weights"]["mountPath"] == "/weights"
    for _flags, paths in copies(final):
        assert not any(p.startswith("models") for p in paths[:-1])
    for suffix in WEIGHT_SUFFIXES:
        assert is_ignored(f"model_repository/music_composer/1/model{suffix}", patterns)


def test_exposed_ports_are_the_charts(final: Stage) -> None:
    (expose,) = final.all("EXPOSE")
    assert sorted(int(p) for p in expose.words()) == sorted(default_values()["ports"].values())


def test_copied_sources_exist_and_are_in_the_build_context(parsed, patterns) -> None:
    for stage in parsed[1]:
        for flags, paths in copies(stage):
            if any(f.startswith("--from") for f in flags):
                continue
            for source in paths[:-1]:
                assert (ROOT / source).exists(), source
                assert not is_ignored(source, patterns), f"{source} is in .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python", ".git/HEAD", ".cache/pytriton_wheel/x",
        "models/tiny/yue-s1/config.json", "out/sample_scored.mp4", "tests/conftest.py",
        "helm/v2bgm/values.yaml",
        "src/v2bgm/__pycache__/serve.cpython-311.pyc", "client/v2bgm_client/cli.py",
        "contract/v2bgm_contract.egg-info/PKG-INFO",
        "model_repository/music_composer/1/__pycache__/model.cpython-311.pyc", "Makefile",
    ],
)  # fmt: skip
def test_dockerignore_keeps_out(path: str, patterns) -> None:
    assert is_ignored(path, patterns)


def test_dockerignore_matcher_rules() -> None:
    rules = ignore_patterns("*\n!keep/\nkeep/**/*.tmp\n!keep/a/special.tmp\n")
    assert is_ignored("other/file", rules)
    assert not is_ignored("keep/a/b.py", rules)
    assert is_ignored("keep/a/b.tmp", rules)
    assert is_ignored("keep/b.tmp", rules)  # ** spans zero folders too
    assert not is_ignored("keep/a/special.tmp", rules)  # the last match wins


def context_files(top: str, patterns) -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for path in (ROOT / top).rglob("*")
        if path.is_file() and not is_ignored(str(path.relative_to(ROOT)), patterns)
    }


def test_model_repository_in_the_image_is_complete(patterns) -> None:
    shipped = context_files("model_repository", patterns)
    # every config the interface renders (tests/unit checks their text), and each adapter
    for relative in render():
        assert f"model_repository/{relative}" in shipped, relative
    for model in PYTHON_MODELS:
        assert f"model_repository/{model.spec.name}/1/model.py" in shipped
        assert f"model_repository/{model.spec.name}/configs/{CPU_CONFIG_NAME}.pbtxt" in shipped
    models = {relative.split("/")[0] for relative in render()}
    assert {contract.PIPELINE.name, *(m.spec.name for m in PYTHON_MODELS)} <= models
    assert {path.split("/")[1] for path in shipped} == models  # no stray folder goes in
    # Triton needs a version folder even for the ensemble; git keeps it (and a fresh clone has
    # it) only with a file in it, such as video_to_music/1/.gitkeep.
    for model in models:
        assert any(p.startswith(f"model_repository/{model}/1/") for p in shipped), model


def test_export_package_is_in_the_image_for_the_init_step(final: Stage, patterns) -> None:
    assert (["export", "/opt/v2bgm/export"]) in [paths for _flags, paths in copies(final)]
    shipped = context_files("export", patterns)
    assert "export/__main__.py" in shipped
    assert all(Path(p).suffix == ".py" for p in shipped), shipped
