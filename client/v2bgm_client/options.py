"""What a user can ask of a soundtrack, checked before any video is read or any server called."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from v2bgm_contract import interface as contract

from . import audio, mux
from .cuts import AUTO

KEEP_AUDIO_FORMATS = ("flac", "wav")


@dataclass(frozen=True)
class SoundtrackOptions:
    seed: int | None = None  # None: the server draws one (reported back)
    candidates: int = 1  # soundtracks, one output video each
    duration_s: float | None = None  # of music; None: the video's
    vocals: bool = False
    hint: str = ""  # free text that steers the captioner ("upbeat, no drums")
    tags: tuple[str, ...] = ()  # YuE tags to keep; one per family replaces the generated one
    mode: str = "replace"  # audio.MODES
    lufs: float = audio.DEFAULT_LUFS  # integrated loudness of the output track
    keep_audio: str | None = None  # also write the music alone: "flac" or "wav"
    sample_rate: int = mux.AUDIO_RATE  # of the output's (stereo) music track: mux.SAMPLE_RATES
    # The picture's cuts (seconds), where the music's sections change: AUTO ("auto") finds them
    # in the video (v2bgm_client.cuts); () sends none.
    cuts_s: tuple[float, ...] | Literal["auto"] = AUTO

    def check(self) -> None:
        """Raise `interface.InvalidInput` naming the option and its allowed range."""
        if self.seed is not None:
            contract.check_seed(self.seed)
        if not 1 <= self.candidates <= contract.MAX_CANDIDATES:
            raise contract.InvalidInput(
                f"candidates must be in [1, {contract.MAX_CANDIDATES}], got {self.candidates}"
            )
        if self.duration_s is not None:
            contract.check_duration(self.duration_s)
        contract.check_text(contract.HINT, self.hint.encode("utf-8"), contract.MAX_HINT_BYTES)
        contract.check_fixed_tags(list(self.tags))
        if self.mode not in audio.MODES:
            modes = ", ".join(audio.MODES)
            raise contract.InvalidInput(f"mode must be one of {modes}, not {self.mode!r}")
        if not (math.isfinite(self.lufs) and audio.MIN_LUFS <= self.lufs <= audio.MAX_LUFS):
            raise contract.InvalidInput(
                f"loudness target must be in [{audio.MIN_LUFS:g}, {audio.MAX_LUFS:g}] LUFS, "
                f"got {self.lufs:g}"
            )
        if isinstance(self.cuts_s, str):
            if self.cuts_s != AUTO:
                raise contract.InvalidInput(
                    f"cuts must be {AUTO!r} or seconds, not {self.cuts_s!r}"
                )
        elif len(self.cuts_s) > contract.MAX_CUTS:
            contract.check_cuts(list(self.cuts_s), contract.MAX_DURATION_S)  # names the limit
        if self.sample_rate not in mux.SAMPLE_RATES:
            rates = " or ".join(str(r) for r in mux.SAMPLE_RATES)
            raise contract.InvalidInput(f"sample rate must be {rates} Hz, got {self.sample_rate}")
        if self.keep_audio is not None and self.keep_audio not in KEEP_AUDIO_FORMATS:
            raise contract.InvalidInput(
                f"keep-audio format must be one of {', '.join(KEEP_AUDIO_FORMATS)}, "
                f"not {self.keep_audio!r}"
            )

    @property
    def given_cuts(self) -> tuple[float, ...]:
        """The cuts as given; () for AUTO, which only a caller with the video can resolve."""
        return () if isinstance(self.cuts_s, str) else tuple(self.cuts_s)
