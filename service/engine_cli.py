"""``zipjobs zip``: the engine as a one-shot command.

A progress bar on stderr when it is a terminal, one JSON summary line on
stdout (for scripts), and on failure exactly one line on stderr with a
non-zero exit status: 2 for bad usage or input, 1 for anything else. The
detail (tracebacks, a failed abort's cause) goes to the log at debug level,
shown with ``--debug``; without it the log shows nothing, so the one line
stays one line even when the cleanup itself fails.

Keys files keep every legal S3 key: a key may begin or end with spaces or
begin with ``#``, so by default a line is a key exactly as written (only
its ``\n`` removed). Trimming and comments are explicit options; keys with
newlines need ``--keys-format jsonl`` or ``nul``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
from pathlib import Path
from typing import Any, TextIO

from .aws import AwsSettings, aws_client
from .engine import (
    Compression,
    Destination,
    MiB,
    MissingPolicy,
    Progress,
    SourceObject,
    ZipJobError,
    ZipOptions,
    ZipResult,
    build_zip,
    list_prefix,
)
from .engine.resume import discard_partial
from .process import freeze_startup_objects, skip_final_collection

EXIT_USAGE = 2
EXIT_FAILED = 1
KEYS_FORMATS = ("lines", "jsonl", "nul")

log = logging.getLogger("zipjobs.zip")


def register(subparsers: Any) -> None:
    """Add the ``zip`` subcommand to the ``zipjobs`` parser."""
    p = subparsers.add_parser(
        "zip",
        help="zip S3 objects into one S3 archive (one shot, no job API)",
        description="Zip S3 objects into one archive on S3 under a fixed memory budget.",
    )
    p.add_argument("--bucket", required=True, help="source bucket")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--keys-file", type=Path, help="file of keys ('-' = stdin), one per line as written"
    )
    what.add_argument("--prefix", help="every object under this key prefix")
    p.add_argument("--dest", required=True, help="s3://BUCKET/KEY.zip")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (local emulator)")
    p.add_argument("--region", default=None)
    p.add_argument("--budget-mb", type=int, default=64, help="memory budget (default 64)")
    p.add_argument("--concurrency", type=int, default=32, help="ranged GETs in flight")
    p.add_argument("--upload-concurrency", type=int, default=4, help="parts in flight")
    p.add_argument("--compression", choices=[c.value for c in Compression], default="stored")
    p.add_argument("--missing", choices=[m.value for m in MissingPolicy], default="fail")
    add_keys_file_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the checkpoint of an interrupted run and start over "
        "(by default a STORED archive resumes where the last run stopped)",
    )
    p.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=5.0,
        help="write the resume checkpoint at most this often (default 5; "
        "a kill loses at most the parts uploaded since)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="build a STORED archive with up to this many concurrent range builds on one "
        "upload, one per --worker-min-mb of archive (default 1; a fan-out run is not "
        "resumable: a failure aborts its upload)",
    )
    p.add_argument(
        "--worker-min-mb",
        type=int,
        default=8192,
        help="archive MiB per fan-out worker (default 8192); smaller archives use fewer workers",
    )
    p.add_argument("--debug", action="store_true", help="log details (tracebacks) to stderr")
    p.set_defaults(handler=run)


def add_keys_file_options(p: argparse.ArgumentParser) -> None:
    """How ``--keys-file`` is read; shared with ``zipjobs submit`` (service/client/cli.py)."""
    p.add_argument(
        "--keys-format",
        choices=KEYS_FORMATS,
        default="lines",
        help="lines: one key per line, exactly as written (default); jsonl: one JSON "
        "string per line; nul: keys separated by NUL bytes (find -print0)",
    )
    p.add_argument("--trim-keys", action="store_true", help="strip spaces around each line's key")
    p.add_argument(
        "--comments", action="store_true", help="skip lines that start with '#' (lines format)"
    )


def parse_keys(
    data: bytes, fmt: str = "lines", *, trim: bool = False, comments: bool = False
) -> list[str]:
    """The keys in a keys file's bytes, every legal S3 key kept as written.

    ``lines`` splits on ``\n`` only: ``str.splitlines`` would also split on
    ``\r``, form feeds and Unicode separators, which are legal inside keys.
    Empty entries are skipped (an empty key is not a legal S3 key). A JSON
    line that is not a string is a ValueError naming the line.
    """
    text = data.decode("utf-8")
    if fmt == "nul":
        return [k for k in text.split("\0") if k]
    if fmt == "jsonl":
        keys = []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            key = json.loads(line)
            if not isinstance(key, str):
                raise ValueError(f"keys file line {number}: expected a JSON string, got {line!r}")
            keys.append(key)
        return [k for k in keys if k]
    keys = []
    for line in text.split("\n"):
        if comments and line.startswith("#"):
            continue
        key = line.strip() if trim else line
        if key:
            keys.append(key)
    return keys


def read_keys(
    path: Path, fmt: str = "lines", *, trim: bool = False, comments: bool = False
) -> list[str]:
    """Read a keys file (``-`` = stdin) as bytes, so no newline translation touches a key."""
    data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    return parse_keys(data, fmt, trim=trim, comments=comments)


class ProgressBar:
    """A one-line bar redrawn in place; silent when the stream is not a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled and stream.isatty()

    def __call__(self, p: Progress) -> None:
        if not self._enabled:
            return
        width = 30
        filled = int(width * p.fraction)
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {p.fraction:6.1%} "
            f"{p.files_done}/{p.files_total} files {p.bytes_done / MiB:,.1f} MiB"
        )
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")


