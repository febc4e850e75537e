"""The keys the benchmark endpoint's ``/_bench/seed`` creates, importable on their own.

A contender process needs only these names; importing them from
``loadtest.bench_endpoint`` would load the endpoint's server, checksum and
ZIP-checking code into every contender and charge it about 0.05-0.08 CPU s
that no worker pays (docs/performance.md, "Where the CPU goes").
"""

from __future__ import annotations


def seed_keys(prefix: str, count: int, width: int = 6) -> list[str]:
    """The keys ``/_bench/seed`` creates, in key (and archive) order."""
    return [f"{prefix}{i:0{width}d}.bin" for i in range(count)]
