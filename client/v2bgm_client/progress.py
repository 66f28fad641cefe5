"""The terminal progress display (rich), fed by the stream's events; one line per video.

Shown only where stderr is a terminal, so pipes, logs and `--json` consumers see none of it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn
from v2bgm_contract import events

from .retry import Retrying

CAPTION_CHARS = 100  # a model's caption can run long; the tags say more at a glance
STAGE_NAMES = {
    events.QUEUED_STAGE: "waiting for the composer",
    "stage1": "composing (stage 1)",
    "stage2": "adding detail (stage 2)",
    "decode": "decoding audio",
}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


class ProgressView:
    """`with ProgressView() as view: ... view.update(name, event)`."""

    def __init__(self, enabled: bool | None = None, console: Console | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.console = console or Console(stderr=True)
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[music]}"),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, events.Started] = {}

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self.bars.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.enabled:
            self.bars.stop()

    def update(self, name: str | Path, event: events.Event) -> None:
        if not self.enabled:
            return
        name = Path(name).name
        if name not in self.tasks:
            self.tasks[name] = self.bars.add_task(f"{name}: starting", total=1.0, music="", eta="")
        task = self.tasks[name]
        if isinstance(event, events.Started):
            self.started[name] = event
            self.bars.update(task, description=f"{name}: watching the video", completed=0)
        elif isinstance(event, events.Captioned):
            caption = escape(textwrap.shorten(event.caption, CAPTION_CHARS, placeholder="…"))
            self.console.print(f"[bold]{escape(name)}[/]: {escape(event.tags)}  [dim]{caption}[/]")
        elif isinstance(event, events.Progress):
            started = self.started.get(name)
            of = started.candidates if started else 1
            which = f" {event.candidate + 1}/{of}" if of > 1 else ""
            stage = STAGE_NAMES.get(event.stage, event.stage)
            whole = f"/{started.duration_s:.1f}" if started else ""
            self.bars.update(
                task,
                description=f"{name}{which}: {stage}",
                completed=event.fraction,
                music=f"{event.music_s:.1f}{whole} s of music",
                eta=_clock(event.eta_s),
            )
        elif isinstance(event, events.Done):
            self.bars.update(task, description=f"{name}: writing", completed=1.0, eta="0:00")
        elif isinstance(event, Retrying):
            self.console.print(
                f"[bold]{escape(name)}[/]: {escape(event.code)}, sending again in "
                f"{event.delay_s:.1f} s (seed {event.seed})"
            )
            self.bars.update(task, description=f"{name}: waiting to retry", completed=0)
