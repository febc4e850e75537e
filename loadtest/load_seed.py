"""The source objects a load run zips, in the shapes real users send.

Shapes: many small PDFs (invoices, letters), some medium ones, a few large
ones (scans). Sizes are drawn from a seeded RNG so two runs zip the same bytes.
The manifest written here is the only thing the locustfile knows about the
data: keys and sizes per shape, so it can check every archive's entries.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.units import KiB, MiB


@dataclass(frozen=True, slots=True)
class Shape:
    """``count`` objects under ``prefix`` with sizes uniform in [low, high] bytes."""

    name: str
    count: int
    low: int
    high: int

    @property
    def prefix(self) -> str:
        return f"load/{self.name}/"


FULL_SHAPES = (
    Shape("small", 300, 50 * KiB, 300 * KiB),
    Shape("medium", 20, 1 * MiB, 5 * MiB),
    Shape("large", 4, 20 * MiB, 40 * MiB),
)
# The CI smoke: same three shapes, a fraction of the bytes, seeded in seconds.
QUICK_SHAPES = (
    Shape("small", 80, 50 * KiB, 300 * KiB),
    Shape("medium", 6, 1 * MiB, 3 * MiB),
    Shape("large", 2, 12 * MiB, 20 * MiB),
)


@dataclass(frozen=True, slots=True)
class SeededObject:
    key: str
    size: int


@dataclass
class Manifest:
    """What was seeded, per shape; written as JSON for the locustfile."""

    bucket: str
    shapes: dict[str, list[SeededObject]] = field(default_factory=dict)
    max_keys: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(o.size for objs in self.shapes.values() for o in objs)

    @property
    def count(self) -> int:
        return sum(len(objs) for objs in self.shapes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "max_keys": self.max_keys,
            "shapes": {name: [asdict(o) for o in objs] for name, objs in self.shapes.items()},
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()))


def plan(shapes: tuple[Shape, ...], bucket: str, max_keys: int, seed: int = 5) -> Manifest:
    """Keys and target sizes, without any I/O (seeding records the exact sizes)."""
    rng = random.Random(seed)
    manifest = Manifest(bucket, max_keys=max_keys)
    for shape in shapes:
        manifest.shapes[shape.name] = [
            SeededObject(
                f"{shape.prefix}{shape.name}-{i:04d}.pdf", rng.randint(shape.low, shape.high)
            )
            for i in range(shape.count)
        ]
    return manifest


def seed_bucket(
    s3: Any,
    manifest: Manifest,
    make_pdf: Callable[[int, int], bytes],
    threads: int = 8,
) -> Manifest:
    """Upload every planned object (``make_pdf(size, seed)`` makes its bytes).

    Returns the manifest with the sizes actually written: a generator may
    only come close to the size asked, and archive checks compare exactly.
    """
    objects = [(name, o) for name, objs in manifest.shapes.items() for o in objs]

    def put(index_obj: tuple[int, tuple[str, SeededObject]]) -> tuple[str, SeededObject]:
        index, (name, obj) = index_obj
        body = make_pdf(obj.size, index)
        s3.put_object(Bucket=manifest.bucket, Key=obj.key, Body=body, ContentType="application/pdf")
        return name, SeededObject(obj.key, len(body))

    seeded = Manifest(manifest.bucket, {name: [] for name in manifest.shapes}, manifest.max_keys)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        # Iterating re-raises the first upload error here instead of dropping it.
        for name, obj in pool.map(put, enumerate(objects)):
            seeded.shapes[name].append(obj)
    return seeded
