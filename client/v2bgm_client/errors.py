"""Errors the client raises; each message is one line a user can act on."""

from __future__ import annotations


class ClientError(Exception):
    """Base of the client's own errors (the CLI prints them without a traceback)."""


class VideoError(ClientError, ValueError):
    """The input video is missing, unreadable, or outside what the service accepts."""


class MuxError(ClientError, RuntimeError):
    """Writing the output video failed; no output file was left behind."""


class ServerError(ClientError, RuntimeError):
    """The Triton server could not be reached or rejected or failed the request. `code`: the
    gRPC status name the server answered with (None: no answer, e.g. it cannot be reached);
    `connection_lost`: the connection dropped while the call was in flight (a restart, say)."""

    def __init__(self, message: str, code: str | None = None, connection_lost: bool = False):
        super().__init__(message)
        self.code = code
        self.connection_lost = connection_lost


class TlsError(ClientError, ValueError):
    """A TLS option is incomplete, or a certificate or key file cannot be used."""
