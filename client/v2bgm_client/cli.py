"""`v2bgm INPUT -o OUTPUT`: score a video from the command line (`--batch` for many).

Every failure ends with one `v2bgm: error: ...` line on stderr and a non-zero exit, never a
traceback; OUTPUT is only ever written complete. Progress shows on a terminal's stderr; the
summary (or `--json`'s report) goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from v2bgm_contract import interface as contract

from . import audio, mux
from .aio import make_soundtracks
from .api import DEFAULT_TIMEOUT_S, DEFAULT_URL, TIMEOUT_PER_MUSIC_S
from .batch import batch_outputs, list_inputs
from .connection import TlsOptions
from .cuts import AUTO
from .errors import ClientError
from .options import KEEP_AUDIO_FORMATS, SoundtrackOptions
from .progress import ProgressView
from .soundtrack import SoundtrackResult, make_soundtrack

PROG = "v2bgm"


def _cuts(value: str) -> tuple[float, ...] | str:
    """--cuts: "auto", "none", or seconds separated by commas."""
    word = value.strip().lower()
    if word == "none":
        return ()
    if word == AUTO:
        return AUTO
    try:
        cuts = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not 'auto', 'none' nor seconds separated by commas: {value!r}"
        ) from None
    try:
        contract.check_cuts(list(cuts), contract.MAX_DURATION_S)
    except contract.InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("CUTS_S", "the cuts")) from None
    return cuts


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not contract.SEED_MIN <= value <= contract.SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [{contract.SEED_MIN}, {contract.SEED_MAX}]")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error in one line, like every other failure (argparse adds the usage)."""
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Compose background music for a video and mux it in.")
    p.add_argument("input", metavar="INPUT", nargs="?", help="the video file")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        required=True,
        help="where to write the video with music; its extension picks the container "
        "(with --batch: the folder for the outputs)",
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
        "--duration",
        type=_positive,
        metavar="S",
        help=f"seconds of music (default: the video's; {contract.MIN_DURATION_S:g} to "
        f"{contract.MAX_DURATION_S:g}, or the server's lower cap)",
    )
    p.add_argument(
        "--candidates",
        type=_count,
        default=1,
        metavar="N",
        help=f"N different soundtracks (at most {contract.MAX_CANDIDATES}), written as OUTPUT-1, "
        "OUTPUT-2, ... (seeds SEED, SEED+1, ...)",
    )
    p.add_argument(
        "--mode",
        choices=audio.MODES,
        default="replace",
        help="replace the original sound (default), mix it under the music, or duck the "
        "music where the original is loud (speech)",
    )
    p.add_argument(
        "--lufs",
        type=_number,
        default=audio.DEFAULT_LUFS,
        metavar="LUFS",
        help=f"loudness of the output track (default {audio.DEFAULT_LUFS:g}, as streaming "
        f"services play; true peak at most {audio.TRUE_PEAK_CEILING_DBTP:g} dBTP)",
    )
    p.add_argument(
        "--cuts",
        type=_cuts,
        default=AUTO,
        metavar="auto|none|T1,T2,...",
        help="the picture's cuts, where the music's sections change: auto (default) finds "
        "them in the video, none leaves the music its own form, or give seconds separated by "
        "commas",
    )
    p.add_argument(
        "--sample-rate",
        type=int,
        choices=mux.SAMPLE_RATES,
        default=mux.AUDIO_RATE,
        metavar="HZ",
        help=f"sample rate of the output's stereo music track: 44100 or 48000 (default "
        f"{mux.AUDIO_RATE})",
    )
    p.add_argument(
        "--keep-audio",
        nargs="?",
        const="flac",
        choices=KEEP_AUDIO_FORMATS,
        metavar="FORMAT",
        help="also write the music alone beside each output (flac, the default, or wav)",
    )
    p.add_argument(
        "--batch",
        metavar="SOURCE",
        help="score every video of a folder, or of a list file (one path a line), into the "
        "folder -o; outputs that exist are skipped, so a stopped batch resumes",
    )
    p.add_argument(
        "--jobs",
        type=_count,
        default=2,
        metavar="N",
        help="with --batch: videos in flight at once (default 2)",
    )
    output = p.add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    output.add_argument(
        "--json",
        action="store_true",
        help="print a JSON report (caption, tags, seed, cuts and their source, timings, outputs) "
        "instead of the summary",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        metavar="S",
        help=f"seconds to wait for the server (default: {DEFAULT_TIMEOUT_S:g}, or "
        f"{TIMEOUT_PER_MUSIC_S:g} per second of music of all soundtracks when longer)",
    )
    tls = p.add_argument_group("TLS (each certificate option implies --ssl)")
    tls.add_argument(
        "--ssl",
        action="store_true",
        help="connect over TLS, trusting the system's root certificates unless --root-cert",
    )
    tls.add_argument(
        "--root-cert",
        type=Path,
        metavar="FILE",
        help="the CA certificate (PEM) that signed the server's certificate",
    )
    tls.add_argument(
        "--client-cert",
        type=Path,
        metavar="FILE",
        help="this client's certificate (PEM), for a server that requires mutual TLS",
    )
    tls.add_argument(
        "--client-key", type=Path, metavar="FILE", help="the key (PEM) of --client-cert"
    )
    return p


