"""Progress and cancellation between the streaming model and the composer it calls through BLS.

Triton 2.51 gives a BLS caller no way to cancel the request it sent (the response iterator's
`cancel()` came in 25.04), and the composer must stay non-decoupled (the ensemble and unary
callers use it), so it sends exactly one response: nothing reaches its caller before the end.
Both models' stubs are children of one tritonserver, so they share a small directory on
/dev/shm instead: the composer writes its latest progress there and the caller drops a cancel
marker there. The caller names the channel with a random token, as a BLS request parameter;
nothing a client sends becomes a path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2bgm.composer import Cancelled, Progress

CHANNEL_PARAMETER = "v2bgm_progress_channel"  # BLS request parameter: the channel's token
TOKEN_PATTERN = re.compile(r"[0-9a-f]{32}")
PUBLISH_INTERVAL_S = 0.1  # progress comes per token; the reader polls at about this rate
CANCEL_CHECK_INTERVAL_S = 0.05  # `request.is_cancelled()` asks the server: not every token
SHM = Path("/dev/shm")


def channel_root(server_pid: int | None = None) -> Path:
    """One directory per tritonserver (by default this stub's parent), on shared memory if any.
    `v2bgm-serve` removes it once that server has exited."""
    base = SHM if SHM.is_dir() else Path(tempfile.gettempdir())
    return base / f"v2bgm-progress-{os.getppid() if server_pid is None else server_pid}"


@dataclass(frozen=True)
class ProgressChannel:
    token: str
    root: Path = field(default_factory=channel_root)

    def __post_init__(self) -> None:
        if not TOKEN_PATTERN.fullmatch(self.token):
            raise ValueError(f"bad progress channel token {self.token!r}")

    @classmethod
    def create(cls, root: Path | None = None) -> ProgressChannel:
        channel = cls(secrets.token_hex(16), root or channel_root())
        channel.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return channel

    @property
    def state_path(self) -> Path:
        return self.root / f"{self.token}.json"

    @property
    def cancel_path(self) -> Path:
        return self.root / f"{self.token}.cancel"

    def publish(self, state: dict[str, Any]) -> None:
        """Replace the state atomically: a reader sees the old or the new one, never half."""
        if not self.root.is_dir():  # the caller has closed the channel
            return
        tmp = self.root / f".{self.token}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def cancel(self) -> None:
        self.cancel_path.touch()

    def cancelled(self) -> bool:
        return self.cancel_path.exists()

    def close(self) -> None:
        for path in (self.state_path, self.cancel_path):
            path.unlink(missing_ok=True)


class ComposerReport:
    """The composer's `Progress` for one request: publishes its stage and the fraction done to
    the caller's channel (at most every PUBLISH_INTERVAL_S), and raises Cancelled once the
    caller cancels, through the channel or as a Triton request (`is_cancelled`). The stage
    timings travel in the composer's answer (its TIMINGS output), not here."""

    def __init__(
        self,
        channel: ProgressChannel | None,
        is_cancelled: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,  # wall clock: the reader is another process
    ) -> None:
        self.channel = channel
        self.is_cancelled = is_cancelled
        self.clock = clock
        self.stage: str | None = None
        self.stage_started = 0.0
        self.last_publish = self.last_check = float("-inf")

    def __call__(self, stage: str, fraction: float) -> None:
        now = self.clock()
        changed = stage != self.stage
        if changed:
            self.stage, self.stage_started = stage, now
        if changed or now - self.last_check >= CANCEL_CHECK_INTERVAL_S:
            self.last_check = now
            if (self.channel is not None and self.channel.cancelled()) or self.is_cancelled():
                raise Cancelled("the caller cancelled the request")
        if self.channel is not None and (
            changed or fraction >= 1.0 or now - self.last_publish >= PUBLISH_INTERVAL_S
        ):
            self.last_publish = now
            self.channel.publish(
                {
                    "stage": stage,
                    "fraction": float(fraction),
                    "stage_started": self.stage_started,
                    "time": now,
                }
            )


def request_progress(request: Any) -> Progress:
    """The `Progress` of a Python-backend request: its channel, if its BLS caller named one
    (`CHANNEL_PARAMETER`), and Triton's own cancellation of the request."""
    channel = None
    try:
        token = json.loads(request.parameters() or "{}").get(CHANNEL_PARAMETER)
        if token is not None:
            channel = ProgressChannel(str(token))
    except ValueError:  # a client's own malformed parameter: no channel, not an error
        channel = None
    return ComposerReport(channel, request.is_cancelled)
