"""Peak RSS of one process building one archive, at a given budget: the memory model's data.

Each measurement is a fresh subprocess, so the numbers are one process's own:

1. import what the worker imports and create its three AWS clients (botocore
   loads the service models then; no request is sent), and read RSS: the
   *runtime* part of the model;
2. run ``build_zip`` over a synthetic source (``tests/support/sources.py``:
   every GET is served as views of one repeated block, every part written to
   ``/dev/null``), with the given budget, and read the kernel's RSS high-water
   mark (VmHWM) at the end.

``python -m loadtest.memory_probe --budgets 16,32,64,128,256 --archive-mib 2048``
prints one JSON line per budget and the model check (peak <= the
``service.memory`` ceiling). The network is not involved, so the figure
leaves out what an HTTP client buffers; the load runs (LOAD.md) measure the
worker with real HTTP against the same ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from service.memory import process_ceiling_mib
from service.units import KiB, MiB


@dataclass(frozen=True, slots=True)
class Measurement:
    budget_mib: int
    archive_mib: int
    files: int
    runtime_mib: float  # RSS after imports and client creation
    peak_mib: float  # VmHWM after the build
    engine_peak_budget_mib: float  # the engine's own accounting

    @property
    def ceiling_mib(self) -> int:
        return process_ceiling_mib(self.budget_mib, files=self.files)


def _vm(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


async def _child(budget_mib: int, archive_mib: int, file_kib: int) -> Measurement:
    from pathlib import Path

    import service.worker  # noqa: F401  (what the worker process has loaded)
    from service.aws import AwsSettings, aws_client
    from service.engine import Budget, Destination, ZipOptions, build_zip
    from tests.support.sources import SyntheticS3, repeated

    aws = AwsSettings(endpoint_url="http://127.0.0.1:9", access_key_id="x", secret_access_key="x")
    async with (
        aws_client("s3", aws),
        aws_client("sqs", aws),
        aws_client("dynamodb", aws),
    ):
        runtime = _vm("VmRSS")
        s3 = SyntheticS3(Path(os.devnull))
        count = max(1, archive_mib * 1024 // file_kib)
        # One shared content object: its 1 MiB block is the only source memory,
        # so what grows with the archive would be the engine's, not the probe's.
        content = repeated(file_kib * KiB, seed=1)
        sources = [s3.add("src", f"f{i:05d}.pdf", content) for i in range(count)]
        budget = Budget(budget_mib * MiB)
        result = await build_zip(
            sources,
            Destination("dst", "probe.zip"),
            s3=s3,  # type: ignore[arg-type]
            options=ZipOptions(budget_bytes=budget_mib * MiB),
            budget=budget,
        )
    return Measurement(
        budget_mib,
        archive_mib,
        result.files,
        runtime / MiB,
        _vm("VmHWM") / MiB,
        result.peak_budget_bytes / MiB,
    )


def measure(budget_mib: int, archive_mib: int, file_kib: int = 64 * 1024) -> Measurement:
    """One measurement in a fresh interpreter (see the module docstring)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.memory_probe",
            "--child",
            str(budget_mib),
            str(archive_mib),
            str(file_kib),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return Measurement(**doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budgets", default="16,32,64,128,256", help="MiB, comma separated")
    p.add_argument("--archive-mib", type=int, default=2048)
    p.add_argument("--file-kib", type=int, default=64 * 1024, help="size of each file")
    p.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        m = asyncio.run(_child(*a.child))
        print(json.dumps(asdict(m)))
        return 0
    worst = 0.0
    for budget in (int(b) for b in a.budgets.split(",")):
        m = measure(budget, a.archive_mib, a.file_kib)
        over = m.peak_mib - m.runtime_mib - m.budget_mib
        worst = max(worst, m.peak_mib - m.ceiling_mib)
        print(
            json.dumps(
                {
                    **asdict(m),
                    "over_runtime_plus_budget_mib": round(over, 1),
                    "ceiling_mib": m.ceiling_mib,
                }
            ),
            flush=True,
        )
    return 0 if worst <= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
