"""The long job run's judgement: per-attempt records, the checks, the report.

Pure logic (no I/O), so the checks that make a run fail are unit-tested on
their own (tests/unit/test_long_job_report.py): progress that goes
backwards, an attempt over the memory model's ceiling, an archive the
endpoint did not verify, a job that did not end READY.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MB = 1_000_000


@dataclass(slots=True)
class Snapshot:
    """Where the job stood between two attempts.

    ``archive_bytes``: archive bytes safely uploaded, as the resume
    checkpoint names them (its offset), or the whole archive once READY.
    ``progress_bytes``/``files_done``: what the job record shows a user.
    """

    status: str
    archive_bytes: int
    progress_bytes: int
    files_done: int
    attempts: int = 0


@dataclass(slots=True)
class Attempt:
    """One attempt: a fresh process given one SQS delivery and a time limit."""

    number: int
    started_at: str
    limit_seconds: float
    wall_seconds: float
    exit: str  # "ok", "exit 3", "signal 9"
    outcome: str  # what the attempt reported: "released", "done", "no message", ...
    receive_count: int
    before: Snapshot
    after: Snapshot
    peak_rss_mib: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    child: dict[str, Any] = field(default_factory=dict)
    # The job as a user polling it saw it while the attempt ran, in order.
    samples: list[Snapshot] = field(default_factory=list)

    @property
    def archive_bytes_done(self) -> int:
        return self.after.archive_bytes - self.before.archive_bytes

    @property
    def mb_s(self) -> float:
        return self.archive_bytes_done / MB / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["samples"] = len(self.samples)  # the checks used them; the numbers stay short
        out["archive_bytes_done"] = self.archive_bytes_done
        out["mb_s"] = round(self.mb_s, 2)
        return out


# What a resume keeps: the archive bytes its checkpoint names.
ARCHIVE = ("archive_bytes",)
# What a user polling the job sees.
USER = ("progress_bytes", "files_done")


def progress_problems(
    attempts: Sequence[Attempt], fields: Sequence[str] = ARCHIVE + USER
) -> list[str]:
    """Every place where a progress measure went backwards: within an attempt or
    between two, across every snapshot in order (each attempt's start, the
    samples taken while it ran, its end).
    """
    problems = []
    previous: Snapshot | None = None
    for a in attempts:
        chain = [a.before, *a.samples, a.after]
        pairs = [(f"attempt {a.number}", old, new) for old, new in itertools.pairwise(chain)]
        if previous is not None:
            pairs.insert(0, (f"between attempts {a.number - 1} and {a.number}", previous, a.before))
        for where, old, new in pairs:
            for what in fields:
                was, now = getattr(old, what), getattr(new, what)
                if now < was:
                    problems.append(f"{where}: {what} went backwards, {was} -> {now}")
        previous = a.after
    return problems


def rss_problems(attempts: Sequence[Attempt], ceiling_mib: float) -> list[str]:
    """Attempts whose peak RSS passed the memory model's ceiling for the budget."""
    return [
        f"attempt {a.number}: peak RSS {a.peak_rss_mib:.1f} MiB > ceiling {ceiling_mib:.0f} MiB"
        for a in attempts
        if a.peak_rss_mib > ceiling_mib
    ]


def verification_problems(
    report: dict[str, Any] | None, *, entries: int, length: int | None
) -> list[str]:
    """What the endpoint's verification of the finished archive says is wrong."""
    if report is None:
        return ["no archive to verify"]
    problems = [str(e) for e in report.get("errors") or []]
    if report.get("zip_ok") is not True:
        problems.append("the endpoint's ZIP check did not pass")
    if report.get("entries") != entries:
        problems.append(f"{report.get('entries')} entries, expected {entries}")
    if report.get("unknown_entries"):
        problems.append(f"{report['unknown_entries']} entries match no source")
    if not str(report.get("checksum") or "").endswith("verified"):
        problems.append(f"full-object CRC-32 not verified ({report.get('checksum')})")
    if length is not None and report.get("length") != length:
        problems.append(f"archive is {report.get('length')} bytes, the job says {length}")
    return problems


