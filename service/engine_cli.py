"""``zipjobs zip``: the engine as a one-shot command.

A progress bar on stderr when it is a terminal, one JSON summary line on
stdout (for scripts), and on failure a one-line reason on stderr with a
non-zero exit status: 2 for bad usage or input, 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

EXIT_USAGE = 2
EXIT_FAILED = 1


def register(subparsers: Any) -> None:
    """Add the ``zip`` subcommand to the ``zipjobs`` parser."""
    p = subparsers.add_parser(
        "zip",
        help="zip S3 objects into one S3 archive (one shot, no job API)",
        description="Zip S3 objects into one archive on S3 under a fixed memory budget.",
    )
    p.add_argument("--bucket", required=True, help="source bucket")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--keys-file", type=Path, help="file with one key per line ('-' = stdin)")
    what.add_argument("--prefix", help="every object under this key prefix")
    p.add_argument("--dest", required=True, help="s3://BUCKET/KEY.zip")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (local emulator)")
    p.add_argument("--region", default=None)
    p.add_argument("--budget-mb", type=int, default=64, help="memory budget (default 64)")
    p.add_argument("--concurrency", type=int, default=32, help="ranged GETs in flight")
    p.add_argument("--upload-concurrency", type=int, default=4, help="parts in flight")
    p.add_argument("--compression", choices=[c.value for c in Compression], default="stored")
    p.add_argument("--missing", choices=[m.value for m in MissingPolicy], default="fail")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the checkpoint of an interrupted run and start over "
        "(by default a STORED archive resumes where the last run stopped)",
    )
    p.set_defaults(handler=run)


def read_keys(path: Path) -> list[str]:
    """Keys, one per line; blank lines and ``#`` comments are ignored."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


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
    )
    settings = AwsSettings(endpoint_url=args.endpoint_url)
    if args.region:
        settings = AwsSettings(endpoint_url=args.endpoint_url, region=args.region)
    destination = Destination.parse(args.dest)
    async with aws_client("s3", settings, max_pool_connections=args.concurrency + 8) as s3:
        if args.prefix is not None:
            sources = await list_prefix(s3, args.bucket, args.prefix)
        else:
            sources = [SourceObject(args.bucket, key) for key in read_keys(args.keys_file)]
        if args.restart:
            await discard_partial(s3, destination)
        return await build_zip(sources, destination, s3=s3, options=options, on_progress=bar)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; the return value is the exit status."""
    if args.budget_mb <= 0 or args.concurrency <= 0 or args.upload_concurrency <= 0:
        print("zipjobs zip: --budget-mb and concurrencies must be positive", file=sys.stderr)
        return EXIT_USAGE
    bar = ProgressBar(sys.stderr, enabled=not args.no_progress)
    try:
        result = asyncio.run(_zip(args, bar))
    except (ZipJobError, ValueError, OSError) as err:
        bar.close()
        print(f"zipjobs zip: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_FAILED
    except KeyboardInterrupt:
        bar.close()
        print("zipjobs zip: interrupted; run the same command to resume", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # one line, never a traceback, for an operator
        bar.close()
        print(f"zipjobs zip: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    bar.close()
    print(json.dumps(summary(result)))
    return 0
