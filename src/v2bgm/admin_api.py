"""Who may use tritonserver's administrative APIs: only callers with the admin key.

Triton serves every API on its HTTP and gRPC ports to whoever reaches them. Some of them let a
caller hurt the server: registering a Python-backend stub's own /dev/shm region as a "system
shared memory" region and asking a model to write its output there kills the stub and every
request in flight; others load or unload models, change logging or tracing, or read statistics.
`v2bgm-serve` therefore starts tritonserver with `--grpc-restricted-protocol` and
`--http-restricted-api` for those APIs: they need the header `v2bgm-admin-key` (over gRPC Triton
prefixes it: `triton-grpc-protocol-v2bgm-admin-key`) with the key from $V2BGM_ADMIN_KEY or the
file named by $V2BGM_ADMIN_KEY_FILE (a mounted Kubernetes Secret). Without either, the key is
random for each start and known to nobody: the APIs are closed. Health, metadata and inference
stay open. The metrics port is not one of these APIs; `v2bgm-serve` binds it to loopback unless
told otherwise (the chart binds it to the pod's address for Prometheus and the probes).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

# Triton's names for the restricted groups (`tritonserver --help`, 2.51). Open: health, metadata,
# inference. model-config is closed: it shows the weights' paths and the models' parameters.
RESTRICTED_APIS = (
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
OPEN_APIS = ("health", "metadata", "inference")
ADMIN_HEADER = "v2bgm-admin-key"  # HTTP; lower case, as gRPC metadata keys must be
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton 2.51 expects this before the gRPC key
GRPC_ADMIN_HEADER = GRPC_HEADER_PREFIX + ADMIN_HEADER
KEY_ENV = "V2BGM_ADMIN_KEY"
KEY_FILE_ENV = "V2BGM_ADMIN_KEY_FILE"
# The key lands in tritonserver's flags, split there on ':' and '=', and in HTTP headers.
KEY_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
RANDOM_KEY_BYTES = 32


class AdminKeyError(ValueError):
    """The configured admin key is unusable (says which setting and why)."""


def admin_key(environ: Mapping[str, str] = os.environ) -> str:
    """The admin key: $V2BGM_ADMIN_KEY, else the contents of $V2BGM_ADMIN_KEY_FILE, else a
    random key nobody knows (the administrative APIs are then closed to everyone)."""
    if given := environ.get(KEY_ENV, "").strip():
        return _checked(given, KEY_ENV)
    if path := environ.get(KEY_FILE_ENV, "").strip():
        try:
            return _checked(Path(path).read_text().strip(), f"{KEY_FILE_ENV} ({path})")
        except OSError as exc:
            raise AdminKeyError(f"{KEY_FILE_ENV}: cannot read {path}: {exc.strerror}") from None
    return secrets.token_urlsafe(RANDOM_KEY_BYTES)


def _checked(key: str, source: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise AdminKeyError(
            f"{source}: the admin key must be 16-256 characters of A-Z a-z 0-9 . _ ~ - "
            f"(got {len(key)} characters)"
        )
    return key


def restriction_args(key: str) -> list[str]:
    """tritonserver's flags that put the administrative APIs behind the admin header."""
    rule = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={_checked(key, 'admin key')}"
    return [f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}"]


def grpc_headers(key: str) -> dict[str, str]:
    """Headers (gRPC metadata) of an administrative call through tritonclient.grpc."""
    return {GRPC_ADMIN_HEADER: key}


def http_headers(key: str) -> dict[str, str]:
    """Headers of an administrative call over HTTP."""
    return {ADMIN_HEADER: key}
