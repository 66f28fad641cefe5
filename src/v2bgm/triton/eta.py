"""How long a streaming request has left: the current stage from its own pace, the stages after
it from what earlier compositions on this server cost per second of music.

Knows nothing of YuE: the stages and their order are learned from the composer's reports. Before
the first composition has finished there is no basis for the later stages, and no estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SMOOTHING = 0.5  # weight of the newest composition in the running average of each stage's cost
MIN_FRACTION = 0.02  # below this the current stage's own pace is noise


@dataclass
class Eta:
    # stage -> seconds of work per second of music, averaged over finished compositions
    cost_per_music_s: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # the stages, in the order they ran

    def learn(self, stages_s: dict[str, float], music_s: float) -> None:
        """Record a finished composition: seconds per stage (in the order they ran)."""
        if music_s <= 0 or not stages_s:
            return
        self.order = list(stages_s)
        for stage, seconds in stages_s.items():
            cost = seconds / music_s
            old = self.cost_per_music_s.get(stage)
            self.cost_per_music_s[stage] = (
                cost if old is None else SMOOTHING * cost + (1 - SMOOTHING) * old
            )

    def composition_s(self, music_s: float) -> float | None:
        """Seconds one whole composition of `music_s` should take; None before any was seen."""
        if not self.order:
            return None
        return sum(self.cost_per_music_s[s] for s in self.order) * music_s

    def remaining_s(
        self,
        stage: str | None,
        fraction: float,
        stage_elapsed_s: float,
        music_s: float,
        compositions_after: int,
    ) -> float | None:
        """Seconds left: the rest of `stage` (None: the composition has not started), the stages
        after it, and `compositions_after` whole compositions still to come."""
        whole = self.composition_s(music_s)
        if stage is None or stage not in self.order:  # queued, or a stage never seen before
            if whole is None:
                return None
            return whole * (compositions_after + (1 if stage is None else 0))
        if fraction >= MIN_FRACTION:
            current = stage_elapsed_s * (1.0 - fraction) / fraction
        else:
            current = self.cost_per_music_s[stage] * music_s * (1.0 - fraction)
        later = self.order[self.order.index(stage) + 1 :]
        rest = sum(self.cost_per_music_s[s] for s in later) * music_s
        return max(0.0, current) + rest + (whole or 0.0) * compositions_after
