"""A served model's cold start in one log line: where its seconds went, phase by phase, and the
host memory its process peaked at.

`BackendModel.initialize` starts a `ColdStart`; the handler's loader calls `lap(phase)` as each
phase ends (the composer through `ComposerOptions.lap`); the line is logged once the model is
ready. The first phase, "stub start + imports", runs from the stub process's start (the
kernel's start time in /proc/self/stat) to `initialize`: the Python-backend stub's own start-up
and model.py's imports (torch, transformers). Each phase records its seconds and the process's
`VmHWM` (the peak resident set so far: anonymous memory and the mapped pages of the weights
files alike) and `RssAnon` (the process's own memory, at the phase's end) from
/proc/self/status. The line reads

    music_composer cold start on cuda:0: 41.20 s, host memory peak (VmHWM) 5120 MiB; stub start
    + imports 9.10 s (VmHWM 800 MiB, RssAnon 610 MiB); weights: yue-s1 3.10 s (...); ...

(one line; `python -m v2bgm.bench.pipeline` reads it back from the server log: `read_lines`).

Pure (standard library only): the benchmark reads the same /proc files of the server's
processes through `memory_mib`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STUB_START = "stub start + imports"
MEMORY_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")  # kB in /proc/PID/status
SEPARATOR = "; "
HEAD = re.compile(
    r"(?P<model>[\w.-]+) cold start on (?P<device>[\w:]+): (?P<seconds>[\d.]+) s, "
    r"host memory peak \(VmHWM\) (?P<vm_hwm_mib>\d+|\?) MiB"
)
PHASE = re.compile(
    r"(?P<phase>[^;]+?) (?P<s>[\d.]+) s \(VmHWM (?P<vm_hwm_mib>\d+|\?) MiB, "
    r"RssAnon (?P<rss_anon_mib>\d+|\?) MiB\)"
)


def memory_mib(pid: int | str = "self", proc: Path = Path("/proc")) -> dict[str, int]:
    """MEMORY_FIELDS of /proc/PID/status in MiB (those the kernel reports; none if the process
    is gone)."""
    try:
        text = (proc / str(pid) / "status").read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in MEMORY_FIELDS:
            found[name] = int(value.split()[0]) // 1024
    return found


def process_age_s(pid: int | str = "self", proc: Path = Path("/proc")) -> float:
    """Seconds since the process started (/proc/PID/stat's start time against /proc/uptime)."""
    stat = (proc / str(pid) / "stat").read_text()
    started_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22, after comm
    uptime_s = float((proc / "uptime").read_text().split()[0])
    return max(0.0, uptime_s - started_ticks / os.sysconf("SC_CLK_TCK"))


class ColdStart:
    """The phases of one model's cold start, as they end."""

    def __init__(
        self,
        model: str,
        device: str,
        clock: Callable[[], float] = time.monotonic,
        memory: Callable[[], dict[str, int]] = memory_mib,
        age_s: Callable[[], float] = process_age_s,
    ) -> None:
        self.model, self.device = model, device
        self.clock, self.memory = clock, memory
        self.phases: list[Phase] = []
        self.last = clock()
        self._record(STUB_START, age_s())

    def lap(self, phase: str) -> None:
        """`phase` ended now: it took the time since the last one ended."""
        now = self.clock()
        self._record(phase, now - self.last)
        self.last = now

    def _record(self, phase: str, seconds: float) -> None:
        memory = self.memory()
        name = " ".join(phase.replace(";", ",").split())  # one line, phases apart
        self.phases.append(Phase(name, seconds, memory.get("VmHWM"), memory.get("RssAnon")))

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def line(self) -> str:
        peak = self.memory().get("VmHWM")
        head = (
            f"{self.model} cold start on {self.device}: {self.seconds:.2f} s, "
            f"host memory peak (VmHWM) {_mib(peak)} MiB"
        )
        return SEPARATOR.join([head, *(str(p) for p in self.phases)])


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    vm_hwm_mib: int | None  # at its end
    rss_anon_mib: int | None

    def __str__(self) -> str:
        return (
            f"{self.name} {self.seconds:.2f} s (VmHWM {_mib(self.vm_hwm_mib)} MiB, "
            f"RssAnon {_mib(self.rss_anon_mib)} MiB)"
        )


def _mib(value: int | None) -> str:
    return "?" if value is None else str(value)


def _number(text: str) -> float | None:
    return None if text == "?" else float(text)


def read_lines(log: str) -> dict[str, dict]:
    """Each model's cold start from a server log (its last one, after a restart): seconds,
    VmHWM and the phases, as `ColdStart.line` wrote them."""
    found = {}
    for line in log.splitlines():
        head = HEAD.search(line)
        if head is None:
            continue
        tail = line[head.end() :]
        found[head["model"]] = {
            "device": head["device"],
            "seconds": float(head["seconds"]),
            "vm_hwm_mib": _number(head["vm_hwm_mib"]),
            "phases": [
                {
                    "phase": m["phase"].strip(),
                    "s": float(m["s"]),
                    "vm_hwm_mib": _number(m["vm_hwm_mib"]),
                    "rss_anon_mib": _number(m["rss_anon_mib"]),
                }
                for m in PHASE.finditer(tail)
            ],
        }
    return found
