"""What must hold after any chaos run, and the report that says whether it did.

1. Every job in the table is READY, FAILED or CANCELLED within the bound
   after it was created (accepted or not: a client that lost its answer
   still made a job).
2. Every READY archive opens in the five readers and holds exactly its
   sources' bytes (tests/support/archive_check.py).
3. A FAILED job says why (a code and a message).
4. No multipart upload is left in the archive bucket.
5. No object is left under a FAILED or CANCELLED job's archive folder, nor
   under any folder that is not a READY job's.
6. Jobs that cannot succeed end FAILED: a missing key (and the oversized
   job, whose FAILED record must fit in DynamoDB) with MissingSources (or
   RetriesExhausted when every attempt died with a killed worker), the
   job that kills every worker with RetriesExhausted (or an equivalent
   "gave up" code), never READY.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.aws import aws_client
from service.jobs.models import JobRecord, JobStatus
from service.local.stack import local_aws
from tests.support.archive_check import ArchiveCheckError, verify_archive_bytes

if TYPE_CHECKING:
    from tests.chaos.harness import RunResult


def _spec_index(record: JobRecord) -> int | None:
    name = record.request.name  # chaos-NNN.zip
    try:
        return int(name.removeprefix("chaos-").removesuffix(".zip"))
    except ValueError:
        return None


def _seconds_to_final(record: JobRecord) -> float | None:
    if not record.status.final:
        return None
    return (record.updated_at - record.created_at).total_seconds()


async def _check_archive(s3: Any, record: JobRecord, result: RunResult) -> str | None:
    index = _spec_index(record)
    if index is None:
        return f"job {record.job_id}: READY archive of an unknown request {record.request.name}"
    expected = result.submissions[index].spec.expected
    try:
        obj = await s3.get_object(Bucket=record.dst_bucket, Key=record.dst_key)
        data = await obj["Body"].read()
    except Exception as err:
        return f"job {record.job_id}: READY but its archive cannot be read: {err!r}"
    try:
        with tempfile.TemporaryDirectory(prefix="chaos-check-") as tmp:
            await asyncio.to_thread(verify_archive_bytes, data, dict(expected), tmp_dir=tmp)
    except ArchiveCheckError as err:
        return f"job {record.job_id} ({result.submissions[index].spec.kind}): {err}"
    return None


async def judge(result: RunResult) -> dict[str, Any]:
    """The run's report; ``violations`` empty means every invariant held."""
    config, stack = result.config, result.stack
    violations: list[str] = []
    by_status = Counter(r.status.value for r in result.records)
    times = {r.job_id: _seconds_to_final(r) for r in result.records}
    for r in result.records:
        took = times[r.job_id]
        if took is None:
            violations.append(
                f"job {r.job_id} ({r.request.name}) still {r.status.value} after the bound "
                f"({config.bound_s:.0f} s), attempts {r.attempts}"
            )
        elif took > config.bound_s:
            violations.append(f"job {r.job_id} became final after {took:.1f} s (> bound)")
        if r.status is JobStatus.FAILED and (r.error is None or not r.error.message):
            violations.append(f"job {r.job_id} FAILED without saying why")
    for r in result.records:
        violations += _expected_end(r, _kind(result, r))
    stored = {r.job_id for r in result.records}
    for sub in result.submissions:
        if sub.accepted and sub.job_id not in stored:
            violations.append(f"accepted job {sub.job_id} is not in the table")

    async with aws_client("s3", local_aws(stack.endpoint_url)) as s3:
        for r in result.records:
            if r.status is JobStatus.READY and (problem := await _check_archive(s3, r, result)):
                violations.append(problem)
        uploads = (await s3.list_multipart_uploads(Bucket=stack.names.dst_bucket)).get(
            "Uploads", []
        )
        for u in uploads:
            violations.append(f"multipart upload left: {u['Key']} ({u['UploadId'][:12]}...)")
        ready_keys = {r.dst_key for r in result.records if r.status is JobStatus.READY}
        listed = await s3.list_objects_v2(Bucket=stack.names.dst_bucket, Prefix="archives/")
        stray = [o["Key"] for o in listed.get("Contents", []) if o["Key"] not in ready_keys]
        for key in stray:
            violations.append(f"archive left for a job that is not READY: {key}")

    finals = [t for t in times.values() if t is not None]
    return {
        "seed": config.seed,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "jobs_submitted": len(result.submissions),
        "jobs_accepted": sum(s.accepted for s in result.submissions),
        "jobs_in_table": len(result.records),
        "status": dict(sorted(by_status.items())),
        "faults_injected": dict(sorted(result.injected.items())),
        "process_restarts": result.restarts,
        "longest_s_to_final": round(max(finals), 1) if finals else None,
        "orphans": len(uploads) + len(stray),
        "violations": violations,
        "seconds": round(result.seconds, 1),
        "jobs": [
            {
                "job_id": r.job_id,
                "name": r.request.name,
                "kind": _kind(result, r),
                "status": r.status.value,
                "attempts": r.attempts,
                "s_to_final": None if times[r.job_id] is None else round(times[r.job_id] or 0, 1),
                "error": None if r.error is None else r.error.code,
                "message": None if r.error is None else r.error.message[:300],
            }
            for r in sorted(result.records, key=lambda x: x.request.name)
        ],
        "logs": str(result.logs),
    }


