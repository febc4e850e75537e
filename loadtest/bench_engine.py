"""Engine benchmark: ours vs the seed design vs stream-zip + boto3 vs a plain parallel copy.

    python -m loadtest.bench_engine                      # the full run, 3 rounds (~15-25 min)
    python -m loadtest.bench_engine --quick              # smoke run, < 90 s
    python -m loadtest.bench_engine --workloads large --schemes https --runs 5

Processes: the benchmark endpoint (``loadtest.bench_endpoint``, HTTP and
HTTPS with a CA generated for the run) and the S3-like link
(``loadtest.s3_link_proxy``, one per scheme; TLS passes through it end to
end) each run in their own process, so their CPU and memory never count
against a contender. Every contender run is a fresh
``loadtest.run_contender`` process; its wall time is measured from spawn to
exit (interpreter start-up and imports included) and its peak RSS and CPU
come from the OS (``wait4`` rusage of that child). Contenders run
interleaved: each round runs every (workload, scheme) group with the
contenders in a new shuffled order, and the machine's load average is
recorded before every run. Every archive is verified by the endpoint (entry
CRCs against the sources, central directory, ZIP64 records, entry order,
S3 checksums); a run whose output fails verification is an error, not a
number.

Writes ``loadtest/results/bench_engine.json``, ``bench_engine.png``,
``bench_engine.md`` and refreshes the table in ``loadtest/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.bench_endpoint.store import seed_keys
from loadtest.bench_endpoint.zipcheck import names_digest
from service.units import MiB

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = HERE / "README.md"
TABLE_START = "<!-- BENCH TABLE START -->"
TABLE_END = "<!-- BENCH TABLE END -->"
SRC_BUCKET = "bench-src"
DST_BUCKET = "bench-out"
CHILD_TIMEOUT_S = 1800


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    count: int
    size: int
    contenders: tuple[str, ...] = ("ours", "seed", "streamzip", "copy")
    links: tuple[str, ...] = ("off", "on")

    @property
    def prefix(self) -> str:
        return f"{self.name}/"

    @property
    def source_bytes(self) -> int:
        return self.count * self.size


FULL = {
    "small": Workload("small", 2000, 200_000),
    "large": Workload("large", 8, 256 * MiB),
    # A 4 GiB archive with a 64 MiB budget: the peak-RSS target (ours only).
    "rss4g": Workload("rss4g", 16, 256 * MiB, contenders=("ours",), links=("off",)),
}
QUICK = {
    "small": Workload("small", 300, 200_000),
    "large": Workload("large", 2, 48 * MiB),
    "rss4g": Workload("rss4g", 2, 96 * MiB, contenders=("ours",), links=("off",)),
}

TARGETS = {
    "large_vs_copy": 0.95,  # ours throughput / plain copy, large objects over the link
    "small_link_vs_seed": 20.0,  # ours speedup over the seed, small objects over the link
    "cpu_per_gb_vs_copy": 1.2,  # ours CPU s per GB / the copy's, large objects
    "rss_extra_mib": 100,  # peak RSS <= budget + this, 4 GiB archive
}
# The reference designs are slow (a minute per run over the link); by default
# they run over HTTPS only, the headline scheme, and ours and the copy over both.
SLOW = ("seed", "streamzip")


@dataclass(slots=True)
class RunRecord:
    workload: str
    link: str
    contender: str
    run: int
    scheme: str = "http"
    order: int = 0  # position of this contender within its round's group
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0  # process wall time, spawn to exit
    job_seconds: float = 0.0  # the job alone, timed inside the child
    source_mb_s: float = 0.0
    bytes_out: int = 0
    peak_rss_mib: float = 0.0
    rss_before_mib: float = 0.0
    cpu_seconds: float = 0.0
    endpoint_cpu_seconds: float = 0.0
    verified: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- helper processes -----------------------------------------------------------------


class Service:
    """A ``python -m`` helper that prints ``PORT <n>`` (and maybe ``TLSPORT <n>``)."""

    def __init__(self, module: str, *args: str, tls: bool = False) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"{module} did not start (got {line!r})")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_port = 0
        if tls:
            line = self.proc.stdout.readline()
            if not line.startswith("TLSPORT "):
                self.stop()
                raise RuntimeError(f"{module} did not serve TLS (got {line!r})")
            self.tls_port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


# -- one run ----------------------------------------------------------------------------


def make_ca(directory: Path) -> tuple[Path, Path]:
    """A CA for this run and a 127.0.0.1 certificate it signed: (ca.pem, server.pem).

    ``server.pem`` holds the key and the chain. Clients trust ``ca.pem``
    through ``AWS_CA_BUNDLE``, as they would a private CA.
    """
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, server_file = directory / "ca.pem", directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(server_file))
    return ca_file, server_file


def run_child(
    contender: str,
    wl: Workload,
    endpoint_url: str,
    dest: str,
    budget_mib: int,
    options: tuple[str, ...] = (),
    env_extra: dict[str, str] | None = None,
) -> tuple[dict[str, Any], float, float, float]:
    """(child's JSON, wall seconds spawn to exit, peak RSS MiB and CPU seconds from wait4)."""
    cmd = [
        sys.executable,
        "-m",
        "loadtest.run_contender",
        "--contender",
        contender,
        "--endpoint",
        endpoint_url,
        "--bucket",
        SRC_BUCKET,
        "--prefix",
        wl.prefix,
        "--count",
        str(wl.count),
        "--dest-bucket",
        DST_BUCKET,
        "--dest-key",
        dest,
        "--budget-mib",
        str(budget_mib),
    ]
    if contender == "ours":
        for option in options:
            cmd += ["--option", option]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    # Output goes to files: a pipe could fill and stall the child while we wait.
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, cwd=ROOT, env=env, text=True)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        # wait4 gives the child's own rusage (peak RSS from the kernel).
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - started
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{contender} timed out after {CHILD_TIMEOUT_S} s")
            time.sleep(0.01)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        tail = err.strip().splitlines()[-3:]
        raise RuntimeError(f"{contender} exited {code}: {' | '.join(tail)}")
    return (
        json.loads(out.strip().splitlines()[-1]),
        wall,
        usage.ru_maxrss / 1024,
        (usage.ru_utime + usage.ru_stime),
    )


