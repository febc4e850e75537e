"""The long job run: one very large STORED job built across many time-limited attempts.

    python -m loadtest.long_job                      # 500 GB, 20,000 x 25 MB, 600 s attempts
    python -m loadtest.long_job --quick              # 2.5 GB smoke, 30 s attempts (< 2 min)
    python -m loadtest.long_job --total-gb 20 --tag calib

What it models (docs/resume.md, "The 500 GB run"): a job submitted through
``JobService.create_job`` (what ``POST /zip-jobs`` calls) for one prefix of
synthetic sources on the benchmark endpoint (S3 over plain HTTP; it serves
deterministic bytes, stores none, and verifies the uploaded archive: every
entry's CRC against its source, the central directory, S3's full-object
CRC-32), with the job table and queue on a moto server. Each attempt is a
new process, as a cold Lambda invocation is: it receives the job's SQS
message and runs it through ``lambda_adapter.sqs_batch.process_batch``,
whose ``seconds_left`` counts down from ``--attempt-seconds`` (started
when the process starts, message wait excluded); at the deadline the job is
released with its upload and checkpoint kept, and the message comes back a
second later. The harness starts the next attempt until the job is READY or
FAILED. An attempt the harness has to kill (past its limit plus a grace, or
stopped by SIGTERM) is just a shorter attempt: the next one resumes from
the last checkpoint.

Per attempt it records wall time, the archive bytes the checkpoint names at
start and end, the job's user-visible progress, and the process's peak RSS
(``os.wait4``'s ru_maxrss) against the memory model's ceiling for the budget
(service/memory.py). The judgement is ``loadtest/long_job_report.py``.
Results: ``loadtest/results/long_job[_<tag>].{json,md}``, rewritten after
every attempt so a run stopped midway still leaves its numbers.
"""

from __future__ import annotations

import time

START = time.monotonic()  # an attempt's clock starts before its imports (cold start)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from loadtest.long_job_report import (  # noqa: E402
    Attempt,
    Snapshot,
    judge,
    markdown,
    stalled,
    verification_problems,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtest" / "results"
PREFIX = "long/pdfs/"  # the job's prefix; entries are named relative to it
MIB = 1024 * 1024
FINAL = ("READY", "FAILED", "CANCELLED")


# -- the attempt: one process, one delivery ----------------------------------------------


def _force_part_size(part_mib: int) -> None:
    """Make the engine's layout use parts of at least ``part_mib`` MiB.

    Only for runs smaller than 500 GB that should hold the 500 GB layout's
    one-part-buffer condition (the engine picks ~54 MiB parts there); every
    attempt forces the same size, so the checkpoint's fingerprint matches.
    """
    import service.engine.pipeline as pipeline
    from service.engine.layout import part_size_for

    floor = part_mib * MIB

    def forced(archive_bytes: int, min_part_size: int = 8 * MIB) -> int:
        return part_size_for(archive_bytes, max(min_part_size, floor))

    pipeline.part_size_for = forced  # type: ignore[assignment]


async def _receive(svc: Any, wait_s: float) -> dict[str, Any] | None:
    """One message as Lambda's event source mapping hands it over, or None."""
    until = time.monotonic() + wait_s
    while time.monotonic() < until:
        resp = await svc.sqs.receive_message(
            QueueUrl=svc.settings.queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=int(max(1, min(20, until - time.monotonic()))),
            AttributeNames=["ApproximateReceiveCount"],
        )
        for m in resp.get("Messages", []):
            return {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
            }
    return None


