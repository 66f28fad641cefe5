"""The operator's cap on how much music a request may ask for: one value for every model of a
server, at most the interface's ceiling.

The interface allows up to `MAX_DURATION_S` (20 minutes) and the client checks that; a server
composes up to its operator's cap, 10 minutes by default: a request's cost grows with its music
(stage 1 makes 100 tokens a second of music, ~10 minutes of an H200 for 20 minutes of music), and
a long request holds a slot for as long. The cap is the model config's `max_duration_s`, rendered
into the captioner's, the composer's and the streaming model's configs alike
(`v2bgm.triton.model_configs`), or `$V2BGM_MAX_DURATION_S`, which every model of the server reads:
so the ensemble refuses a request before its captioning, and the stream before its `started`
event, with the same message as the composer.

Pure (numpy through the contract only): the streaming model imports it without the handlers'.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from v2bgm_contract import interface as contract

PARAMETER = "max_duration_s"  # in a model config's `parameters`
ENV = "V2BGM_MAX_DURATION_S"  # overrides the configs' value, on every model of the server
DEFAULT_MAX_DURATION_S = 600.0


def max_duration_s(params: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> float:
    """$V2BGM_MAX_DURATION_S, else the config's `max_duration_s`, else 600 s; a value outside
    [MIN_DURATION_S, MAX_DURATION_S] stops the model from loading, naming where it came from."""
    given = environ.get(ENV, "").strip()
    source = f"${ENV}" if given else f"the model config's {PARAMETER}"
    text = given or str(params.get(PARAMETER) or "").strip()
    if not text:
        return DEFAULT_MAX_DURATION_S
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{source} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or not contract.MIN_DURATION_S <= value <= contract.MAX_DURATION_S:
        raise ValueError(
            f"{source} must be in [{contract.MIN_DURATION_S:g}, {contract.MAX_DURATION_S:g}] "
            f"seconds (the interface's range), got {text}"
        )
    return value


def check_duration(duration_s: float, cap_s: float) -> None:
    """The interface's check, then this server's cap: InvalidInput naming DURATION_S, the cap and
    whose setting it is."""
    contract.check_duration(duration_s)
    if duration_s > cap_s:
        raise contract.InvalidInput(
            f"{contract.DURATION_S.name} is {duration_s:g} s, more than this server composes: "
            f"{cap_s:g} s (the operator's setting, {PARAMETER} or ${ENV}; the interface "
            f"allows up to {contract.MAX_DURATION_S:g} s)"
        )