def verify(
    endpoint: str, contender: str, wl: Workload, dest: str, bytes_out: int
) -> dict[str, Any]:
    """Raise if the output is not exactly the sources (archive or copies)."""
    if contender == "ours":
        # Ours sends a CRC-32 per part and the archive's; the endpoint checked them.
        res_obj = _call(f"{endpoint}/_bench/verify/{DST_BUCKET}/{dest}")
        if not str(res_obj.get("checksum") or "").endswith("verified"):
            raise RuntimeError(f"no S3 checksum was verified: {res_obj.get('checksum')}")
    if contender == "copy":
        res = _call(
            f"{endpoint}/_bench/check_copies",
            "POST",
            {
                "src_bucket": SRC_BUCKET,
                "src_prefix": wl.prefix,
                "dst_bucket": DST_BUCKET,
                "dst_prefix": dest + wl.prefix,
            },
        )
        if res["error_count"] or res["ok"] != wl.count:
            raise RuntimeError(f"copy verification failed: {res}")
        return dict(res)
    res = _call(f"{endpoint}/_bench/verify/{DST_BUCKET}/{dest}")
    problems = list(res.get("errors") or [])
    if not res.get("zip_ok"):
        problems.insert(0, "zip_ok is false")
    if res.get("entries") != wl.count:
        problems.append(f"{res.get('entries')} entries, expected {wl.count}")
    if res.get("names_sha256") != names_digest(seed_keys(wl.prefix, wl.count)):
        problems.append("entry names or order differ from the sources")
    if res.get("length") != bytes_out:
        problems.append(f"endpoint holds {res.get('length')} bytes, contender wrote {bytes_out}")
    if problems:
        raise RuntimeError("archive verification failed: " + "; ".join(problems[:5]))
    return dict(res)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a contender connects for one (scheme, link), and what it must trust."""

    url: str
    env: dict[str, str]


def one_run(
    contender: str,
    wl: Workload,
    link: str,
    run: int,
    control: str,
    route: Route,
    scheme: str,
    order: int,
    budget_mib: int,
    options: tuple[str, ...] = (),
) -> RunRecord:
    rec = RunRecord(wl.name, link, contender, run, scheme, order, os.getloadavg())
    stamp = f"{wl.name}-{link}-{scheme}-{contender}-r{run}-{int(time.time() * 1000)}"
    dest = f"{stamp}/" if contender == "copy" else f"{stamp}.zip"
    direct = control
    try:
        endpoint_cpu = _call(f"{direct}/_bench/stats")["cpu_seconds"]
        child, wall, peak, cpu = run_child(
            contender, wl, route.url, dest, budget_mib, options, route.env
        )
        # The endpoint's CPU for this run: on a 2-core machine it competes with the contender.
        rec.endpoint_cpu_seconds = _call(f"{direct}/_bench/stats")["cpu_seconds"] - endpoint_cpu
        rec.seconds = wall
        rec.job_seconds = float(child["seconds"])
        rec.bytes_out = int(child["bytes_out"])
        rec.peak_rss_mib = peak
        rec.rss_before_mib = float(child.get("rss_before_mib", 0.0))
        rec.cpu_seconds = cpu
        rec.source_mb_s = wl.source_bytes / 1e6 / rec.seconds
        rec.extra = {
            k: v
            for k, v in child.items()
            if k not in {"seconds", "bytes_out", "rss_before_mib", "peak_rss_mib", "cpu_seconds"}
        }
        rec.extra["child_reported_peak_rss_mib"] = child.get("peak_rss_mib")
        rec.extra["source_gb"] = wl.source_bytes / 1e9
        rec.extra["verify"] = {
            k: v
            for k, v in verify(direct, contender, wl, dest, rec.bytes_out).items()
            if k in ("length", "crc32", "entries", "zip64", "parts", "ok", "checksum")
        }
        rec.verified = True
    except Exception as err:  # a failed run is recorded, never turned into a number
        rec.error = f"{type(err).__name__}: {err}"
    return rec


# -- summary ----------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


GroupKey = tuple[str, str, str]  # workload, link, scheme


def summarize(records: list[RunRecord], budget_mib: int) -> dict[str, Any]:
    """Medians and spread per group and contender; ratios per round, then their medians."""
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for r in records:
        if r.verified:
            groups.setdefault((r.workload, r.link, r.scheme, r.contender), []).append(r)
    rows = []
    for (w, link, scheme, c), rs in sorted(groups.items()):
        gb = rs[0].extra.get("source_gb") or 1.0
        secs = [r.seconds for r in rs]
        rows.append(
            {
                "workload": w,
                "link": link,
                "scheme": scheme,
                "contender": c,
                "runs": len(rs),
                "median_s": _median(secs),
                "min_s": min(secs),
                "max_s": max(secs),
                "median_job_s": _median([r.job_seconds for r in rs]),
                "median_mb_s": _median([r.source_mb_s for r in rs]),
                "peak_rss_mib_max": max(r.peak_rss_mib for r in rs),
                "peak_rss_mib_median": _median([r.peak_rss_mib for r in rs]),
                "cpu_s_median": _median([r.cpu_seconds for r in rs]),
                "cpu_s_per_gb_median": _median([r.cpu_seconds / gb for r in rs]),
                "endpoint_cpu_s_median": _median([r.endpoint_cpu_seconds for r in rs]),
                "load1_median": _median([r.load_before[0] for r in rs]),
                "load1_min": min(r.load_before[0] for r in rs),
                "load1_max": max(r.load_before[0] for r in rs),
            }
        )
    # Ratios inside one round (same group, minutes apart, similar load), then the median.
    by_round: dict[tuple[str, str, str, int], dict[str, RunRecord]] = {}
    for r in records:
        if r.verified:
            by_round.setdefault((r.workload, r.link, r.scheme, r.run), {})[r.contender] = r
    ratios: dict[str, dict[str, list[float]]] = {}
    for (w, link, scheme, _), same in by_round.items():
        ours = same.get("ours")
        if ours is None:
            continue
        slot = ratios.setdefault(f"{w}/{link}/{scheme}", {})
        for other, rec in same.items():
            if other != "ours":
                slot.setdefault(f"vs_{other}", []).append(rec.seconds / ours.seconds)
        if "copy" in same:
            slot.setdefault("cpu_vs_copy", []).append(ours.cpu_seconds / same["copy"].cpu_seconds)
    ratio_medians: dict[str, dict[str, Any]] = {}
    for k, v in ratios.items():
        ratio_medians[k] = {}
        for name, values in v.items():
            ratio_medians[k][name] = _median(values)
            ratio_medians[k][f"{name}_runs"] = [round(x, 3) for x in values]
    return {
        "rows": rows,
        "ratios": ratio_medians,
        "targets": targets(rows, ratio_medians, budget_mib),
    }


def _target(name: str, measured: float | None, met: bool, runs: list[float]) -> dict[str, Any]:
    return {
        "target": name,
        "measured": None if measured is None else round(measured, 3),
        "per_round": runs,
        "met": met,
    }


# (group, ratio name, target key, True if the ratio must be at least the goal, label)
RATIO_TARGETS = (
    (
        "large/on",
        "vs_copy",
        "large_vs_copy",
        True,
        "large objects over the link, {scheme}: ours >= {goal}x plain copy",
    ),
    (
        "large/on",
        "cpu_vs_copy",
        "cpu_per_gb_vs_copy",
        False,
        "large objects, {scheme}: ours CPU s per GB <= {goal}x the copy's",
    ),
    (
        "small/on",
        "vs_seed",
        "small_link_vs_seed",
        True,
        "small objects over the link, {scheme}: ours >= {goal}x the seed",
    ),
)


def targets(
    rows: list[dict[str, Any]], ratios: dict[str, dict[str, Any]], budget_mib: int
) -> list[dict[str, Any]]:
    out = []
    for scheme in ("https", "http"):
        for group, name, key, at_least, label in RATIO_TARGETS:
            r = ratios.get(f"{group}/{scheme}", {})
            value, goal = r.get(name), TARGETS[key]
            if value is not None:
                met = value >= goal if at_least else value <= goal
                text = label.format(scheme=scheme, goal=goal)
                out.append(_target(text, value, met, r[f"{name}_runs"]))
    limit = budget_mib + TARGETS["rss_extra_mib"]
    for row in rows:
        if row["workload"] == "rss4g" and row["contender"] == "ours":
            peak = row["peak_rss_mib_max"]
            text = (
                f"4 GiB archive, {budget_mib} MiB budget, {row['scheme']}: peak RSS <= {limit} MiB"
            )
            out.append(_target(text, peak, peak <= limit, []))
    return out


def _options_note(meta: dict[str, Any]) -> str:
    options = meta.get("engine_options") or []
    return "; engine options " + ", ".join(options) if options else ""


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    loads = [r["load_before"][0] for r in meta.get("round_loads", [])]
    lines = [
        f"Measured {meta['finished']} on {meta['cpus']} CPUs, commit {meta['commit']}"
        f"{' (QUICK smoke run, not representative)' if meta['quick'] else ''}; "
        f"{meta['runs']} interleaved round(s), medians; budget {meta['budget_mib']} MiB"
        f"{_options_note(meta)}. Load average (1 min) {meta['load_before']} before, "
        f"{meta['load_after']} after; at the start of each round: "
        f"{', '.join(f'{x:.1f}' for x in loads)}.",
        "",
        "Seconds are whole-process wall time (start-up included), min-max over the rounds; "
        "`job s` is the job alone, timed inside the process; `load` is the 1-minute load "
        "average before the runs (median, min-max).",
        "",
        "| workload | link | scheme | contender | runs | median s | min-max s | job s "
        "| MB/s | peak RSS MiB | CPU s | CPU s/GB | endpoint CPU s | load | ours vs this |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        key = f"{row['workload']}/{row['link']}/{row['scheme']}"
        ratio = ""
        if row["contender"] != "ours":
            r = summary["ratios"].get(key, {}).get(f"vs_{row['contender']}")
            ratio = "" if r is None else f"{r:.2f}x"
        lines.append(
            f"| {row['workload']} | {row['link']} | {row['scheme']} | {row['contender']} | "
            f"{row['runs']} | {row['median_s']:.2f} | {row['min_s']:.1f}-{row['max_s']:.1f} | "
            f"{row['median_job_s']:.2f} | {row['median_mb_s']:.0f} | "
            f"{row['peak_rss_mib_max']:.0f} | {row['cpu_s_median']:.1f} | "
            f"{row['cpu_s_per_gb_median']:.2f} | {row['endpoint_cpu_s_median']:.1f} | "
            f"{row['load1_median']:.1f} ({row['load1_min']:.1f}-{row['load1_max']:.1f}) | "
            f"{ratio} |"
        )
    lines += ["", "| target | median | per round | met |", "|---|---:|---|:---:|"]
    for t in summary["targets"]:
        per = ", ".join(f"{x:.2f}" for x in t["per_round"])
        lines.append(
            f"| {t['target']} | {t['measured']} | {per} | {'yes' if t['met'] else '**no**'} |"
        )
    if meta.get("link_check"):
        lc = meta["link_check"]
        lines += [
            "",
            f"Link check: a tiny request takes {lc['added_ms']:.1f} ms more through the link; "
            f"one 64 MiB ranged GET takes {lc['get_64mib_linked_s']:.2f} s "
            f"({lc['get_64mib_linked_mb_s']:.0f} MB/s).",
        ]
    if meta.get("errors"):
        lines += ["", "Failed runs (not counted):", *[f"- {e}" for e in meta["errors"]]]
    return "\n".join(lines) + "\n"


CONTENDERS = ("ours", "seed", "streamzip", "copy")
COLORS = {"ours": "#1f77b4", "seed": "#d62728", "streamzip": "#ff7f0e", "copy": "#7f7f7f"}


def chart(summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(summary["rows"])
    groups = sorted({(r["workload"], r["link"], r["scheme"]) for r in rows})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.2
    for ax, field_name, label in (
        (ax1, "median_mb_s", "MB/s of source data, whole process (median)"),
        (ax2, "peak_rss_mib_max", "peak RSS of the process, MiB (max over runs)"),
    ):
        for i, c in enumerate(CONTENDERS):
            xs, ys = [], []
            for j, g in enumerate(groups):
                for r in rows:
                    if (r["workload"], r["link"], r["scheme"], r["contender"]) == (*g, c):
                        xs.append(j + (i - 1.5) * width)
                        ys.append(r[field_name])
            if xs:
                ax.bar(xs, ys, width, label=c, color=COLORS[c])
        ax.set_xticks(range(len(groups)), [f"{w}\nlink {lk}\n{sc}" for w, lk, sc in groups])
        ax.set_ylabel(label)
        ax.legend()
    ax1.set_title("Throughput")
    ax2.set_title("Memory")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(table: str) -> None:
    if not README.exists():
        return
    text = README.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        return
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    README.write_text(f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}", encoding="utf-8")


# -- main -------------------------------------------------------------------------------


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plan_round(
    workloads: list[Workload],
    links: list[str],
    schemes: list[str],
    wanted: set[str],
    slow_schemes: set[str],
    rng: random.Random,
) -> list[tuple[Workload, str, str, list[str]]]:
    """One round: every (workload, link, scheme) group, contenders in a fresh random order.

    Groups run back to back so the contenders of a group see the same
    minutes of machine load; shuffling the order each round keeps any one
    contender from always running first (or right after the slowest).
    """
    out = []
    for wl in workloads:
        for link in links:
            if link not in wl.links:
                continue
            for scheme in schemes:
                names = [
                    c
                    for c in wl.contenders
                    if c in wanted and (c not in SLOW or scheme in slow_schemes)
                ]
                rng.shuffle(names)
                if names:
                    out.append((wl, link, scheme, names))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workloads", default="small,large,rss4g")
    p.add_argument("--link", choices=["on", "off", "both"], default="on")
    p.add_argument("--schemes", default="https,http", help="https, http or both (default)")
    p.add_argument(
        "--slow-schemes",
        default="https",
        help="schemes the slow reference designs (seed, streamzip) run over (default https)",
    )
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds")
    p.add_argument("--contenders", default="ours,seed,streamzip,copy")
    p.add_argument("--budget-mib", type=int, default=64)
    p.add_argument("--shuffle-seed", type=int, default=12, help="contender order per round")
    p.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="override a ZipOptions field for ours, e.g. range_size=4194304 (tuning runs)",
    )
    p.add_argument("--quick", action="store_true", help="tiny workloads, 1 round: a smoke test")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--no-readme", action="store_true", help="do not refresh the README table")
    p.add_argument("--tag", default="", help="suffix for the result files (tuning runs)")
    args = p.parse_args(argv)

    table_of = QUICK if args.quick else FULL
    runs = 1 if args.quick and args.runs == 3 else args.runs
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [n for n in names if n not in table_of]
    if unknown:
        p.error(f"unknown workload(s) {unknown}; choose from {sorted(table_of)}")
    links = ["off", "on"] if args.link == "both" else [args.link]
    schemes = [x.strip() for x in args.schemes.split(",") if x.strip()]
    if not set(schemes) <= {"http", "https"}:
        p.error("--schemes takes http and/or https")
    slow_schemes = {x.strip() for x in args.slow_schemes.split(",") if x.strip()}
    wanted = {c.strip() for c in args.contenders.split(",")}
    workloads = [table_of[n] for n in names]
    # rss4g measures memory, not the link: it always runs without it, over each scheme.
    workloads = [
        w if w.name == "rss4g" else Workload(w.name, w.count, w.size, w.contenders, tuple(links))
        for w in workloads
    ]
    all_links = sorted({lk for w in workloads for lk in w.links})

    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_before": _load(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "commit": _commit(),
        "quick": args.quick,
        "runs": runs,
        "budget_mib": args.budget_mib,
        "engine_options": args.engine_option,
        "schemes": schemes,
        "slow_schemes": sorted(slow_schemes),
        "shuffle_seed": args.shuffle_seed,
        "command": " ".join(["python -m loadtest.bench_engine", *(argv or sys.argv[1:])]),
        "workloads": {w.name: asdict(w) for w in workloads},
        "round_loads": [],
    }
    print(f"load average before: {meta['load_before']} ({meta['cpus']} CPUs)", flush=True)
    # Contenders start as an installed worker or Lambda package would, with
    # compiled modules: under PYTHONDONTWRITEBYTECODE (tox sets it) no .pyc is
    # ever written for the project, and every contender process would compile
    # its modules again (about 0.1 CPU s each; docs/performance.md).
    for package in ("service", "loadtest"):
        compileall.compile_dir(ROOT / package, quiet=1)
    tmp = tempfile.TemporaryDirectory(prefix="bench-tls-")
    ca_file, server_pem = make_ca(Path(tmp.name))
    endpoint = Service(
        "loadtest.bench_endpoint",
        "--tls-cert",
        str(server_pem),
        "--tls-key",
        str(server_pem),
        tls=True,
    )
    proxies: list[Service] = []
    records: list[RunRecord] = []
    try:
        tls_env = {"AWS_CA_BUNDLE": str(ca_file)}
        routes: dict[tuple[str, str], Route] = {
            ("off", "http"): Route(endpoint.url, {}),
            ("off", "https"): Route(f"https://127.0.0.1:{endpoint.tls_port}", tls_env),
        }
        if "on" in all_links:
            plain = Service("loadtest.s3_link_proxy", "--upstream", f"127.0.0.1:{endpoint.port}")
            proxies.append(plain)
            routes[("on", "http")] = Route(plain.url, {})
            # TCP pass-through: TLS runs end to end, client to endpoint, through the link.
            tls_link = Service(
                "loadtest.s3_link_proxy", "--upstream", f"127.0.0.1:{endpoint.tls_port}"
            )
            proxies.append(tls_link)
            routes[("on", "https")] = Route(f"https://127.0.0.1:{tls_link.port}", tls_env)
        _call(f"{endpoint.url}/_bench/seed", "PUT", {"bucket": DST_BUCKET, "count": 0, "size": 0})
        for wl in workloads:
            _call(
                f"{endpoint.url}/_bench/seed",
                "PUT",
                {"bucket": SRC_BUCKET, "prefix": wl.prefix, "count": wl.count, "size": wl.size},
            )
        if proxies:
            from loadtest.s3_link_proxy import measure_link

            probe = "link-probe/"
            _call(
                f"{endpoint.url}/_bench/seed",
                "PUT",
                {"bucket": SRC_BUCKET, "prefix": probe, "count": 1, "size": 64 * MiB},
            )
            meta["link_check"] = asyncio.run(
                measure_link(endpoint.url, proxies[0].url, SRC_BUCKET, seed_keys(probe, 1)[0])
            )
            print(f"link check: {meta['link_check']}", flush=True)
        rng = random.Random(args.shuffle_seed)
        for run in range(1, runs + 1):
            round_plan = plan_round(workloads, all_links, schemes, wanted, slow_schemes, rng)
            meta["round_loads"].append({"round": run, "load_before": os.getloadavg()})
            for wl, link, scheme, order in round_plan:
                for position, contender in enumerate(order):
                    rec = one_run(
                        contender,
                        wl,
                        link,
                        run,
                        endpoint.url,
                        routes[(link, scheme)],
                        scheme,
                        position,
                        args.budget_mib,
                        tuple(args.engine_option),
                    )
                    records.append(rec)
                    status = "ok" if rec.verified else f"FAILED {rec.error}"
                    print(
                        f"round {run} {wl.name:6} link {link:3} {scheme:5} {contender:9} "
                        f"{rec.seconds:7.2f} s (job {rec.job_seconds:6.2f}) "
                        f"{rec.source_mb_s:6.0f} MB/s rss {rec.peak_rss_mib:5.0f} MiB "
                        f"cpu {rec.cpu_seconds:5.1f} s load {rec.load_before[0]:4.1f}  {status}",
                        flush=True,
                    )
            meta["round_loads"][-1]["load_after"] = os.getloadavg()
        meta["endpoint_stats"] = _call(f"{endpoint.url}/_bench/stats")
    finally:
        for proxy in proxies:
            proxy.stop()
        endpoint.stop()
        tmp.cleanup()

    meta["load_after"] = _load()
    meta["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    meta["errors"] = [
        f"{r.workload}/{r.link}/{r.scheme}/{r.contender} round {r.run}: {r.error}"
        for r in records
        if r.error
    ]
    summary = summarize(records, args.budget_mib)
    table = markdown(summary, meta)
    print()
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    result = {"meta": meta, "summary": summary, "runs": [asdict(r) for r in records]}
    (args.out / f"bench_engine{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"bench_engine{suffix}.md").write_text(table)
    title = (
        f"S3 ZIP Jobs engine benchmark, {meta['finished']}, load {meta['load_before']}, "
        f"{runs} interleaved round(s), budget {args.budget_mib} MiB"
    )
    chart(summary, args.out / f"bench_engine{suffix}.png", title)
    if not args.quick and not args.no_readme and not args.tag:
        update_readme(table)
    failed = bool(meta["errors"]) or any(not t["met"] for t in summary["targets"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