async def run_attempt(limit_s: float, wait_s: float, part_mib: int) -> dict[str, Any]:
    """Receive the job's message and run it like one zipper invocation."""
    from lambda_adapter.runtime import settings_from_env
    from lambda_adapter.sqs_batch import process_batch
    from service.engine import Budget, MiB
    from service.jobs import JobService

    if part_mib:
        _force_part_size(part_mib)
    settings = settings_from_env()
    report: dict[str, Any] = {"pid": os.getpid()}
    async with JobService.open(settings) as svc:
        report["init_seconds"] = round(time.monotonic() - START, 2)
        waited = time.monotonic()
        record = await _receive(svc, wait_s)
        wait = time.monotonic() - waited
        report["wait_seconds"] = round(wait, 2)
        if record is None:
            report["outcome"] = "no message"
            return report
        report["receive_count"] = int(record["attributes"].get("ApproximateReceiveCount", "1"))
        # Lambda's clock does not run while the event source mapping waits for a message.
        deadline = START + wait + limit_s
        task = asyncio.create_task(
            process_batch(
                svc,
                Budget(settings.budget_mb * MiB),
                [record],
                owner=f"long-job:{os.getpid()}",
                seconds_left=lambda: deadline - time.monotonic(),
            )
        )
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        ran = time.monotonic()
        try:
            answer = await task
        except asyncio.CancelledError:
            report["outcome"] = "stopped by SIGTERM"
            report["run_seconds"] = round(time.monotonic() - ran, 2)
            return report
        report["run_seconds"] = round(time.monotonic() - ran, 2)
        if answer["batchItemFailures"]:
            report["outcome"] = "returned for a retry"
        else:  # the event source mapping deletes what the handler did not name
            await svc.sqs.delete_message(
                QueueUrl=settings.queue_url, ReceiptHandle=record["receiptHandle"]
            )
            report["outcome"] = "deleted"
    return report


def attempt_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    report = asyncio.run(run_attempt(args.seconds, args.wait_seconds, args.part_mib))
    report["seconds"] = round(time.monotonic() - START, 2)
    Path(args.out).write_text(json.dumps(report))
    return 0


# -- the harness ------------------------------------------------------------------------


