"""The memory model: how much RSS a process needs for a byte budget and a number of files.

    peak RSS (MiB) <= RUNTIME_MIB + BUDGET_FACTOR x budget (MiB) + files x PER_FILE_BYTES / MiB

``files`` counts the entries of every job the process runs at once (their
plans and central directories live outside the byte budget). The constants
come from ``python -m loadtest.memory_probe`` and the load runs; the
measurements and the margins taken are in docs/DESIGN.md, "Memory".

This is the one place the formula lives. It sizes the Lambda's default budget
(lambda_adapter/runtime.py), the load runs' RSS ceiling (loadtest/load_run.py)
and the README's figures; terraform/lambda.tf states the same formula as a
precondition on ``zipper_memory_mb``, and tests/unit/test_memory_model.py
checks the two agree.
"""

from __future__ import annotations

import math

from .units import MiB

# Measured: 79-80 MiB (interpreter, aioboto3/botocore/aiohttp, powertools, the
# three clients' service models). The rest is margin for what was not measured
# here: the Lambda runtime client, transient HTTP buffers (<= ~10 MiB seen).
RUNTIME_MIB = 128
# Measured: the engine's RSS is budget + <= 1.5 MiB on the synthetic source at
# every budget from 16 to 512 MiB; the margin covers heap fragmentation.
BUDGET_FACTOR = 1.25
# Measured: ~1.0 KiB per entry at 100,000 entries (plan, zip info, names).
PER_FILE_BYTES = 1280


def required_mib(budget_mib: float, files: int = 0) -> float:
    """The formula itself, unrounded (what Terraform's precondition computes)."""
    return RUNTIME_MIB + BUDGET_FACTOR * budget_mib + files * PER_FILE_BYTES / MiB


def process_ceiling_mib(budget_mib: float, files: int = 0) -> int:
    """The most RSS a process with this budget, running jobs of ``files`` entries, should reach."""
    return math.ceil(required_mib(budget_mib, files))


def budget_for_memory_mib(memory_mib: float, files: int = 0) -> int:
    """The largest budget (MiB) whose ceiling fits ``memory_mib``; <= 0 when nothing fits."""
    return math.floor((memory_mib - RUNTIME_MIB - files * PER_FILE_BYTES / MiB) / BUDGET_FACTOR)
