"""When a stream that failed is sent again, and with what.

A stream that ends with a retryable status (`api.RETRY_CODES`: the server is at capacity or its
model is reloading) before any audio arrived is sent again after the ensemble path's jittered
backoff (`api.backoff_delay`), as long as the caller's deadline allows. The retry carries the seed
the server announced in its `started` event, so the music it makes is the music the first attempt
would have made. The caller sees a `Retrying` event, after which the events start over.
A stream whose connection dropped (the server restarting after a crash) is retried too, and so
are the attempts that then find the server not listening yet, for up to `RESTART_WAIT_S` (a
full-size reload takes 76-123 s) within the deadline; past it the dropped connection is the error.

Once audio has arrived the stream is not sent again unless the caller asks for it
(`after_audio=True`): the same seed then gives the same audio again. A server that cannot be
reached at all is reported at once, as on the ensemble path.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from .api import RETRY_CODES, backoff_delay
from .errors import ServerError

RESTART_WAIT_S = 180.0  # after a dropped connection, how long "cannot reach" means "restarting"
RESTART_WAIT_ENV = "V2BGM_RESTART_WAIT_S"  # overrides it (seconds)


@dataclass(frozen=True)
class Retrying:
    """A client-side event: attempt `attempt` failed with `code`; the next starts in `delay_s`
    with `seed`, and its events start over."""

    attempt: int
    delay_s: float
    code: str
    message: str
    seed: int | None


class StreamRetry:
    """One stream request's retries: feed it every event (`saw`) and the error that ended an
    attempt (`after`); `request` is what the next attempt sends."""

    def __init__(
        self,
        request: Mapping[str, np.ndarray],
        timeout_s: float,
        rng: random.Random | None = None,
        after_audio: bool = False,
        enabled: bool = True,
        restart_wait_s: float | None = None,
    ) -> None:
        self.request = dict(request)
        self.deadline = time.monotonic() + timeout_s
        self.rng = rng or random.Random()
        self.after_audio = after_audio
        self.enabled = enabled
        self.attempt = 0
        self.audio = False
        if restart_wait_s is None:
            restart_wait_s = float(os.environ.get(RESTART_WAIT_ENV, "") or RESTART_WAIT_S)
        self.restart_wait_s = restart_wait_s
        self.lost: ServerError | None = None  # the dropped connection, while waiting for it
        self.lost_at = 0.0

    def remaining_s(self) -> float:
        return max(self.deadline - time.monotonic(), 1e-3)

    def saw(self, event: events.Event) -> None:
        if isinstance(event, events.Started) and contract.SEED.name not in self.request:
            seed = np.asarray([[event.seed]], dtype=contract.SEED.numpy_dtype)
            self.request[contract.SEED.name] = seed  # a retry makes the same music
        elif isinstance(event, events.Composed):
            self.audio = True

    def after(self, error: ServerError) -> Retrying | None:
        """The notice of the next attempt, or None: `error` is final."""
        code = getattr(error, "code", None)
        if getattr(error, "connection_lost", False):
            self.lost, self.lost_at = error, time.monotonic()
        elif code is None and self.lost is not None:
            if time.monotonic() - self.lost_at > self.restart_wait_s:
                return None
            code = "UNAVAILABLE"  # not listening yet: the restart is under way
        if not self.enabled or code not in RETRY_CODES or (self.audio and not self.after_audio):
            return None
        delay = backoff_delay(self.attempt, self.rng)
        if time.monotonic() + delay >= self.deadline:
            return None
        self.attempt += 1
        self.audio = False
        seed = self.request.get(contract.SEED.name)
        return Retrying(
            self.attempt,
            delay,
            code,
            str(error),
            None if seed is None else int(np.asarray(seed).reshape(-1)[0]),
        )

    def final(self, error: ServerError) -> ServerError:
        """The error to raise once `after` said no: a server that never came back after the
        connection dropped is reported as the dropped connection, not as "cannot reach"."""
        if getattr(error, "code", None) is None and self.lost is not None:
            return self.lost
        return error