def _http_json(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def _wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[Any]:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    """The stack of one run (endpoint, moto, resources, the job) and its attempts."""

    def __init__(self, args: argparse.Namespace, log_dir: Path) -> None:
        self.args = args
        self.log_dir = log_dir
        self.endpoint: subprocess.Popen[Any] | None = None
        self.moto: subprocess.Popen[Any] | None = None
        self.env: dict[str, str] = {}
        self.settings: Any = None
        self.job_id = ""
        self.dst: tuple[str, str] = ("", "")
        self.child: subprocess.Popen[Any] | None = None
        self.stopping = False

    # set-up

    def start(self) -> None:
        from loadtest.load_stack import clean_env

        base = clean_env() | {"PYTHONPATH": str(ROOT)}
        self.endpoint = subprocess.Popen(
            [sys.executable, "-m", "loadtest.bench_endpoint"],
            cwd=ROOT,
            env=base,
            stdout=subprocess.PIPE,
            stderr=(self.log_dir / "endpoint.log").open("ab"),
            text=True,
        )
        assert self.endpoint.stdout is not None
        line = self.endpoint.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"benchmark endpoint did not start: {line!r}")
        self.s3_url = f"http://127.0.0.1:{int(line.split()[1])}"
        port = _free_port()
        self.moto_url = f"http://127.0.0.1:{port}"
        self.moto = _start(
            [sys.executable, "-m", "service.local.moto_atomic", "-H", "127.0.0.1", "-p", str(port)],
            self.log_dir / "moto.log",
            base,
        )
        _wait_http(f"{self.moto_url}/moto-api/", self.moto)
        asyncio.run(self._provision(base))

    async def _provision(self, base: dict[str, str]) -> None:
        from service.aws import AwsSettings
        from service.local.stack import FAKE_KEY, StackNames, provision

        names = StackNames(
            f"long{os.getpid()}",
            max_receives=self.args.max_receives,
            visibility_seconds=int(self.args.attempt_seconds) + 60,
        )
        aws = AwsSettings(
            region="us-east-1",
            endpoint_url=self.moto_url,
            access_key_id=FAKE_KEY,
            secret_access_key=FAKE_KEY,
            service_endpoints=(("s3", self.s3_url),),
        )
        stack = await provision(aws, names)
        seeded = _http_json(
            f"{self.s3_url}/_bench/seed",
            "PUT",
            {
                "bucket": names.src_bucket,
                "prefix": PREFIX,
                "count": self.args.files,
                "size": self.args.file_bytes,
                "relative_names": True,
            },
        )
        assert seeded["keys"] == self.args.files, seeded
        overrides = {
            "ZIPJOBS_BUDGET_MB": str(self.args.budget_mb),
            "ZIPJOBS_WORKER_CONCURRENCY": "1",  # one job per process: it gets the whole budget
            "ZIPJOBS_LEASE_SECONDS": "30",
            "ZIPJOBS_MAX_KEYS": str(max(100_000, self.args.files)),
            # One job across time-limited attempts of one worker: the single
            # path, not job-level fan-out (on by default past 8 GiB).
            "ZIPJOBS_FANOUT_MAX_WORKERS": "1",
        }
        self.env = base | stack.env(**overrides)
        self.settings = stack.settings(**overrides)
        from service.jobs import JobService

        async with JobService.open(self.settings) as svc:
            body = {"bucket": names.src_bucket, "prefix": PREFIX, "name": "everything.zip"}
            submitted = await svc.create_job(
                json.dumps(body).encode(), content_type="application/json"
            )
            self.job_id = submitted.job_id
            record = await svc.get_record(self.job_id)
            self.dst = (record.dst_bucket, record.dst_key)

    def stop(self) -> None:
        _stop(self.child)
        _stop(self.moto)
        _stop(self.endpoint)

    # observation

    def snapshot(self) -> Snapshot:
        return asyncio.run(self._snapshot())

    async def _snapshot(self) -> Snapshot:
        from service.engine import Destination
        from service.engine.checkpoint import CheckpointStore
        from service.jobs import JobService

        async with JobService.open(self.settings) as svc:
            record = await svc.get_record(self.job_id)
            status = record.status.value
            if status == "READY":
                archive = int(record.archive_bytes or 0)
            else:
                cp = await CheckpointStore(svc.s3, Destination(*self.dst)).load()
                archive = cp.state.offset if cp is not None else 0
            return Snapshot(
                status,
                archive,
                record.progress.bytes_done,
                record.progress.files_done,
                record.attempts,
            )

    def verification(self) -> dict[str, Any] | None:
        try:
            got: dict[str, Any] = _http_json(f"{self.s3_url}/_bench/verify/{'/'.join(self.dst)}")
        except urllib.error.HTTPError:
            return None
        return got

    def endpoint_stats(self) -> dict[str, Any]:
        got: dict[str, Any] = _http_json(f"{self.s3_url}/_bench/stats")
        return got

    def leftovers(self) -> list[str]:
        """An upload or checkpoint still there once the job is final is an orphan."""
        problems = []
        stats = self.endpoint_stats()
        if stats["open_uploads"]:
            problems.append(f"{stats['open_uploads']} multipart upload(s) left open")
        bucket, key = self.dst
        try:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{self.s3_url}/{bucket}/{key}.zipjobs-checkpoint", method="HEAD"
                ),
                timeout=30,
            ).close()
            problems.append("the resume checkpoint was not deleted")
        except urllib.error.HTTPError:
            pass
        return problems

    # attempts

    def attempt(self, number: int) -> Attempt:
        args = self.args
        before = self.snapshot()
        out = self.log_dir / f"attempt-{number:03d}.json"
        cmd = [
            sys.executable, "-m", "loadtest.long_job", "--attempt",
            "--seconds", str(args.attempt_seconds), "--wait-seconds", str(args.wait_seconds),
            "--part-mib", str(args.part_mib), "--out", str(out),
        ]  # fmt: skip
        load_before = os.getloadavg()
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        t0 = time.monotonic()
        self.child = _start(cmd, self.log_dir / f"attempt-{number:03d}.log", self.env)
        samples: list[Snapshot] = []
        status, rusage = self._wait_child(
            self.child, args.attempt_seconds + args.wait_seconds, samples
        )
        wall = time.monotonic() - t0
        self.child = None
        child: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            child = json.loads(out.read_text())
        after = self.snapshot()
        return Attempt(
            number=number,
            started_at=started_at,
            limit_seconds=args.attempt_seconds,
            wall_seconds=round(wall, 2),
            exit=status,
            outcome=str(child.get("outcome", "killed" if status != "ok" else "no report")),
            receive_count=int(child.get("receive_count", 0)),
            before=before,
            after=after,
            peak_rss_mib=round(rusage.ru_maxrss / 1024, 1),  # Linux: KiB
            load_before=load_before,
            load_after=os.getloadavg(),
            child=child,
            samples=samples,
        )

    def _wait_child(
        self, proc: subprocess.Popen[Any], limit: float, samples: list[Snapshot]
    ) -> tuple[str, Any]:
        """Wait (os.wait4, for the child's own peak RSS), polling the job as a user
        would every ``--sample-seconds``; past the limit plus a grace the child is
        killed, as Lambda stops an invocation at its timeout."""
        hard = time.monotonic() + limit + self.args.grace_seconds
        next_sample = time.monotonic() + self.args.sample_seconds
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                code = proc.returncode
                return ("ok" if code == 0 else f"exit {code}" if code > 0 else f"signal {-code}"), (
                    rusage
                )
            if time.monotonic() > hard:
                proc.kill()
            if time.monotonic() > next_sample:
                with contextlib.suppress(Exception):  # a missed sample only thins the check
                    samples.append(self.snapshot())
                next_sample = time.monotonic() + self.args.sample_seconds
            time.sleep(0.2)


