"""The client's TLS options without a server: checking certificate files, the CLI flags, the
hints on a refused connection, and one place that opens clients (tests/reliability/test_tls.py
runs them against real TLS and mutual-TLS servers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from v2bgm_client import cli
from v2bgm_client.connection import TlsOptions, failure_hint
from v2bgm_client.errors import TlsError

PACKAGE = Path(cli.__file__).parent
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SOCKET_CLOSED = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:x: Socket closed"
UNTRUSTED = "Tls handshake failed: SSL_ERROR_SSL: ...:CERTIFICATE_VERIFY_FAILED: self signed"


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pem" for name in ("root", "cert", "key")}
    for path in files.values():
        path.write_bytes(PEM)
    return files


def test_complete_options_read_every_file(pem_files):
    tls = TlsOptions(pem_files["root"], pem_files["cert"], pem_files["key"])
    assert tls.pem() == (PEM, PEM, PEM)
    assert TlsOptions().pem() == (None, None, None)  # the system's roots, no client certificate


@pytest.mark.parametrize("given", ["cert", "key"])
def test_a_client_certificate_needs_its_key(pem_files, given):
    tls = TlsOptions(client_cert=pem_files["cert"]) if given == "cert" else None
    tls = tls or TlsOptions(client_key=pem_files["key"])
    with pytest.raises(TlsError, match="needs its key"):
        tls.check()


def test_unusable_files_are_named(tmp_path):
    with pytest.raises(TlsError, match=r"cannot read the root certificate .*nope\.pem"):
        TlsOptions(root_cert=tmp_path / "nope.pem").check()
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(TlsError, match=r"root certificate .*ca\.der is not a PEM file"):
        TlsOptions(root_cert=der).check()


@pytest.mark.parametrize(
    ("tls", "message", "hint"),
    [
        (None, SOCKET_CLOSED, "does it require TLS (--ssl)?"),
        (TlsOptions(), SOCKET_CLOSED, "does it require a client certificate"),
        (TlsOptions(client_cert=Path("c"), client_key=Path("k")), SOCKET_CLOSED, "trust this"),
        (TlsOptions(), UNTRUSTED, "--root-cert names the CA"),
        (TlsOptions(), "Tls handshake failed: SSL_ERROR_SSL: WRONG_VERSION_NUMBER", "plaintext"),
        (None, "failed to connect to all addresses; Connection refused", ""),
        (None, "Stream removed (Socket closed)", ""),  # dropped mid-request: not about TLS
    ],
)
def test_refused_connections_get_a_hint(tls, message, hint):
    assert (hint in failure_hint(tls, message)) if hint else failure_hint(tls, message) == ""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_cli_tls_flags_build_the_options(pem_files):
    parse = cli.parser().parse_args
    assert cli.tls_options(parse(["in.mp4", "-o", "o.mp4"])) is None
    assert cli.tls_options(parse(["in.mp4", "-o", "o.mp4", "--ssl"])) == TlsOptions()
    flags = ["--client-cert", str(pem_files["cert"]), "--client-key", str(pem_files["key"])]
    assert cli.tls_options(parse(["in.mp4", "-o", "o.mp4", *flags])) == TlsOptions(
        None, pem_files["cert"], pem_files["key"]
    )


def test_cli_certificate_without_key_is_a_usage_error(capsys, pem_files, tmp_path):
    code, err = run(capsys, "x.mp4", "-o", str(tmp_path / "o.mp4"), "--client-cert", "c.pem")
    assert code == 2 and "--client-cert and --client-key go together" in err


def test_cli_unreadable_certificate_is_one_line_before_the_video(capsys, tmp_path):
    # The input does not exist either: the certificate is checked first, nothing is read.
    missing = tmp_path / "ca.pem"
    code, err = run(capsys, "nope.mp4", "-o", str(tmp_path / "o.mp4"), "--root-cert", str(missing))
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith("v2bgm: error: cannot read the root certificate") and "ca.pem" in line
    assert list(tmp_path.iterdir()) == []


def test_clients_are_opened_in_one_place():
    """Every call path gets its client from connection.open_client, so TLS applies to all."""
    opened = {
        path.name
        for path in PACKAGE.glob("*.py")
        if re.search(r"InferenceServerClient\(", path.read_text())
    }
    assert opened == {"connection.py"}
