"""Engine benchmark: ours vs the seed design vs a plain parallel copy, same endpoint, same bytes.

    python -m loadtest.bench_engine                      # everything, 3 runs (~15-20 min)
    python -m loadtest.bench_engine --quick              # smoke run, < 60 s
    python -m loadtest.bench_engine --workloads large --link off --runs 5

Processes: the benchmark endpoint (``loadtest.bench_endpoint``) and the
S3-like link (``loadtest.s3_link_proxy``) each run in their own process, so
their CPU and memory never count against a contender. Every contender run is
a fresh ``loadtest.run_contender`` process; its peak RSS comes from the OS
(``wait4`` rusage of that child). Every archive is verified by the endpoint
(entry CRCs against the sources, central directory, ZIP64 records, entry
order); a run whose output fails verification is an error, not a number.

Writes ``loadtest/results/bench_engine.json``, ``bench_engine.png``,
``bench_engine.md`` and refreshes the table in ``loadtest/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
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
    contenders: tuple[str, ...] = ("ours", "seed", "copy")
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
    "large_vs_copy": 0.85,  # ours throughput / plain copy, large objects, each link
    "small_link_vs_seed": 5.0,  # ours speedup over the seed, small objects over the link
    "rss_extra_mib": 100,  # peak RSS <= budget + this, 4 GiB archive
}


@dataclass(slots=True)
class RunRecord:
    workload: str
    link: str
    contender: str
    run: int
    seconds: float = 0.0
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
    """A ``python -m`` helper that prints ``PORT <n>`` once listening."""

    def __init__(self, module: str, *args: str) -> None:
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


def run_child(
    contender: str,
    wl: Workload,
    endpoint_url: str,
    dest: str,
    budget_mib: int,
    options: tuple[str, ...] = (),
) -> tuple[dict[str, Any], float, float]:
    """(child's JSON, peak RSS MiB from wait4, CPU seconds from wait4)."""
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
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env, text=True
    )
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    # wait4 gives the child's own rusage (peak RSS from the kernel).
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{contender} timed out after {CHILD_TIMEOUT_S} s")
        time.sleep(0.05)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        tail = err.strip().splitlines()[-3:]
        raise RuntimeError(f"{contender} exited {code}: {' | '.join(tail)}")
    return (
        json.loads(out.strip().splitlines()[-1]),
        usage.ru_maxrss / 1024,
        (usage.ru_utime + usage.ru_stime),
    )


def verify(
    endpoint: str, contender: str, wl: Workload, dest: str, bytes_out: int
) -> dict[str, Any]:
    """Raise if the output is not exactly the sources (archive or copies)."""
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


def one_run(
    contender: str,
    wl: Workload,
    link: str,
    run: int,
    direct: str,
    linked: str | None,
    budget_mib: int,
    options: tuple[str, ...] = (),
) -> RunRecord:
    rec = RunRecord(wl.name, link, contender, run)
    url = linked if link == "on" and linked else direct
    stamp = f"{wl.name}-{link}-{contender}-r{run}-{int(time.time() * 1000)}"
    dest = f"{stamp}/" if contender == "copy" else f"{stamp}.zip"
    try:
        endpoint_cpu = _call(f"{direct}/_bench/stats")["cpu_seconds"]
        child, peak, cpu = run_child(contender, wl, url, dest, budget_mib, options)
        # The endpoint's CPU for this run: on a 2-core machine it competes with the contender.
        rec.endpoint_cpu_seconds = _call(f"{direct}/_bench/stats")["cpu_seconds"] - endpoint_cpu
        rec.seconds = float(child["seconds"])
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
        rec.extra["verify"] = {
            k: v
            for k, v in verify(direct, contender, wl, dest, rec.bytes_out).items()
            if k in ("length", "crc32", "entries", "zip64", "parts", "ok")
        }
        rec.verified = True
    except Exception as err:  # a failed run is recorded, never turned into a number
        rec.error = f"{type(err).__name__}: {err}"
    return rec