def _meta(args: argparse.Namespace, argv: list[str], log_dir: Path) -> dict[str, Any]:
    from service.memory import BUDGET_FACTOR, PER_FILE_BYTES, RUNTIME_MIB, process_ceiling_mib

    return {
        "command": " ".join(["python -m loadtest.long_job", *argv]),
        "files": args.files,
        "file_mb": args.file_mb,
        "source_bytes": args.files * args.file_bytes,
        "archive_gb": args.files * args.file_bytes / 1e9,
        "budget_mb": args.budget_mb,
        "attempt_seconds": args.attempt_seconds,
        "max_receives": args.max_receives,
        "forced_part_mib": args.part_mib or None,
        "part_size_mib": None,
        "parts": 0,
        "ceiling_mib": process_ceiling_mib(args.budget_mb, args.files),
        "ceiling_formula": (
            f"{RUNTIME_MIB} + {BUDGET_FACTOR} x {args.budget_mb} MiB"
            f" + {PER_FILE_BYTES} B x {args.files} files"
        ),
        "s3": "benchmark endpoint, plain HTTP on 127.0.0.1",
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "log_dir": str(log_dir),
    }


def _layout(meta: dict[str, Any], archive_bytes: int) -> None:
    from service.engine.layout import part_size_for

    floor = max(8, meta["forced_part_mib"] or 0) * MIB
    part = part_size_for(archive_bytes or meta["source_bytes"], floor)
    meta["part_size_mib"] = part // MIB
    meta["parts"] = math.ceil((archive_bytes or meta["source_bytes"]) / part)


