"""One contender, one run, in a fresh process: ``python -m loadtest.run_contender ...``.

A fresh process per run is what makes peak RSS meaningful: ``ru_maxrss`` is
the high-water mark of this process alone (the parent also reads it from the
OS with ``wait4``). Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import sys
import time
from typing import Any

from loadtest.bench_keys import seed_keys
from service.units import MiB


def _rss_mib() -> float:
    """This process's RSS now, as psutil reads it on Linux (``/proc/self/statm``).

    Read directly for every contender: importing psutil cost each contender
    process about 10 ms of start-up, which its wall time counts.
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / MiB
    except OSError:  # not Linux
        import psutil

        return float(psutil.Process().memory_info().rss) / MiB


def engine_options(pairs: list[str]) -> dict[str, int]:
    """``range_size=4194304``-style overrides of integer ZipOptions fields (for tuning runs)."""
    out: dict[str, int] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name.strip()] = int(value)
    return out


async def _ours(args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    from service.aws import AwsSettings, aws_client
    from service.engine import Destination, SourceObject, ZipOptions, build_zip
    from service.process import freeze_startup_objects

    settings = AwsSettings(
        endpoint_url=args.endpoint, access_key_id="bench", secret_access_key="bench"
    )
    sources = [SourceObject(args.bucket, k) for k in keys]
    overrides: dict[str, Any] = dict(engine_options(args.option))
    options = dataclasses.replace(ZipOptions(budget_bytes=args.budget_mib * MiB), **overrides)
    async with aws_client("s3", settings) as s3:
        freeze_startup_objects()  # as ``zipjobs zip`` does once its client is made
        before = _rss_mib()
        t = time.monotonic()
        res = await build_zip(
            sources, Destination(args.dest_bucket, args.dest_key), s3=s3, options=options
        )
        seconds = time.monotonic() - t
    return {
        "seconds": seconds,
        "bytes_out": res.archive_bytes,
        "parts": res.parts,
        "part_size": res.part_size,
        "peak_budget_mib": res.peak_budget_bytes / MiB,
        "rss_before_mib": before,
    }


async def _copy(args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    from loadtest.baselines import plain_copy
    from service.aws import AwsSettings, aws_client

    settings = AwsSettings(
        endpoint_url=args.endpoint, access_key_id="bench", secret_access_key="bench"
    )
    async with aws_client("s3", settings) as s3:
        before = _rss_mib()
        out = await plain_copy(
            s3,
            args.bucket,
            keys,
            args.dest_bucket,
            args.dest_key,
            window_bytes=args.budget_mib * MiB,
        )
    return {"seconds": out.seconds, "bytes_out": out.bytes_out, "rss_before_mib": before}


def _seed(args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    from loadtest.baselines import seed_zip

    before = _rss_mib()
    out = seed_zip(args.endpoint, args.bucket, keys, args.dest_bucket, args.dest_key)
    return {"seconds": out.seconds, "bytes_out": out.bytes_out, "rss_before_mib": before}


def _streamzip(args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    from loadtest.baselines import stream_zip_boto3, sync_client

    s3 = sync_client(args.endpoint)
    before = _rss_mib()
    out = stream_zip_boto3(s3, args.bucket, keys, (args.dest_bucket, args.dest_key))
    return {"seconds": out.seconds, "bytes_out": out.bytes_out, "rss_before_mib": before}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--contender", choices=["ours", "seed", "streamzip", "copy"], required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--dest-bucket", required=True)
    p.add_argument("--dest-key", required=True, help="archive key, or key prefix for copy")
    p.add_argument("--budget-mib", type=int, default=64)
    p.add_argument(
        "--option", action="append", default=[], help="ZipOptions override NAME=INT (ours only)"
    )
    args = p.parse_args(argv)
    keys = seed_keys(args.prefix, args.count)
    if args.contender == "ours":
        out = asyncio.run(_ours(args, keys))
    elif args.contender == "copy":
        out = asyncio.run(_copy(args, keys))
    elif args.contender == "streamzip":
        out = _streamzip(args, keys)
    else:
        out = _seed(args, keys)
    if args.contender == "ours":
        from service.process import skip_final_collection

        skip_final_collection()  # as ``zipjobs zip`` does before it exits
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mib"] = usage.ru_maxrss / 1024
    out["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
