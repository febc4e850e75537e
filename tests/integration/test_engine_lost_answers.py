"""An answer lost after S3 acted must not leave anything behind (found by the chaos run).

S3 creates a multipart upload, the answer is cut on its way back, botocore
retries, and S3 creates a second one: the first has an UploadId nobody
knows, so no abort ever names it. The engine must leave no upload for the
archive's key once the archive is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.engine import Destination, MiB, SourceObject, ZipOptions, build_zip
from tests.support.archive_check import verify_archive
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import body, download, open_uploads

pytestmark = pytest.mark.integration

OPTIONS = ZipOptions(range_size=1 * MiB, min_part_size=5 * MiB, budget_bytes=16 * MiB)


async def test_a_create_whose_answer_was_lost_leaves_no_upload(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any, tmp_path: Path
) -> None:
    objects = {f"f{i}.bin": body(4 * MiB, seed=i) for i in range(3)}  # several parts
    await put_objects(objects)
    cut = proxy.add(Fault("POST", path_contains="/out.zip", query_contains="uploads", cut_after=20))
    await build_zip(
        [SourceObject(bucket, k) for k in objects],
        Destination(bucket, "out.zip"),
        s3=proxied_s3,
        options=OPTIONS,
    )
    assert cut.hits == 1
    creates = [r for r in proxy.seen("POST", "/out.zip") if r.query.startswith("uploads")]
    assert len(creates) == 2  # S3 made two uploads; the engine knows only the second
    path = tmp_path / "archive.zip"
    await download(s3, bucket, "out.zip", path)
    verify_archive(path, objects)
    assert await open_uploads(s3, bucket) == []