# -- summary ----------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(records: list[RunRecord], budget_mib: int) -> dict[str, Any]:
    """Medians per (workload, link, contender) and per-run ratios, then their medians."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in records:
        if r.verified:
            groups.setdefault((r.workload, r.link, r.contender), []).append(r)
    rows = []
    for (w, link, c), rs in sorted(groups.items()):
        rows.append(
            {
                "workload": w,
                "link": link,
                "contender": c,
                "runs": len(rs),
                "median_s": _median([r.seconds for r in rs]),
                "median_mb_s": _median([r.source_mb_s for r in rs]),
                "peak_rss_mib_max": max(r.peak_rss_mib for r in rs),
                "peak_rss_mib_median": _median([r.peak_rss_mib for r in rs]),
                "cpu_s_median": _median([r.cpu_seconds for r in rs]),
                "endpoint_cpu_s_median": _median([r.endpoint_cpu_seconds for r in rs]),
            }
        )
    # Ratios inside one run (same moment, same machine load), then the median.
    by_run: dict[tuple[str, str, int], dict[str, RunRecord]] = {}
    for r in records:
        if r.verified:
            by_run.setdefault((r.workload, r.link, r.run), {})[r.contender] = r
    ratios: dict[str, dict[str, list[float]]] = {}
    for (w, link, _), same_run in by_run.items():
        ours = same_run.get("ours")
        if ours is None:
            continue
        slot = ratios.setdefault(f"{w}/{link}", {"vs_seed": [], "vs_copy": []})
        if "seed" in same_run:
            slot["vs_seed"].append(same_run["seed"].seconds / ours.seconds)
        if "copy" in same_run:
            slot["vs_copy"].append(same_run["copy"].seconds / ours.seconds)
    ratio_medians = {
        k: {
            "vs_seed": _median(v["vs_seed"]),
            "vs_copy": _median(v["vs_copy"]),
            "vs_seed_runs": v["vs_seed"],
            "vs_copy_runs": v["vs_copy"],
        }
        for k, v in ratios.items()
    }
    return {
        "rows": rows,
        "ratios": ratio_medians,
        "targets": targets(rows, ratio_medians, budget_mib),
    }


def targets(
    rows: list[dict[str, Any]], ratios: dict[str, dict[str, Any]], budget_mib: int
) -> list[dict[str, Any]]:
    out = []
    for link in ("off", "on"):
        r = ratios.get(f"large/{link}", {}).get("vs_copy")
        if r is not None:
            out.append(
                {
                    "target": f"large objects, link {link}: ours >= "
                    f"{TARGETS['large_vs_copy']}x plain copy",
                    "measured": round(r, 3),
                    "met": r >= TARGETS["large_vs_copy"],
                }
            )
    r = ratios.get("small/on", {}).get("vs_seed")
    if r is not None:
        out.append(
            {
                "target": f"small objects over the link: ours >= {TARGETS['small_link_vs_seed']}x "
                "the seed",
                "measured": round(r, 2),
                "met": r >= TARGETS["small_link_vs_seed"],
            }
        )
    for row in rows:
        if row["workload"] == "rss4g" and row["contender"] == "ours":
            limit = budget_mib + TARGETS["rss_extra_mib"]
            out.append(
                {
                    "target": f"4 GiB archive, {budget_mib} MiB budget: peak RSS <= {limit} MiB",
                    "measured": round(row["peak_rss_mib_max"], 1),
                    "met": row["peak_rss_mib_max"] <= limit,
                }
            )
    return out


def _options_note(meta: dict[str, Any]) -> str:
    options = meta.get("engine_options") or []
    return "; engine options " + ", ".join(options) if options else ""


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"Measured {meta['finished']} on {meta['cpus']} CPUs, load average "
        f"{meta['load_before']} before / {meta['load_after']} after"
        f"{' (QUICK smoke run, not representative)' if meta['quick'] else ''}; "
        f"{meta['runs']} run(s) each, medians; budget {meta['budget_mib']} MiB"
        f"{_options_note(meta)}; "
        f"commit {meta['commit']}.",
        "",
        "| workload | link | contender | runs | median s | MB/s (source) | peak RSS MiB "
        "| CPU s | endpoint CPU s | ours vs this |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        key = f"{row['workload']}/{row['link']}"
        ratio = ""
        if row["contender"] in ("seed", "copy"):
            r = summary["ratios"].get(key, {}).get(f"vs_{row['contender']}")
            ratio = "" if r is None else f"{r:.2f}x"
        lines.append(
            f"| {row['workload']} | {row['link']} | {row['contender']} | {row['runs']} | "
            f"{row['median_s']:.2f} | {row['median_mb_s']:.0f} | {row['peak_rss_mib_max']:.0f} | "
            f"{row['cpu_s_median']:.1f} | {row['endpoint_cpu_s_median']:.1f} | {ratio} |"
        )
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for t in summary["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
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


def chart(summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"]]
    groups = sorted({(r["workload"], r["link"]) for r in rows})
    contenders = ["ours", "seed", "copy"]
    colors = {"ours": "#1f77b4", "seed": "#d62728", "copy": "#7f7f7f"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.25
    for i, c in enumerate(contenders):
        xs, ys = [], []
        for j, g in enumerate(groups):
            for r in rows:
                if (r["workload"], r["link"], r["contender"]) == (*g, c):
                    xs.append(j + (i - 1) * width)
                    ys.append(r["median_mb_s"])
        if xs:
            ax1.bar(xs, ys, width, label=c, color=colors[c])
    ax1.set_xticks(range(len(groups)), [f"{w}\nlink {lk}" for w, lk in groups])
    ax1.set_ylabel("MB/s of source data (median)")
    ax1.set_title("Throughput")
    ax1.legend()
    for i, c in enumerate(contenders):
        xs, ys = [], []
        for j, g in enumerate(groups):
            for r in rows:
                if (r["workload"], r["link"], r["contender"]) == (*g, c):
                    xs.append(j + (i - 1) * width)
                    ys.append(r["peak_rss_mib_max"])
        if xs:
            ax2.bar(xs, ys, width, label=c, color=colors[c])
    ax2.set_xticks(range(len(groups)), [f"{w}\nlink {lk}" for w, lk in groups])
    ax2.set_ylabel("peak RSS of the process, MiB (max over runs)")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workloads", default="small,large,rss4g")
    p.add_argument("--link", choices=["on", "off", "both"], default="both")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--contenders", default="ours,seed,copy")
    p.add_argument("--budget-mib", type=int, default=64)
    p.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="override a ZipOptions field for ours, e.g. range_size=4194304 (tuning runs)",
    )
    p.add_argument("--quick", action="store_true", help="tiny workloads, 1 run: a smoke test")
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
    wanted = {c.strip() for c in args.contenders.split(",")}
    workloads = [table_of[n] for n in names]

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
        "workloads": {w.name: asdict(w) for w in workloads},
    }
    print(f"load average before: {meta['load_before']} ({meta['cpus']} CPUs)", flush=True)
    endpoint = Service("loadtest.bench_endpoint")
    proxy: Service | None = None
    records: list[RunRecord] = []
    try:
        if "on" in links:
            proxy = Service("loadtest.s3_link_proxy", "--upstream", f"127.0.0.1:{endpoint.port}")
        _call(f"{endpoint.url}/_bench/seed", "PUT", {"bucket": DST_BUCKET, "count": 0, "size": 0})
        for wl in workloads:
            _call(
                f"{endpoint.url}/_bench/seed",
                "PUT",
                {"bucket": SRC_BUCKET, "prefix": wl.prefix, "count": wl.count, "size": wl.size},
            )
        if proxy is not None:
            from loadtest.s3_link_proxy import measure_link

            probe = "link-probe/"
            _call(
                f"{endpoint.url}/_bench/seed",
                "PUT",
                {"bucket": SRC_BUCKET, "prefix": probe, "count": 1, "size": 64 * MiB},
            )
            meta["link_check"] = asyncio.run(
                measure_link(endpoint.url, proxy.url, SRC_BUCKET, seed_keys(probe, 1)[0])
            )
            print(f"link check: {meta['link_check']}", flush=True)
        for run in range(1, runs + 1):
            for wl in workloads:
                for link in links:
                    if link not in wl.links:
                        continue
                    for contender in wl.contenders:
                        if contender not in wanted:
                            continue
                        rec = one_run(
                            contender,
                            wl,
                            link,
                            run,
                            endpoint.url,
                            proxy.url if proxy else None,
                            args.budget_mib,
                            tuple(args.engine_option),
                        )
                        records.append(rec)
                        status = "ok" if rec.verified else f"FAILED {rec.error}"
                        print(
                            f"run {run} {wl.name:6} link {link:3} {contender:5} "
                            f"{rec.seconds:7.2f} s {rec.source_mb_s:7.0f} MB/s "
                            f"rss {rec.peak_rss_mib:6.0f} MiB  {status}",
                            flush=True,
                        )
        meta["endpoint_stats"] = _call(f"{endpoint.url}/_bench/stats")
    finally:
        if proxy is not None:
            proxy.stop()
        endpoint.stop()

    meta["load_after"] = _load()
    meta["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    meta["errors"] = [
        f"{r.workload}/{r.link}/{r.contender} run {r.run}: {r.error}" for r in records if r.error
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
        f"{runs} run(s), budget {args.budget_mib} MiB"
    )
    chart(summary, args.out / f"bench_engine{suffix}.png", title)
    if not args.quick and not args.no_readme and not args.tag:
        update_readme(table)
    failed = bool(meta["errors"]) or any(not t["met"] for t in summary["targets"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
