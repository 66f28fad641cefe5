"""`v2bgm INPUT -o OUTPUT`: score a video from the command line.

Every failure ends with one `v2bgm: error: ...` line on stderr and a non-zero exit, never a
traceback; OUTPUT is only ever written complete.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import interface as api
from .api import DEFAULT_TIMEOUT_S, DEFAULT_URL, score_video
from .errors import ClientError

PROG = "v2bgm"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not api.SEED_MIN <= value <= api.SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [{api.SEED_MIN}, {api.SEED_MAX}]")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error in one line, like every other failure (argparse adds the usage)."""
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Compose background music for a video and mux it in.")
    p.add_argument("input", metavar="INPUT", help="the video file")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        required=True,
        help="where to write the video with music; its extension picks the container",
    )
    p.add_argument(
        "--url", default=DEFAULT_URL, help=f"Triton gRPC address (default {DEFAULT_URL})"
    )
    p.add_argument("--seed", type=_seed, help="composer seed, for a repeatable result")
    p.add_argument("--vocals", action="store_true", help="music with sung lyrics (default: none)")
    p.add_argument("--hint", default="", help='steer the music in words, e.g. "upbeat, no drums"')
    p.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG",
        help="a YuE tag to keep (repeatable), e.g. --tag jazz --tag piano",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT_S:g})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # usage errors: argparse's own line, exit 2
    try:
        result = score_video(
            args.input,
            args.output,
            url=args.url,
            seed=args.seed,
            timeout_s=args.timeout,
            vocals=args.vocals,
            hint=args.hint,
            fixed_tags=tuple(args.tags),
        )
    except (ClientError, api.InvalidInput) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
    except Exception as exc:  # a bug; still one line, as promised
        return _fail(f"unexpected {type(exc).__name__}: {exc}")
    print(f"caption: {result.caption}")
    print(f"tags: {result.tags}")
    if result.lyrics:
        print(f"lyrics:\n{result.lyrics}")
    if result.mux.note:
        print(f"note: {result.mux.note}")
    print(
        f"wrote {result.output_path} ({result.mux.video_duration_s:.1f} s, "
        f"{result.mux.audio_codec} audio, seed {result.seed})"
    )
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