def peak_rss_mb() -> float:
    """Peak resident set size of this process, from the OS (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(result: ZipResult) -> dict[str, Any]:
    return {
        "destination": f"s3://{result.destination.bucket}/{result.destination.key}",
        "files": result.files,
        "skipped": [f"s3://{p.bucket}/{p.key} ({p.reason})" for p in result.skipped],
        "source_bytes": result.source_bytes,
        "archive_bytes": result.archive_bytes,
        "seconds": round(result.seconds, 3),
        "mb_per_s": round(result.mb_per_s, 1),
        "parts": result.parts,
        "part_size": result.part_size,
        "peak_budget_bytes": result.peak_budget_bytes,
        "resumed_from_bytes": result.resumed_from,
        "workers": result.workers,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


async def _zip(args: argparse.Namespace, bar: ProgressBar) -> ZipResult:
    options = ZipOptions(
        budget_bytes=args.budget_mb * MiB,
        read_concurrency=args.concurrency,
        upload_concurrency=args.upload_concurrency,
        compression=Compression(args.compression),
        missing=MissingPolicy(args.missing),
        resume=True,
        checkpoint_interval_s=args.checkpoint_seconds,
        workers=args.workers,
        worker_min_bytes=args.worker_min_mb * MiB,
    )
    settings = AwsSettings(endpoint_url=args.endpoint_url)
    if args.region:
        settings = AwsSettings(endpoint_url=args.endpoint_url, region=args.region)
    destination = Destination.parse(args.dest)
    pool = args.concurrency + 8 + args.upload_concurrency * args.workers
    async with aws_client("s3", settings, max_pool_connections=pool) as s3:
        freeze_startup_objects()
        if args.prefix is not None:
            sources = await list_prefix(s3, args.bucket, args.prefix)
        else:
            keys = read_keys(
                args.keys_file, args.keys_format, trim=args.trim_keys, comments=args.comments
            )
            sources = [SourceObject(args.bucket, key) for key in keys]
        if args.restart:
            await discard_partial(s3, destination)
        return await build_zip(sources, destination, s3=s3, options=options, on_progress=bar)


def configure_logging(debug: bool) -> None:
    """Debug: everything to stderr. Otherwise nothing from the log reaches the terminal
    (Python's last-resort handler would print warnings with their tracebacks):
    what the user must know is in the one failure line."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if debug else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])


def one_line(err: BaseException) -> str:
    """The error and its notes (e.g. a failed abort) on one line, whatever they contain."""
    parts = [str(err), *getattr(err, "__notes__", ())]
    return "; ".join(" ".join(p.split()) for p in parts if p)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; the return value is the exit status."""
    positive = (args.budget_mb, args.concurrency, args.upload_concurrency, args.workers)
    if min(*positive, args.worker_min_mb) <= 0:
        print(
            "zipjobs zip: --budget-mb, concurrencies, --workers and --worker-min-mb must be "
            "positive",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.checkpoint_seconds < 0:
        print("zipjobs zip: --checkpoint-seconds must not be negative", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.debug)
    bar = ProgressBar(sys.stderr, enabled=not args.no_progress)
    try:
        result = asyncio.run(_zip(args, bar))
    except (ZipJobError, ValueError, OSError) as err:
        bar.close()
        log.debug("zipjobs zip failed", exc_info=True)
        print(f"zipjobs zip: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_FAILED
    except KeyboardInterrupt:
        bar.close()
        print("zipjobs zip: interrupted; run the same command to resume", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # one line, never a traceback, for an operator
        bar.close()
        log.debug("zipjobs zip failed", exc_info=True)
        # Not a ZipJobError: a STORED build kept its upload and checkpoint.
        hint = "; run the same command to resume" if args.compression == "stored" else ""
        print(f"zipjobs zip: {type(err).__name__}: {one_line(err)}{hint}", file=sys.stderr)
        return EXIT_FAILED
    bar.close()
    print(json.dumps(summary(result)))
    skip_final_collection()
    return 0
