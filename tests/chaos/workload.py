"""The jobs of a chaos run and what each READY archive must contain, from the seed.

Kinds of job (each with the bytes its archive must hold):
* ``small``     2-4 objects of 20-300 KB, stored or deflated;
* ``multipart`` 3 objects of 3-4 MB: an archive of several upload parts,
                so a worker can be killed between parts;
* ``skip``      existing objects plus missing keys, ``missing: skip``;
* ``missing``   one missing key, ``missing: fail``: FAILED, naming it;
* ``prefix``    every object under a folder;
* ``oversized`` 250 missing keys of 1,000 bytes: the keys fit inline (256 KB)
                but with the list of missing keys the FAILED record would be
                about 500 KB, over DynamoDB's 400 KB item limit, unless the
                final record is bounded in bytes;
* ``poison``    a small job whose every attempt kills its worker.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.jobs.runner import arcname_under

KB = 1024
MB = 1024 * 1024
SRC = "chaos/src/"
PREFIX = "chaos/prefix/"
OVERSIZED_KEYS = 250
OVERSIZED_KEY_BYTES = 1000


@dataclass(frozen=True, slots=True)
class JobSpec:
    kind: str
    body: dict[str, Any]
    expected: Mapping[str, bytes] = field(default_factory=dict)  # READY archive: name -> bytes
    cancel_after_s: float | None = None


def _blob(rng: random.Random, size: int) -> bytes:
    """Half random (incompressible), half zeros: deflate has work of both kinds, cheaply."""
    return rng.randbytes(size // 2) + bytes(size - size // 2)


def sources(seed: int) -> dict[str, bytes]:
    """The objects every job draws from."""
    rng = random.Random(f"{seed}:sources")
    objects = {f"{SRC}s{i:02}.bin": _blob(rng, rng.randint(20 * KB, 300 * KB)) for i in range(12)}
    objects |= {f"{SRC}m{i:02}.bin": _blob(rng, rng.randint(3 * MB, 4 * MB)) for i in range(6)}
    objects |= {f"{PREFIX}p{i:02}.bin": _blob(rng, rng.randint(5 * KB, 80 * KB)) for i in range(8)}
    return objects


def plan_jobs(
    seed: int,
    jobs: int,
    objects: Mapping[str, bytes],
    *,
    cancel_share: float,
    oversized: int,
    poison: int,
) -> list[JobSpec]:
    """``jobs`` specs in submission order; kinds drawn from the seed, specials included."""
    rng = random.Random(f"{seed}:jobs")
    small = sorted(k for k in objects if k.startswith(f"{SRC}s"))
    big = sorted(k for k in objects if k.startswith(f"{SRC}m"))
    kinds = ["oversized"] * oversized + ["poison"] * poison
    kinds += rng.choices(
        ["small", "multipart", "skip", "missing", "prefix"],
        weights=[4, 3, 1, 1, 1],
        k=max(jobs - len(kinds), 0),
    )
    rng.shuffle(kinds)
    specs = []
    for n, kind in enumerate(kinds):
        cancel = rng.uniform(0.5, 6.0) if rng.random() < cancel_share else None
        specs.append(_spec(kind, n, rng, objects, small, big, cancel))
    return specs


def _spec(
    kind: str,
    n: int,
    rng: random.Random,
    objects: Mapping[str, bytes],
    small: list[str],
    big: list[str],
    cancel: float | None,
) -> JobSpec:
    name = f"chaos-{n:03}.zip"
    if kind in ("small", "poison"):
        keys = rng.sample(small, rng.randint(2, 4))
        compression = rng.choice(["stored", "deflate"])
        body = {"keys": keys, "name": name, "compression": compression}
        return JobSpec(
            kind, body, {k: objects[k] for k in keys}, None if kind == "poison" else cancel
        )
    if kind == "multipart":
        keys = rng.sample(big, 3)
        return JobSpec(kind, {"keys": keys, "name": name}, {k: objects[k] for k in keys}, cancel)
    if kind == "skip":
        keys = rng.sample(small, 3)
        gone = [f"{SRC}gone-{n}-{i}.bin" for i in range(2)]
        body = {"keys": keys + gone, "name": name, "missing": "skip"}
        return JobSpec(kind, body, {k: objects[k] for k in keys}, cancel)
    if kind == "missing":
        keys = [*rng.sample(small, 2), f"{SRC}gone-{n}.bin"]
        return JobSpec(kind, {"keys": keys, "name": name}, {}, cancel)
    if kind == "prefix":
        inside = {k: v for k, v in objects.items() if k.startswith(PREFIX)}
        expected = {arcname_under(PREFIX, k): v for k, v in inside.items()}
        return JobSpec(kind, {"prefix": PREFIX, "name": name}, expected, cancel)
    if kind == "oversized":
        pad = OVERSIZED_KEY_BYTES - len(f"{SRC}absent/{n:03}-0000-")
        keys = [f"{SRC}absent/{n:03}-{i:04}-{'k' * pad}" for i in range(OVERSIZED_KEYS)]
        return JobSpec(kind, {"keys": keys, "name": name}, {}, None)
    raise ValueError(kind)
