"""Fan-out benchmark: time to a complete archive with 1, 2, 4 and 8 worker processes.

    python -m loadtest.bench_fanout              # 32 GiB, 1/2/4/8 workers (long)
    python -m loadtest.bench_fanout --quick      # 256 MiB, 1/2/4 workers, < 60 s

What it models: the job-level fan-out (docs/resume.md, "Fan-out"), where
each range of parts is built by its own Lambda. Each worker here is its own
process behind its own ``loadtest.s3_link_proxy``, whose ``--total-mbps``
caps the worker's whole network (every connection together, each direction)
the way one Lambda's network interface does; the link's 10 ms one-way delay
and per-connection cap stay as in the engine benchmark. So the workers'
links, not this machine's cores, are meant to be the limit: a run whose
time does not fall with more workers is CPU-bound here and says nothing
about the design (the chart shows the ideal ``t1 / N`` next to it).

Per run: the driver plans the archive and creates the upload (directly on
the endpoint, timed), starts N ``--worker`` processes (each plans again, as a
Lambda would, and builds its range with ``fanout_build.build_range``, then
writes its ``RangeResult`` to a file), and when all are done runs the
finisher through worker 1's link. The endpoint then verifies the archive
(entry CRCs against the sources, the central directory, the full-object
CRC-32 S3 would check). Sources are the benchmark endpoint's synthetic
objects. Writes ``loadtest/results/bench_fanout[_quick].json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.bench_endpoint.store import seed_keys
from loadtest.bench_engine import ROOT, Service, _call
from service.units import MiB

RESULTS = Path(__file__).resolve().parent / "results"
SRC_BUCKET = "fanout-src"
DST_BUCKET = "fanout-out"
PREFIX = "src/"


def _options(budget_mib: int) -> Any:
    from service.engine import ZipOptions

    return ZipOptions(budget_bytes=budget_mib * MiB)


async def _job(s3: Any, dest_key: str, upload_id: str, budget_mib: int) -> Any:
    """The plan every process derives alike (as a Lambda would from the job record)."""
    from service.engine import Destination
    from service.engine.fanout_build import RangeJob
    from service.engine.layout import part_size_for
    from service.engine.planner import list_prefix, make_plan
    from service.engine.stored_zip import StoredLayout

    options = _options(budget_mib)
    plan = await make_plan(s3, await list_prefix(s3, SRC_BUCKET, PREFIX))
    layout = StoredLayout(plan.entries)
    part_size = part_size_for(layout.length, options.min_part_size)
    dest = Destination(DST_BUCKET, dest_key)
    return RangeJob(s3, plan.entries, layout, dest, upload_id, part_size, options)


def _client(endpoint: str) -> Any:
    from service.aws import AwsSettings, aws_client

    settings = AwsSettings(endpoint_url=endpoint, access_key_id="bench", secret_access_key="bench")
    return aws_client("s3", settings, max_pool_connections=48)


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    """One range build; the result goes to ``--out`` (stored next to the checkpoint on AWS)."""
    from service.engine.budget import Budget
    from service.engine.fanout import blind_state, deferred_parts, encode, range_span, split_parts
    from service.engine.fanout_build import build_range, worker_shares

    started = time.monotonic()
    async with _client(args.endpoint) as s3:
        job = await _job(s3, args.dest_key, args.upload_id, args.budget_mib)
        parts = math.ceil(job.layout.length / job.part_size)
        first, last = split_parts(parts, args.workers)[args.index]
        begin = range_span(first, last, job.part_size, job.layout.length)[0]
        shares = worker_shares(job.options, job.part_size, 1)  # a Lambda's own budget
        async with Budget(job.options.budget_bytes).lease(shares.total) as lease:
            result = await build_range(
                job,
                first,
                last,
                blind_state(job.layout, begin),
                drop=frozenset(deferred_parts(job.layout, job.part_size, first, last)),
                lease=lease,
                shares=shares,
                read_concurrency=job.options.read_concurrency,
                on_step=lambda _b, _e: None,
            )
    await asyncio.to_thread(Path(args.out).write_bytes, encode(result))
    return {
        "seconds": time.monotonic() - started,
        "parts": [first, last],
        "deferred": [d.number for d in result.deferred],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def _create(endpoint: str, dest_key: str, budget_mib: int) -> tuple[str, int]:
    from service.engine.checkpoint import fingerprint
    from service.engine.resume import FINGERPRINT_METADATA
    from service.engine.uploader import create_upload

    async with _client(endpoint) as s3:
        job = await _job(s3, dest_key, "", budget_mib)
        fp = fingerprint(job.entries, job.part_size, job.layout.length)
        upload_id = await create_upload(
            s3, job.destination, job.options.content_type, {FINGERPRINT_METADATA: fp}
        )
        return upload_id, job.layout.length


async def _finish(
    endpoint: str, dest_key: str, upload_id: str, files: list[Path], budget_mib: int
) -> int:
    from service.engine.budget import Budget
    from service.engine.fanout import decode
    from service.engine.fanout_build import finish, worker_shares

    async with _client(endpoint) as s3:
        job = await _job(s3, dest_key, upload_id, budget_mib)
        results = [decode(f.read_bytes()) for f in files]
        shares = worker_shares(job.options, job.part_size, 1)
        upload, _ = await finish(
            job, results, budget=Budget(job.options.budget_bytes), shares=shares
        )
        return upload.bytes


async def _abort(endpoint: str, dest_key: str, upload_id: str) -> None:
    async with _client(endpoint) as s3:
        await s3.abort_multipart_upload(Bucket=DST_BUCKET, Key=dest_key, UploadId=upload_id)


def one_run(
    endpoint: Service, links: list[Service], workers: int, budget_mib: int, tmp: Path
) -> dict[str, Any]:
    dest_key = f"fanout-{workers}-{int(time.time() * 1000)}.zip"
    started = time.monotonic()
    upload_id, length = asyncio.run(_create(endpoint.url, dest_key, budget_mib))
    planned = time.monotonic() - started
    outs = [tmp / f"{dest_key}-{k}.result" for k in range(workers)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for k in range(workers):
        cmd = [
            sys.executable, "-m", "loadtest.bench_fanout", "--worker", "--endpoint", links[k].url,
            "--dest-key", dest_key, "--upload-id", upload_id, "--workers", str(workers),
            "--index", str(k), "--out", str(outs[k]), "--budget-mib", str(budget_mib),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))
    reports = []
    failed = []
    for k, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=7200)
        if proc.returncode != 0:
            failed.append(k)
        else:
            reports.append(json.loads(out.strip().splitlines()[-1]))
    workers_done = time.monotonic() - started
    if failed:
        asyncio.run(_abort(endpoint.url, dest_key, upload_id))
        return {"workers": workers, "error": f"workers {failed} failed", "verified": False}
    written = asyncio.run(_finish(links[0].url, dest_key, upload_id, outs, budget_mib))
    seconds = time.monotonic() - started
    check = _call(f"{endpoint.url}/_bench/verify/{DST_BUCKET}/{dest_key}")
    verified = (
        bool(check.get("zip_ok"))
        and not check.get("errors")
        and str(check.get("checksum") or "").endswith("verified")
        and check.get("length") == written == length
    )
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "plan_and_create_seconds": round(planned, 2),
        "workers_done_seconds": round(workers_done, 2),
        "finisher_seconds": round(seconds - workers_done, 2),
        "archive_bytes": written,
        "mb_s": round(written / 1e6 / seconds, 1),
        "worker_reports": reports,
        "verified": verified,
        "checksum": check.get("checksum"),
        "load_after": os.getloadavg(),
    }


def chart(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in runs if r.get("verified")]
    if not ok:
        return
    xs = [r["workers"] for r in ok]
    ys = [r["seconds"] for r in ok]
    base = next((r["seconds"] * r["workers"] for r in ok if r["workers"] == 1), ys[0] * xs[0])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, ys, "o-", label="measured: plan to completed upload")
    # The finisher's share includes the endpoint feeding its verifier the parts
    # held behind each deferred part (work S3 does not do): shown apart.
    built = [r["workers_done_seconds"] for r in ok]
    ax.plot(xs, built, "s:", color="tab:green", label="measured: every range built")
    ax.plot(xs, [base / x for x in xs], "--", color="grey", label="ideal: t(1) / N")
    for x, y in zip(xs, ys, strict=True):
        ax.annotate(f"{y:.0f} s", (x, y), textcoords="offset points", xytext=(4, 6))
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("workers (processes, each behind its own capped link)")
    ax.set_ylabel("seconds to a complete archive")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="256 MiB, 1/2/4 workers (< 60 s)")
    p.add_argument("--workers-list", default=None, help="comma-separated (default 1,2,4,8)")
    p.add_argument("--size-gib", type=float, default=32.0, help="archive size (default 32)")
    p.add_argument("--file-mib", type=int, default=256, help="size of each source (default 256)")
    p.add_argument("--worker-mbps", type=float, default=80.0, help="each worker's link, MB/s")
    p.add_argument("--budget-mib", type=int, default=64, help="each worker's budget (64)")
    # The worker mode (one range, in its own process):
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--dest-key", help=argparse.SUPPRESS)
    p.add_argument("--upload-id", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args))))
        return 0
    if args.quick:
        size, file_mib, counts, mbps = 256 * MiB, 16, [1, 2, 4], 40.0
    else:
        size, file_mib, mbps = int(args.size_gib * 1024) * MiB, args.file_mib, args.worker_mbps
        counts = [int(x) for x in (args.workers_list or "1,2,4,8").split(",")]
    count = max(1, size // (file_mib * MiB))
    meta = {
        "command": " ".join(["python -m loadtest.bench_fanout", *(argv or sys.argv[1:])]),
        "sources": {"count": count, "size_mib": file_mib},
        "link_per_worker": {"total_mb_s": mbps, "per_connection_mb_s": 80, "delay_ms": 10},
        "budget_mib_per_worker": args.budget_mib,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    print(f"fan-out bench: {count} x {file_mib} MiB, link {mbps} MB/s per worker", flush=True)
    endpoint = Service("loadtest.bench_endpoint")
    links: list[Service] = []
    runs = []
    try:
        _call(f"{endpoint.url}/_bench/seed", "PUT", {"bucket": DST_BUCKET, "count": 0, "size": 0})
        _call(
            f"{endpoint.url}/_bench/seed",
            "PUT",
            {"bucket": SRC_BUCKET, "prefix": PREFIX, "count": count, "size": file_mib * MiB},
        )
        assert len(seed_keys(PREFIX, count)) == count
        for _ in range(max(counts)):
            links.append(
                Service(
                    "loadtest.s3_link_proxy",
                    "--upstream",
                    f"127.0.0.1:{endpoint.port}",
                    "--total-mbps",
                    str(mbps),
                )
            )
        with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
            for workers in counts:
                run = one_run(endpoint, links, workers, args.budget_mib, Path(tmp))
                runs.append(run)
                print(
                    json.dumps({k: v for k, v in run.items() if k != "worker_reports"}), flush=True
                )
    finally:
        for link in links:
            link.stop()
        endpoint.stop()
    name = "bench_fanout_quick" if args.quick else "bench_fanout"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    title = f"{count} x {file_mib} MiB STORED, each worker's link capped at {mbps:g} MB/s"
    chart(runs, RESULTS / f"{name}.png", title)
    return 0 if all(r.get("verified") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
