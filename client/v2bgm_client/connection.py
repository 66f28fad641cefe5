"""The one place that opens a client to the server: plaintext gRPC, TLS or mutual TLS.

Every call path (`api.infer`, `stream.stream_events`, `aio.stream_events`) gets its
`InferenceServerClient` from `open_client`, so certificates are read and checked the same way
everywhere, and a missing or malformed file is one clear line before any connection is tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ServerError, TlsError

PEM_MARKER = b"-----BEGIN "  # every PEM certificate or key holds one
# How gRPC words a failed TLS handshake (BoringSSL's names), and a server that hung up on the
# client during it (Triton does so to a plaintext client, or to one without the client
# certificate that mutual TLS requires).
TLS_FAILURE_MARKERS = ("ssl_error", "handshake failed", "certificate_verify")
SOCKET_CLOSED = "socket closed"
CONNECT_FAILED = "failed to connect"


@dataclass(frozen=True)
class TlsOptions:
    """TLS for the gRPC channel.

    `root_cert`: the CA certificate (PEM) that signed the server's certificate; None trusts the
    system's roots. `client_cert` and `client_key` (PEM, both or neither): this client's
    certificate and key, for a server started with `--grpc-use-ssl-mutual=true`.
    """

    root_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def check(self) -> None:
        """TlsError unless the options are complete and every file is a readable PEM file."""
        self.pem()

    def pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """The root certificate, client key and client certificate, read (None: not given)."""
        if (self.client_cert is None) != (self.client_key is None):
            raise TlsError("a client certificate needs its key, and a key its certificate")
        return (
            _optional_pem(self.root_cert, "root certificate"),
            _optional_pem(self.client_key, "client key"),
            _optional_pem(self.client_cert, "client certificate"),
        )


def read_pem(path: Path, what: str) -> bytes:
    """The bytes of a PEM file, or TlsError naming the file and what is wrong with it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if PEM_MARKER not in data:
        raise TlsError(f"the {what} {path} is not a PEM file (no '-----BEGIN' line)")
    return data


def credentials(tls: TlsOptions) -> Any:
    """grpc channel credentials for `tls` (certificates read now, not at the first call)."""
    import grpc

    root, key, chain = tls.pem()
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )


def _optional_pem(path: Path | None, what: str) -> bytes | None:
    return None if path is None else read_pem(path, what)


def open_client(module: ModuleType, url: str, tls: TlsOptions | None = None) -> Any:
    """`module.InferenceServerClient` for `url` (module: tritonclient.grpc or .grpc.aio),
    over TLS when `tls` is given, else plaintext."""
    creds = None if tls is None else credentials(tls)
    try:
        return module.InferenceServerClient(url, creds=creds)
    except Exception as exc:  # tritonclient raises several types for a malformed URL
        raise ServerError(f"bad server URL {url!r}: {exc}") from None


def failure_hint(tls: TlsOptions | None, message: str) -> str:
    """What a failed connection most likely means, given how this client connected ("" when
    nothing specific). A server that wants TLS, or a client certificate, just closes the socket.
    """
    lowered = message.lower()
    if "certificate_verify_failed" in lowered:
        return "the server's certificate is not trusted: --root-cert names the CA that signed it"
    if "wrong_version_number" in lowered:  # what a plaintext server answers a TLS hello
        return "the TLS handshake failed: is the server plaintext (no --ssl)?"
    if any(marker in lowered for marker in TLS_FAILURE_MARKERS):
        return "the TLS handshake failed"
    if SOCKET_CLOSED not in lowered or CONNECT_FAILED not in lowered:
        return ""  # not hung up on while connecting (e.g. dropped mid-request)
    if tls is None:
        return "the server closed the connection: does it require TLS (--ssl)?"
    if tls.client_cert is None:
        return (
            "the server closed the TLS connection: does it require a client certificate "
            "(--client-cert, --client-key)?"
        )
    return "the server closed the TLS connection: does it trust this client certificate?"