def _write(
    path: Path, meta: dict[str, Any], attempts: list[Attempt], run: Run, final: bool
) -> dict[str, Any]:
    last = attempts[-1].after if attempts else None
    status = last.status if last else "PENDING"
    length = last.archive_bytes if last is not None and status == "READY" else None
    _layout(meta, length or 0)
    report = run.verification() if status == "READY" else None
    verification = verification_problems(report, entries=meta["files"], length=length)
    if not final and status not in FINAL:
        verification = ["the run was stopped before the job ended"]
    leftovers = run.leftovers() if status in FINAL else []
    verdict = judge(
        attempts,
        final_status=status,
        ceiling_mib=meta["ceiling_mib"],
        verification=[*verification, *leftovers],
    )
    wall = sum(a.wall_seconds for a in attempts)
    done = last.archive_bytes if last else 0
    result = {
        "meta": meta,
        "summary": {
            "ok": verdict.ok,
            "final_status": status,
            "attempts": len(attempts),
            "wall_seconds": round(wall, 1),
            "archive_bytes": done,
            "mb_s": round(done / 1e6 / wall, 2) if wall else 0.0,
            "peak_rss_mib": max((a.peak_rss_mib for a in attempts), default=0.0),
            "problems": verdict.problems,
            "findings": verdict.findings,
            "verification_problems": verification,
            "finished": final,
        },
        "attempts": [a.as_json() for a in attempts],
        "verification": report,
        "endpoint": run.endpoint_stats(),
        "load_after": os.getloadavg(),
    }
    path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    return result


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--total-gb", type=float, default=500.0, help="source bytes, GB (500)")
    p.add_argument("--file-mb", type=float, default=25.0, help="size of each source, MB (25)")
    p.add_argument("--attempt-seconds", type=float, default=600.0, help="per attempt (600)")
    p.add_argument("--budget-mb", type=int, default=64, help="ZIPJOBS_BUDGET_MB (64)")
    p.add_argument(
        "--part-mib", type=int, default=0, help="force parts of at least this size (0 = engine's)"
    )
    p.add_argument(
        "--max-receives", type=int, default=5, help="queue maxReceiveCount (5, Terraform's)"
    )
    p.add_argument("--max-attempts", type=int, default=100, help="the harness gives up after")
    p.add_argument("--wait-seconds", type=float, default=120.0, help="an attempt waits this long")
    p.add_argument("--grace-seconds", type=float, default=30.0, help="then it is killed")
    p.add_argument("--sample-seconds", type=float, default=10.0, help="poll the job this often")
    p.add_argument("--tag", default=None, help="results/long_job_<tag>.{json,md}")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--log-dir", default=None, help="attempt logs (default: a new temp dir)")
    p.add_argument("--quick", action="store_true", help="2.5 GB smoke, 30 s attempts (< 2 min)")
    # The attempt mode (one process per attempt):
    p.add_argument("--attempt", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.total_gb, args.file_mb, args.attempt_seconds = 2.5, 25.0, 30.0
        args.part_mib = args.part_mib or 53  # the 500 GB layout's part size
        args.tag = args.tag or "quick"
        args.sample_seconds = min(args.sample_seconds, 3.0)
    args.file_bytes = int(args.file_mb * 1_000_000)
    args.files = max(1, round(args.total_gb * 1e9 / args.file_bytes))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.attempt:
        return attempt_main(args)
    name = "long_job" + (f"_{args.tag}" if args.tag else "")
    path = Path(args.results_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="long-job-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    meta = _meta(args, argv, log_dir)
    run = Run(args, log_dir)

    def stop(signum: int, _frame: Any) -> None:
        run.stopping = True
        if run.child is not None and run.child.poll() is None:
            run.child.send_signal(signal.SIGTERM)  # the attempt ends as a shorter attempt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    attempts: list[Attempt] = []
    result: dict[str, Any] = {}
    print(f"long job: {args.files} x {args.file_mb:g} MB, logs in {log_dir}", flush=True)
    try:
        run.start()
        print(f"job {run.job_id} submitted; s3 {run.s3_url}, moto {run.moto_url}", flush=True)
        while len(attempts) < args.max_attempts and not run.stopping:
            a = run.attempt(len(attempts) + 1)
            attempts.append(a)
            print(json.dumps(a.as_json() | {"child": None}), flush=True)
            done = a.after.status in FINAL
            result = _write(path, meta, attempts, run, final=done)
            if done or stalled(attempts, 3):
                break
        result = _write(path, meta, attempts, run, final=not run.stopping)
    finally:
        run.stop()
    summary = result.get("summary", {})
    print(json.dumps(summary), flush=True)
    print(f"results: {path}.json / .md", flush=True)
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