def tls_options(args: argparse.Namespace) -> TlsOptions | None:
    """TlsOptions from the command line; None: plaintext."""
    files = (args.root_cert, args.client_cert, args.client_key)
    if not args.ssl and all(path is None for path in files):
        return None
    return TlsOptions(*files)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)  # usage errors: argparse's own line, exit 2
    if (args.input is None) == (args.batch is None):
        p.error("give one video (INPUT) or --batch SOURCE")
    if (args.client_cert is None) != (args.client_key is None):
        p.error("--client-cert and --client-key go together")
    tls = tls_options(args)
    options = SoundtrackOptions(
        seed=args.seed,
        candidates=args.candidates,
        duration_s=args.duration,
        vocals=args.vocals,
        hint=args.hint,
        tags=tuple(args.tags),
        mode=args.mode,
        lufs=args.lufs,
        keep_audio=args.keep_audio,
        sample_rate=args.sample_rate,
        cuts_s=args.cuts,
    )
    try:
        if tls is not None:
            tls.check()  # an unusable certificate fails before any video is read
        if args.batch is not None:
            return _batch(args, options, tls)
        with ProgressView(enabled=False if args.quiet else None) as view:
            result = make_soundtrack(
                args.input,
                args.output,
                url=args.url,
                options=options,
                on_event=lambda event: view.update(args.input, event),
                timeout_s=args.timeout,
                tls=tls,
            )
    except (ClientError, contract.InvalidInput) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
    except Exception as exc:  # a bug; still one line, as promised
        return _fail(f"unexpected {type(exc).__name__}: {exc}")
    if args.json:
        print(json.dumps(result.report(), indent=2))
    elif not args.quiet:
        _summary(result)
    return 0


def _summary(result: SoundtrackResult) -> None:
    print(f"caption: {result.caption}")
    print(f"tags: {result.tags}")
    if result.lyrics:
        print(f"lyrics:\n{result.lyrics}")
    notes = {o.mux.note for o in result.outputs if o.mux.note}
    for note in sorted(notes):
        print(f"note: {note}")
    for out in result.outputs:
        print(
            f"wrote {out.path} ({out.mux.video_duration_s:.1f} s, {out.mux.audio_codec} audio, "
            f"seed {out.seed}, {out.loudness_lufs:.1f} LUFS)"
        )
        if out.audio_path is not None:
            print(f"wrote {out.audio_path} (the music alone)")


def _batch(args: argparse.Namespace, options: SoundtrackOptions, tls: TlsOptions | None) -> int:
    inputs = list_inputs(args.batch)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = list(zip(inputs, batch_outputs(inputs, out_dir), strict=True))
    with ProgressView(enabled=False if args.quiet else None) as view:
        items = asyncio.run(
            make_soundtracks(jobs, args.url, options, args.jobs, view.update, args.timeout, tls)
        )
    failed = [item for item in items if item.error]
    for item in failed:
        print(f"{PROG}: error: {item.input_path}: {item.error}", file=sys.stderr)
    if args.json:
        report = [
            {
                "input_path": str(item.input_path),
                "status": "failed" if item.error else "skipped" if item.skipped else "done",
                "error": item.error,
                "result": item.result.report() if item.result else None,
            }
            for item in items
        ]
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        for item in items:
            if item.result is not None:
                for out in item.result.outputs:
                    print(f"wrote {out.path} (tags: {item.result.tags}, seed {out.seed})")
            elif item.skipped:
                print(f"skipped {item.input_path}: {item.output} exists")
        done = sum(item.result is not None for item in items)
        skipped = sum(item.skipped for item in items)
        print(f"{done} scored, {skipped} skipped, {len(failed)} failed")
    return 1 if failed else 0


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
