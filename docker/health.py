#!/usr/bin/env python3
"""`v2bgm-health live|ready [--model NAME]`: exit 0 when Triton's health endpoint answers 200.

Used by the image's HEALTHCHECK, the chart's readiness probe and its `helm test` pod. `ready`
also fails while the drain file exists: the chart's preStop hook creates it, so the pod turns
unready (and leaves the Service) before SIGTERM makes Triton stop taking new requests.
`--model NAME` asks for that model's readiness instead of the server's.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

ENDPOINTS = {"live": "/v2/health/live", "ready": "/v2/health/ready"}
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = "8000"
DEFAULT_DRAIN_FILE = "/tmp/v2bgm-draining"
TIMEOUT_S = 3.0
HTTP_OK = 200


def url_for(kind: str, model: str | None) -> str:
    host = os.environ.get("V2BGM_HTTP_HOST", DEFAULT_HTTP_HOST)
    port = os.environ.get("V2BGM_HTTP_PORT", DEFAULT_HTTP_PORT)
    path = f"/v2/models/{model}/ready" if model else ENDPOINTS[kind]
    return f"http://{host}:{port}{path}"


def check(kind: str, model: str | None = None) -> str | None:
    """None when healthy, else why not."""
    drain_file = Path(os.environ.get("V2BGM_DRAIN_FILE", DEFAULT_DRAIN_FILE))
    if kind == "ready" and drain_file.exists():
        return f"draining ({drain_file} exists)"
    url = url_for(kind, model)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if status == HTTP_OK else f"{url}: HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v2bgm-health", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(ENDPOINTS))
    parser.add_argument("--model", help="this model's readiness instead of the server's")
    args = parser.parse_args(argv)
    problem = check(args.kind, args.model)
    if problem:
        print(f"v2bgm-health: not {args.kind}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
