#!/usr/bin/env python3
"""`v2bgm-health live|ready`: exit 0 when Triton's health endpoint answers 200.

Used by the image's HEALTHCHECK and the chart's readiness probe. `ready` also fails while the
drain file exists: the chart's preStop hook creates it, so the pod turns unready (and leaves the
Service) before SIGTERM makes Triton stop taking new requests.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

ENDPOINTS = {"live": "/v2/health/live", "ready": "/v2/health/ready"}
DEFAULT_HTTP_PORT = "8000"
DEFAULT_DRAIN_FILE = "/tmp/v2bgm-draining"
TIMEOUT_S = 3.0
HTTP_OK = 200


def check(kind: str) -> str | None:
    """None when healthy, else why not."""
    drain_file = Path(os.environ.get("V2BGM_DRAIN_FILE", DEFAULT_DRAIN_FILE))
    if kind == "ready" and drain_file.exists():
        return f"draining ({drain_file} exists)"
    port = os.environ.get("V2BGM_HTTP_PORT", DEFAULT_HTTP_PORT)
    url = f"http://127.0.0.1:{port}{ENDPOINTS[kind]}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if status == HTTP_OK else f"{url}: HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ENDPOINTS:
        print(f"usage: v2bgm-health {'|'.join(ENDPOINTS)}", file=sys.stderr)
        return 2
    problem = check(args[0])
    if problem:
        print(f"v2bgm-health: not {args[0]}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
