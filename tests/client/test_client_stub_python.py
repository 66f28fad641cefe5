"""`find_install` with $V2BGM_STUB_PYTHON: the Python-backend stubs run another interpreter's
virtual environment (how `make test-latest` serves from .venv while its client has numpy 2)."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from v2bgm.serve import find_install

VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An unpacked nvidia-pytriton wheel, as far as `find_install` looks: a server, the stub of
    this Python's version (and of another) and the Python backend's folder."""
    root = tmp_path / "pytriton" / "tritonserver"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_bytes(b"server")
    for version in (VERSION, "3.99"):
        (root / "python_backend_stubs" / version).mkdir(parents=True)
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        stub.write_bytes(f"stub {version}".encode())
    (root / "backends" / "python").mkdir(parents=True)
    return tmp_path


def _stub(home: Path) -> bytes:
    return (home / "pytriton/tritonserver/backends/python/triton_python_backend_stub").read_bytes()


def _path_head(env: dict[str, str]) -> str:
    return env["PATH"].split(os.pathsep)[0]


def test_default_is_this_interpreter(home, monkeypatch):
    monkeypatch.delenv("V2BGM_STUB_PYTHON", raising=False)
    install = find_install(home)
    assert _path_head(install.env) == str(Path(sys.executable).parent)
    assert _stub(home) == f"stub {VERSION}".encode()
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    assert install.env["LD_LIBRARY_PATH"].split(os.pathsep)[1] == libdir


def test_the_variable_names_the_stubs_python(home, tmp_path, monkeypatch):
    # A venv-like bin/ whose python3 is a link to this interpreter: the folder of the link goes
    # on PATH (the stub finds its venv through the `python3` first on PATH), not the target's;
    # the stub's version and libpython's folder are that interpreter's, asked of it.
    bin_dir = tmp_path / "other-venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("V2BGM_STUB_PYTHON", "other-venv/bin/python3")  # relative: made absolute
    install = find_install(home)
    assert _path_head(install.env) == str(bin_dir)
    assert _stub(home) == f"stub {VERSION}".encode()
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    assert install.env["LD_LIBRARY_PATH"].split(os.pathsep)[1] == libdir


def test_the_stub_follows_that_pythons_version(home, tmp_path, monkeypatch):
    fake = tmp_path / "py399" / "python3"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '3.99\\n/opt/py399/lib\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("V2BGM_STUB_PYTHON", str(fake))
    install = find_install(home)
    assert _stub(home) == b"stub 3.99"
    assert _path_head(install.env) == str(fake.parent)
    assert install.env["LD_LIBRARY_PATH"].split(os.pathsep)[1] == "/opt/py399/lib"