def stalled(attempts: Sequence[Attempt], window: int) -> bool:
    """The last ``window`` attempts all ended without the job moving forward."""
    tail = attempts[-window:]
    return len(tail) == window and all(
        a.after.archive_bytes <= a.before.archive_bytes and a.after.status != "READY" for a in tail
    )


@dataclass(slots=True)
class Verdict:
    """``ok``: the job ended READY, the archive bytes kept never fell, every
    attempt stayed under the memory ceiling, the endpoint verified the archive.
    ``findings``: the user-visible progress falling, reported on its own: a
    resume starts from its last checkpoint, which may lie up to a part buffer
    and a read window behind what the stopped attempt had read."""

    ok: bool
    problems: list[str]
    findings: list[str] = field(default_factory=list)


def judge(
    attempts: Sequence[Attempt],
    *,
    final_status: str,
    ceiling_mib: float,
    verification: list[str],
) -> Verdict:
    problems = [
        *progress_problems(attempts, ARCHIVE),
        *rss_problems(attempts, ceiling_mib),
        *verification,
    ]
    if final_status != "READY":
        problems.insert(0, f"the job ended {final_status}, not READY")
    return Verdict(not problems, problems, progress_problems(attempts, USER))


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The human half of the results (the JSON holds everything)."""
    meta, summary = result["meta"], result["summary"]
    lines = [
        f"# Long job run: {meta['archive_gb']:.1f} GB in time-limited attempts",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- Sources: {meta['files']:,} x {meta['file_mb']:g} MB synthetic objects on the "
        f"benchmark endpoint (plain HTTP), one prefix job; DynamoDB and SQS on a moto server.",
        f"- Budget {meta['budget_mb']} MiB, one job per process; part size "
        f"{meta['part_size_mib']} MiB ({meta['parts']:,} parts); memory model ceiling "
        f"{meta['ceiling_mib']} MiB (service/memory.py: {meta.get('ceiling_formula', '')}).",
        f"- Each attempt: a new process that receives the SQS message and runs it through "
        f"`lambda_adapter.sqs_batch.process_batch` with `seconds_left` counting down from "
        f"{meta['attempt_seconds']:g} s (queue maxReceiveCount {meta['max_receives']}).",
        f"- Machine: {meta['cpus']} cores, shared; load average before: "
        f"{', '.join(f'{x:.2f}' for x in meta['load_before'])}.",
        "",
        f"**Result: {'PASS' if summary['ok'] else 'FAIL'}**: job {summary['final_status']} "
        f"after {summary['attempts']} attempts, {summary['wall_seconds']:.0f} s in all, "
        f"{summary['mb_s']:.1f} MB/s overall; peak RSS {summary['peak_rss_mib']:.1f} MiB "
        f"(ceiling {meta['ceiling_mib']} MiB); endpoint verification: "
        f"{'passed' if not summary['verification_problems'] else 'FAILED'}.",
        "",
    ]
    if summary["problems"]:
        lines += ["Problems:", "", *[f"- {p}" for p in summary["problems"]], ""]
    findings = summary.get("findings") or []
    lines += [
        "User-visible progress (job record, polled every few seconds): "
        + ("never went backwards." if not findings else "went backwards:"),
        "",
        *[f"- {f}" for f in findings],
        *([""] if findings else []),
    ]
    lines += [
        "| attempt | wall s | outcome | archive GB start -> end | MB/s | peak RSS MiB "
        "| load 1 min |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in result["attempts"]:
        lines.append(
            f"| {a['number']} | {a['wall_seconds']:.0f} | {a['outcome']} ({a['exit']}) | "
            f"{_gb(a['before']['archive_bytes'])} -> {_gb(a['after']['archive_bytes'])} | "
            f"{a['mb_s']:.1f} | {a['peak_rss_mib']:.1f} | "
            f"{a['load_before'][0]:.1f} -> {a['load_after'][0]:.1f} |"
        )
    v = result.get("verification") or {}
    lines += [
        "",
        f"Endpoint verification: zip_ok={v.get('zip_ok')}, entries={v.get('entries')}, "
        f"length={v.get('length')}, checksum={v.get('checksum')}, errors={v.get('errors')}.",
        "",
    ]
    return "\n".join(lines)