def _expected_end(record: JobRecord, kind: str) -> list[str]:
    """Kinds that cannot produce an archive must end FAILED (or CANCELLED), saying why."""
    if not record.status.final or kind not in ("missing", "oversized", "poison"):
        return []
    if record.status is JobStatus.READY:
        return [f"job {record.job_id} ({kind}) is READY; it cannot be"]
    if record.status is JobStatus.FAILED and kind != "poison":
        code = record.error.code if record.error else None
        if code == "RetriesExhausted" and _every_attempt_killed(record):
            # Two jobs run at a time per worker, so a job that shares a worker
            # with the worker-killing job dies with it; killed in every attempt
            # it never got to report MissingSources, and "gave up" is the truth.
            return []
        if code != "MissingSources":
            return [f"job {record.job_id} ({kind}) FAILED with {code}, not MissingSources"]
    return []


def _every_attempt_killed(record: JobRecord) -> bool:
    """Did the job's last attempt die without reporting an error (the runner's wording)?"""
    message = record.error.message if record.error else ""
    return "last error: none recorded (the attempt's process stopped" in message


def _kind(result: RunResult, record: JobRecord) -> str:
    index = _spec_index(record)
    return "?" if index is None else result.submissions[index].spec.kind


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Chaos run, seed {report['seed']}",
        "",
        f"- jobs: {report['jobs_submitted']} submitted, {report['jobs_accepted']} accepted (202), "
        f"{report['jobs_in_table']} in the table",
        f"- final states: {report['status']}",
        f"- faults injected: {report['faults_injected']}",
        f"- process restarts: {report['process_restarts']}",
        f"- longest time to final: {report['longest_s_to_final']} s "
        f"(bound {report['config']['bound_s']} s)",
        f"- orphans (uploads + archives of non-READY jobs): {report['orphans']}",
        f"- run took {report['seconds']} s",
        "",
        "## Violations" if report["violations"] else "## Every invariant held",
        "",
        *(f"- {v}" for v in report["violations"]),
        "",
        "## Jobs",
        "",
        "| name | job | kind | status | attempts | s to final | error |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {j['name']} | {j['job_id'][:8]} | {j['kind']} | {j['status']} | {j['attempts']} | "
            f"{j['s_to_final']} | {j['error'] or ''} |"
            for j in report["jobs"]
        ),
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], directory: Path) -> Path:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"chaos-seed{report['seed']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    path = stem.with_suffix(".md")
    path.write_text(markdown(report))
    return path
