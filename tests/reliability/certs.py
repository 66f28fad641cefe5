"""Certificates for the TLS tests, made with the openssl command: a test CA, and server and
client certificates it signs (valid for a day, for localhost and 127.0.0.1)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

DAYS = "1"
SERVER_NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_self_signed(out: Path, name: str = "server") -> Pair:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    pair = Pair(out / f"{name}.crt", out / f"{name}.key")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
        "-keyout", str(pair.key), "-out", str(pair.cert), "-subj", "/CN=localhost",
        "-addext", SERVER_NAMES,
    )  # fmt: skip
    return pair


def make_ca(out: Path, name: str = "ca") -> Pair:
    pair = Pair(out / f"{name}.crt", out / f"{name}.key")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
        "-keyout", str(pair.key), "-out", str(pair.cert), "-subj", f"/CN=v2bgm test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def make_signed(out: Path, ca: Pair, name: str, usage: str) -> Pair:
    """A certificate signed by `ca`; `usage`: serverAuth or clientAuth."""
    pair = Pair(out / f"{name}.crt", out / f"{name}.key")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
        "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-keyout", str(pair.key), "-out", str(pair.cert), "-subj", f"/CN={name}",
        "-addext", SERVER_NAMES if usage == "serverAuth" else "subjectAltName=DNS:v2bgm-client",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", f"extendedKeyUsage={usage}",
    )  # fmt: skip
    return pair
