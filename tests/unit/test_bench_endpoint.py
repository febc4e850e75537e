"""The benchmark endpoint, its streaming ZIP verifier and the S3-like link.

The endpoint runs in this event loop on 127.0.0.1 and is spoken to over real
HTTP with the same aioboto3 client factory the engine uses. Archives are made
with Python's zipfile and zipstream-ng, so the verifier is checked against
writers other than our engine. No timing is asserted here.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import zipstream
from botocore.exceptions import ClientError

from loadtest.bench_endpoint import names_digest, read_content, start_endpoint
from loadtest.bench_endpoint.awschunked import AwsChunkedDecoder
from loadtest.bench_endpoint.content import PERIOD, content_crc32
from loadtest.bench_endpoint.store import seed_keys
from loadtest.bench_endpoint.zipcheck import ZipChecker
from loadtest.s3_link_proxy import LinkSpec, start_proxy
from service.aws import AwsSettings, aws_client
from service.units import MiB

SRC = "src"
OUT = "out"


class Bench:
    """The running endpoint: its URL, an S3 client and a plain HTTP session."""

    def __init__(self, url: str, s3: Any, http: aiohttp.ClientSession) -> None:
        self.url, self.s3, self.http = url, s3, http

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.url}/_bench/{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def seed(self, prefix: str, count: int, size: int, bucket: str = SRC) -> list[str]:
        body = {"bucket": bucket, "prefix": prefix, "count": count, "size": size}
        await self.control("PUT", "seed", body)
        return seed_keys(prefix, count)

    async def verify(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("GET", f"verify/{OUT}/{key}")
        return result

    async def multipart(self, key: str, data: bytes, part: int, order: Iterable[int]) -> None:
        """Upload ``data`` in parts of ``part`` bytes, sending them in ``order``."""
        s3 = self.s3
        upload_id = (await s3.create_multipart_upload(Bucket=OUT, Key=key))["UploadId"]
        chunks = [data[i : i + part] for i in range(0, len(data), part)]
        etags: dict[int, str] = {}
        for index in order:
            resp = await s3.upload_part(
                Bucket=OUT, Key=key, UploadId=upload_id, PartNumber=index + 1, Body=chunks[index]
            )
            etags[index + 1] = resp["ETag"]
        await s3.complete_multipart_upload(
            Bucket=OUT,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
        )


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def bench() -> AsyncIterator[Bench]:
    runner, port = await start_endpoint()
    url = f"http://127.0.0.1:{port}"
    settings = AwsSettings(
        endpoint_url=url, region="us-east-1", access_key_id="bench", secret_access_key="bench"
    )
    try:
        async with aws_client("s3", settings) as s3, aiohttp.ClientSession() as http:
            b = Bench(url, s3, http)
            await s3.create_bucket(Bucket=OUT)
            yield b
    finally:
        await runner.cleanup()


def zipstream_archive(files: dict[str, bytes]) -> bytes:
    zs = zipstream.ZipStream(sized=True)
    for name, data in files.items():
        zs.add(iter([data]), name, size=len(data))
    return b"".join(zs)


def sources(keys: Iterable[str], size: int) -> dict[str, bytes]:
    return {k: read_content(k, 0, size) for k in keys}


def check(data: bytes, files: dict[str, bytes] | None, step: int = 65_537) -> Any:
    """Feed ``data`` to a verifier in odd-sized chunks; report."""
    expect = None
    if files is not None:
        table = {n: (len(d), zlib.crc32(d)) for n, d in files.items()}
        expect = table.get
    checker = ZipChecker(expect)
    for i in range(0, len(data), step):
        checker.feed(data[i : i + step])
    return checker.finish()


# -- deterministic content -------------------------------------------------------------


def test_content_is_a_function_of_key_and_offset() -> None:
    whole = read_content("a/x.bin", 0, 3 * MiB)
    assert read_content("a/x.bin", 12_345, 2 * MiB + 7) == whole[12_345 : 2 * MiB + 7]
    assert read_content("a/y.bin", 0, 3 * MiB) != whole
    assert content_crc32("a/x.bin", 3 * MiB) == zlib.crc32(whole)


def test_content_does_not_repeat_at_whole_mib_shifts() -> None:
    """A reader that fetches the wrong 1/8 MiB range must see different bytes."""
    whole = read_content("k", 0, 20 * MiB)
    for shift in (MiB, 8 * MiB):
        assert whole[100 : 100 + 4096] != whole[100 + shift : 100 + shift + 4096]
    assert whole[100 : 100 + 4096] == whole[100 + PERIOD : 100 + PERIOD + 4096]
    assert whole.count(0) < len(whole) // 100


def test_aws_chunked_framing_is_undone_at_any_split() -> None:
    raw = b"5;chunk-signature=ab\r\nhello\r\n3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n"
    for step in (1, 2, 5, len(raw)):
        decoder = AwsChunkedDecoder()
        out = b"".join(b"".join(decoder.feed(raw[i : i + step])) for i in range(0, len(raw), step))
        assert out == b"helloabc" and decoder.done


# -- the verifier on its own -----------------------------------------------------------


def test_verifier_accepts_zipfile_and_zipstream_archives() -> None:
    files = sources([f"d/{i}.bin" for i in range(12)], 70_001)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    for archive in (buf.getvalue(), zipstream_archive(files)):
        report = check(archive, files)
        assert report.zip_ok, report.errors
        assert report.entries == 12
        assert report.length == len(archive)
        assert report.names_sha256 == names_digest(list(files))


def test_verifier_accepts_deflate_with_data_descriptors_and_zip64_extras() -> None:
    files = sources([f"z/{i}.bin" for i in range(4)], 300_000)

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.data += b
            return len(b)

    out = Unseekable()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, (name, data) in enumerate(files.items()):
            with zf.open(name, "w", force_zip64=i % 2 == 0) as f:
                f.write(data)
    report = check(bytes(out.data), files, step=1000)
    assert report.zip_ok, report.errors
    assert report.entries == 4


def test_verifier_finds_stored_entry_ends_without_knowing_sizes() -> None:
    """No source table: data descriptors are located by their CRC and length."""
    files = sources([f"u/{i}.bin" for i in range(5)], 123_457)
    report = check(zipstream_archive(files), None, step=4097)
    assert report.zip_ok, report.errors
    assert report.entries == 5


def test_verifier_rejects_one_flipped_byte() -> None:
    files = sources([f"f/{i}.bin" for i in range(3)], 200_000)
    archive = bytearray(zipstream_archive(files))
    archive[250_000] ^= 0x01  # inside the second entry's data
    report = check(bytes(archive), files)
    assert not report.zip_ok
    assert any("f/000001.bin" in e or "f/1.bin" in e for e in report.errors), report.errors


def test_verifier_rejects_swapped_content_and_reports_order() -> None:
    files = sources(["s/a.bin", "s/b.bin"], 50_000)
    swapped = {"s/a.bin": files["s/b.bin"], "s/b.bin": files["s/a.bin"]}
    report = check(zipstream_archive(swapped), files)
    assert not report.zip_ok
    assert any("content differs from its source" in e for e in report.errors)

    reordered = {"s/b.bin": files["s/b.bin"], "s/a.bin": files["s/a.bin"]}
    report = check(zipstream_archive(reordered), files)
    assert report.zip_ok, report.errors  # each entry is right...
    assert report.names_sha256 != names_digest(["s/a.bin", "s/b.bin"])  # ...the order is not


def test_verifier_rejects_truncated_and_padded_archives() -> None:
    files = sources(["t/a.bin"], 10_000)
    archive = zipstream_archive(files)
    assert not check(archive[:-1], files).zip_ok
    assert not check(archive + b"\0", files).zip_ok
    assert not check(archive[:5000] + archive[5001:], files).zip_ok


def test_verifier_handles_zip64_end_records_at_65535_entries() -> None:
    zs = zipstream.ZipStream(sized=True)
    for i in range(65_535):
        zs.add(iter([b"x"]), f"{i}", size=1)
    archive = b"".join(zs)
    report = check(archive, None, step=1 << 20)
    assert report.zip_ok, report.errors
    assert report.entries == 65_535
    assert report.zip64


# -- the endpoint over HTTP ------------------------------------------------------------


async def test_head_ranged_get_and_if_match(bench: Bench) -> None:
    (key,) = await bench.seed("h/", 1, 3 * MiB + 5)
    head = await bench.s3.head_object(Bucket=SRC, Key=key)
    assert head["ContentLength"] == 3 * MiB + 5
    resp = await bench.s3.get_object(
        Bucket=SRC, Key=key, Range=f"bytes={MiB}-{2 * MiB}", IfMatch=head["ETag"]
    )
    assert resp["ContentRange"] == f"bytes {MiB}-{2 * MiB}/{3 * MiB + 5}"
    assert await resp["Body"].read() == read_content(key, MiB, 2 * MiB + 1)

    with pytest.raises(ClientError) as err:
        await bench.s3.get_object(Bucket=SRC, Key=key, IfMatch='"not-the-etag"')
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"

    await bench.control("POST", f"touch/{SRC}/{key}")
    with pytest.raises(ClientError) as err:
        await bench.s3.get_object(Bucket=SRC, Key=key, Range="bytes=0-9", IfMatch=head["ETag"])
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


async def test_missing_key_and_bucket(bench: Bench) -> None:
    with pytest.raises(ClientError) as err:
        await bench.s3.get_object(Bucket=SRC, Key="no/such.bin")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as err:
        await bench.s3.head_object(Bucket=SRC, Key="no/such.bin")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as err:
        await bench.s3.head_object(Bucket="no-such-bucket", Key="k")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_list_objects_v2_pages_and_delimiter(bench: Bench) -> None:
    keys = await bench.seed("list/a/", 2500, 10)
    await bench.seed("list/b/", 3, 10)
    paginator = bench.s3.get_paginator("list_objects_v2")
    listed = [
        obj["Key"]
        async for page in paginator.paginate(Bucket=SRC, Prefix="list/a/")
        for obj in page.get("Contents", [])
    ]
    assert listed == keys
    top = await bench.s3.list_objects_v2(Bucket=SRC, Prefix="list/", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["list/a/", "list/b/"]
    assert "Contents" not in top


async def test_multipart_zip_out_of_order_is_verified(bench: Bench) -> None:
    files = sources(await bench.seed("mp/", 4, 3 * MiB), 3 * MiB)
    archive = zipstream_archive(files)
    await bench.multipart("mp-ok.zip", archive, 5 * MiB, order=[1, 2, 0])
    result = await bench.verify("mp-ok.zip")
    assert result["zip_ok"], result["errors"]
    assert result["entries"] == 4
    assert result["length"] == len(archive)
    assert result["names_sha256"] == names_digest(list(files))
    head = await bench.s3.head_object(Bucket=OUT, Key="mp-ok.zip")
    assert head["ContentLength"] == len(archive)


async def test_multipart_zip_with_gaps_in_part_numbers(bench: Bench) -> None:
    """S3 allows part numbers 1, 3, 7: the archive is their concatenation in that order."""
    files = sources(await bench.seed("gap/", 4, 3 * MiB), 3 * MiB)
    archive = zipstream_archive(files)
    s3 = bench.s3
    upload_id = (await s3.create_multipart_upload(Bucket=OUT, Key="gap.zip"))["UploadId"]
    numbers = [7, 3, 1]  # uploaded last part first
    pieces = {1: archive[: 5 * MiB], 3: archive[5 * MiB : 10 * MiB], 7: archive[10 * MiB :]}
    etags = {}
    for n in numbers:
        resp = await s3.upload_part(
            Bucket=OUT, Key="gap.zip", UploadId=upload_id, PartNumber=n, Body=pieces[n]
        )
        etags[n] = resp["ETag"]
    await s3.complete_multipart_upload(
        Bucket=OUT,
        Key="gap.zip",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
    )
    result = await bench.verify("gap.zip")
    assert result["zip_ok"], result["errors"]
    assert result["entries"] == 4


async def test_multipart_raw_object_crc_is_combined_from_parts(bench: Bench) -> None:
    data = read_content("raw/source", 0, 12 * MiB + 5)
    await bench.multipart("raw.bin", data, 5 * MiB, order=[2, 0, 1])
    result = await bench.verify("raw.bin")
    assert result["length"] == len(data)
    assert result["crc32"] == f"{zlib.crc32(data):08x}"
    assert result["zip_ok"] is None  # not a .zip key: checksummed only


async def test_multipart_zip_with_a_flipped_byte_fails(bench: Bench) -> None:
    files = sources(await bench.seed("mpbad/", 4, 3 * MiB), 3 * MiB)
    archive = bytearray(zipstream_archive(files))
    archive[7 * MiB] ^= 0x80
    await bench.multipart("mp-bad.zip", bytes(archive), 5 * MiB, order=[0, 2, 1])
    result = await bench.verify("mp-bad.zip")
    assert result["zip_ok"] is False
    assert result["errors"]


async def test_put_object_zip_in_the_wrong_order_is_reported(bench: Bench) -> None:
    keys = await bench.seed("order/", 3, 1000)
    files = sources(reversed(keys), 1000)
    await bench.s3.put_object(Bucket=OUT, Key="order.zip", Body=zipstream_archive(files))
    result = await bench.verify("order.zip")
    assert result["zip_ok"], result["errors"]
    assert result["names_sha256"] != names_digest(keys)


async def test_archive_of_unknown_entries_fails(bench: Bench) -> None:
    archive = zipstream_archive({"not-a-source.bin": b"hello"})
    await bench.s3.put_object(Bucket=OUT, Key="unknown.zip", Body=archive)
    result = await bench.verify("unknown.zip")
    assert result["zip_ok"] is False
    assert result["unknown_entries"] == 1


async def test_multipart_rules_small_parts_and_abort(bench: Bench) -> None:
    s3 = bench.s3
    upload_id = (await s3.create_multipart_upload(Bucket=OUT, Key="small.bin"))["UploadId"]
    parts = []
    for n in (1, 2):
        resp = await s3.upload_part(
            Bucket=OUT, Key="small.bin", UploadId=upload_id, PartNumber=n, Body=b"x" * 1000
        )
        parts.append({"PartNumber": n, "ETag": resp["ETag"]})
    with pytest.raises(ClientError) as err:
        await s3.complete_multipart_upload(
            Bucket=OUT, Key="small.bin", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    assert err.value.response["Error"]["Code"] == "EntityTooSmall"
    listed = await s3.list_multipart_uploads(Bucket=OUT, Prefix="small.bin")
    assert [u["UploadId"] for u in listed.get("Uploads", [])] == [upload_id]
    await s3.abort_multipart_upload(Bucket=OUT, Key="small.bin", UploadId=upload_id)
    with pytest.raises(ClientError) as err:
        await s3.upload_part(
            Bucket=OUT, Key="small.bin", UploadId=upload_id, PartNumber=3, Body=b"x"
        )
    assert err.value.response["Error"]["Code"] == "NoSuchUpload"


async def test_check_copies_compares_with_sources(bench: Bench) -> None:
    keys = await bench.seed("cp/", 3, 4000)
    for key in keys[:2]:
        await bench.s3.put_object(Bucket=OUT, Key="copy/" + key, Body=read_content(key, 0, 4000))
    await bench.s3.put_object(Bucket=OUT, Key="copy/" + keys[2], Body=b"y" * 4000)
    spec = {"src_bucket": SRC, "src_prefix": "cp/", "dst_bucket": OUT, "dst_prefix": "copy/cp/"}
    result = await bench.control("POST", "check_copies", spec)
    assert result["ok"] == 2
    assert result["error_count"] == 1
    assert keys[2] in result["errors"][0]


async def test_default_boto3_checksums_aws_chunked_are_decoded(bench: Bench) -> None:
    """A sync boto3 client with its default checksum settings sends aws-chunked bodies."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    (key,) = await bench.seed("chunked/", 1, 100_000)
    body = read_content(key, 0, 100_000)

    def put() -> None:
        client = boto3.client(
            "s3",
            endpoint_url=bench.url,
            region_name="us-east-1",
            aws_access_key_id="a",
            aws_secret_access_key="b",
            config=Config(s3={"addressing_style": "path"}),
        )
        client.put_object(Bucket=OUT, Key="chunked/" + key, Body=io.BytesIO(body))

    await asyncio.to_thread(put)
    spec = {
        "src_bucket": SRC,
        "src_prefix": "chunked/",
        "dst_bucket": OUT,
        "dst_prefix": "chunked/chunked/",
    }
    result = await bench.control("POST", "check_copies", spec)
    assert (result["ok"], result["error_count"]) == (1, 0), result


async def test_link_proxy_forwards_bytes_unchanged(bench: Bench) -> None:
    (key,) = await bench.seed("link/", 1, 2 * MiB)
    port = int(bench.url.rsplit(":", 1)[1])
    proxy = await start_proxy("127.0.0.1", port, spec=LinkSpec(delay_s=0.001, rate_bps=1e9))
    try:
        settings = AwsSettings(
            endpoint_url=f"http://127.0.0.1:{proxy.port}", access_key_id="a", secret_access_key="b"
        )
        async with aws_client("s3", settings) as s3:
            resp = await s3.get_object(Bucket=SRC, Key=key, Range="bytes=5-1500000")
            assert await resp["Body"].read() == read_content(key, 5, 1_500_001)
            await s3.put_object(
                Bucket=OUT, Key="via-link/" + key, Body=read_content(key, 0, 2 * MiB)
            )
        assert proxy.connections >= 1
    finally:
        await proxy.close()
    spec = {
        "src_bucket": SRC,
        "src_prefix": "link/",
        "dst_bucket": OUT,
        "dst_prefix": "via-link/link/",
    }
    result = await bench.control("POST", "check_copies", spec)
    assert result["ok"] == 1, result


# -- S3's additional checksums, enforced as S3 does ------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
# moto 5 stores a supplied x-amz-checksum-* value without checking it, so these
# rules are proved here, against the endpoint the benchmark measures with.


def b64crc(data: bytes) -> str:
    import base64

    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def open_upload_ids(bench: Bench) -> set[str]:
    resp = await bench.s3.list_multipart_uploads(Bucket=OUT)
    return {u["UploadId"] for u in resp.get("Uploads", [])}


async def test_wrong_part_and_full_object_crc32_are_refused(bench: Bench) -> None:
    key = "checksums/raw.bin"
    parts = [read_content("cs-a", 0, 5 * MiB), read_content("cs-b", 0, 123)]
    upload_id = (
        await bench.s3.create_multipart_upload(
            Bucket=OUT, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
        )
    )["UploadId"]
    with pytest.raises(ClientError, match="BadDigest"):
        await bench.s3.upload_part(
            Bucket=OUT,
            Key=key,
            UploadId=upload_id,
            PartNumber=1,
            Body=parts[0],
            ChecksumCRC32=b64crc(parts[0][:-1] + b"?"),
        )
    with pytest.raises(ClientError, match="InvalidRequest"):  # a part without its CRC
        await bench.s3.upload_part(
            Bucket=OUT, Key=key, UploadId=upload_id, PartNumber=1, Body=parts[0]
        )
    listed = []
    for number, body in enumerate(parts, start=1):
        resp = await bench.s3.upload_part(
            Bucket=OUT,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumCRC32=b64crc(body),
        )
        listed.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumCRC32": b64crc(body)})
    whole = b"".join(parts)
    with pytest.raises(ClientError, match="BadDigest"):
        await bench.s3.complete_multipart_upload(
            Bucket=OUT,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": listed},
            ChecksumCRC32=b64crc(whole[::-1]),
            ChecksumType="FULL_OBJECT",
        )
    assert upload_id in await open_upload_ids(bench), "a refused Complete leaves the upload"
    await bench.s3.complete_multipart_upload(
        Bucket=OUT,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": listed},
        ChecksumCRC32=b64crc(whole),
        ChecksumType="FULL_OBJECT",
    )
    report = await bench.verify(key)
    assert report["checksum"] == "CRC32 FULL_OBJECT verified"
    assert report["full_crc32"] == f"{zlib.crc32(whole):08x}" == report["crc32"]


async def test_put_object_with_a_wrong_crc32_is_refused(bench: Bench) -> None:
    body = read_content("cs-put", 0, 70_000)
    with pytest.raises(ClientError, match="BadDigest"):
        await bench.s3.put_object(
            Bucket=OUT, Key="checksums/put.bin", Body=body, ChecksumCRC32=b64crc(body + b"x")
        )
    await bench.s3.put_object(
        Bucket=OUT, Key="checksums/put.bin", Body=body, ChecksumCRC32=b64crc(body)
    )
    assert (await bench.verify("checksums/put.bin"))["checksum"] == "CRC32 verified"


class Corrupting:
    """An S3 client whose part bodies change after the writer took their CRC
    (a memory or transit fault), or whose Complete names a wrong archive CRC."""

    def __init__(self, s3: Any, *, flip_part: int = 0, wrong_full: bool = False) -> None:
        self._s3, self.flip_part, self.wrong_full = s3, flip_part, wrong_full

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    async def upload_part(self, **kwargs: Any) -> Any:
        if kwargs["PartNumber"] == self.flip_part:
            view = kwargs["Body"]._view  # the part buffer itself, after its CRC was taken
            view[100] ^= 0x01
        return await self._s3.upload_part(**kwargs)

    async def complete_multipart_upload(self, **kwargs: Any) -> Any:
        if self.wrong_full:
            kwargs["ChecksumCRC32"] = b64crc(b"not the archive")
        return await self._s3.complete_multipart_upload(**kwargs)


@pytest.mark.parametrize(("flip_part", "wrong_full"), [(2, False), (0, True)])
async def test_engine_uploads_with_a_bad_crc_are_refused_and_aborted(
    bench: Bench, flip_part: int, wrong_full: bool
) -> None:
    from service.engine.budget import ByteSemaphore
    from service.engine.models import Destination
    from service.engine.uploader import PartWriter

    key = f"checksums/engine-{flip_part}-{wrong_full}.zip"
    before = await open_upload_ids(bench)
    writer = PartWriter(
        Corrupting(bench.s3, flip_part=flip_part, wrong_full=wrong_full),
        Destination(OUT, key),
        part_size=5 * MiB,
        budget=ByteSemaphore(15 * MiB),
        content_type="application/zip",
        expected_bytes=12 * MiB,
    )
    payload = read_content("cs-engine", 0, 12 * MiB)
    with pytest.raises(ClientError, match="BadDigest"):
        for start in range(0, len(payload), MiB):
            await writer.write(payload[start : start + MiB])
        await writer.finish()
    await writer.abort()
    assert await open_upload_ids(bench) == before, "the refused upload was aborted"
    async with bench.http.get(f"{bench.url}/_bench/verify/{OUT}/{key}") as resp:
        assert resp.status == 404, "no object was written"


async def test_engine_upload_with_good_crcs_is_verified_by_the_endpoint(bench: Bench) -> None:
    from service.engine.budget import ByteSemaphore
    from service.engine.models import Destination
    from service.engine.uploader import PartWriter

    key = "checksums/engine-good.bin"
    payload = read_content("cs-good", 0, 11 * MiB + 5)
    writer = PartWriter(
        bench.s3,
        Destination(OUT, key),
        part_size=5 * MiB,
        budget=ByteSemaphore(15 * MiB),
        content_type="application/zip",
        expected_bytes=len(payload),
    )
    await writer.write(payload)
    result = await writer.finish()
    report = await bench.verify(key)
    assert report["checksum"] == "CRC32 FULL_OBJECT verified"
    assert report["full_crc32"] == f"{zlib.crc32(payload):08x}" == f"{result.crc32:08x}"


# -- what goes on the wire: precomputed CRC, zero-copy body, signing by scheme ---------


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_parts_go_unframed_zero_copy_and_unsigned_only_over_tls(
    bench: Bench, scheme: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTPS the payload is not hashed (UNSIGNED-PAYLOAD: the CRC-32 that S3
    checks and TLS protect it); over HTTP it is signed. Either way botocore
    computes no checksum of its own, so it sends our PartBody as it is, not
    re-framed as aws-chunked (which would copy every part)."""
    import ssl

    import trustme

    from loadtest.bench_endpoint.server import add_tls_port, start_endpoint
    from service.engine.budget import ByteSemaphore
    from service.engine.models import Destination
    from service.engine.uploader import PartBody, PartWriter

    runner, port = await start_endpoint()
    try:
        url = f"http://127.0.0.1:{port}"
        if scheme == "https":
            ca = trustme.CA()
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1").configure_cert(tls)
            ca_file = tmp_path / "ca.pem"
            ca.cert_pem.write_to_path(str(ca_file))
            monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
            url = f"https://127.0.0.1:{await add_tls_port(runner, tls)}"
        settings = AwsSettings(
            endpoint_url=url, region="us-east-1", access_key_id="b", secret_access_key="b"
        )
        seen: list[tuple[dict[str, str], object]] = []

        def capture(request: Any, **_: Any) -> None:
            headers = {
                k.lower(): (v.decode() if isinstance(v, bytes) else v)
                for k, v in request.headers.items()
            }
            seen.append((headers, request.body))

        async with aws_client("s3", settings) as s3:
            await s3.create_bucket(Bucket=OUT)
            s3.meta.events.register("before-send.s3.UploadPart", capture)
            writer = PartWriter(
                s3,
                Destination(OUT, f"wire/{scheme}.bin"),
                part_size=5 * MiB,
                budget=ByteSemaphore(10 * MiB),
                content_type="application/zip",
                expected_bytes=6 * MiB,
            )
            await writer.write(read_content("wire", 0, 6 * MiB))
            await writer.finish()
        assert len(seen) == 2
        for headers, body in seen:
            assert isinstance(body, PartBody), type(body)
            assert "aws-chunked" not in headers.get("content-encoding", "")
            assert "x-amz-checksum-crc32" in headers
            signed = headers["x-amz-content-sha256"]
            if scheme == "https":
                assert signed == "UNSIGNED-PAYLOAD"
            else:
                assert len(signed) == 64 and signed != "UNSIGNED-PAYLOAD"
    finally:
        await runner.cleanup()


async def test_fanned_out_archive_is_verified_by_the_endpoint(bench: Bench) -> None:
    """Three range builds on one upload (docs/resume.md, "Fan-out"): the endpoint,
    which enforces S3's part and full-object CRC-32 checks (moto does not),
    accepts the completion and finds every entry's CRC right."""
    from service.engine import Destination, SourceObject, ZipOptions, build_zip

    keys = await bench.seed("fanout/", 5, 4 * MiB + 333)
    options = ZipOptions(
        budget_bytes=32 * MiB,
        min_part_size=5 * MiB,
        range_size=1 * MiB,
        workers=3,
        worker_min_bytes=1,
    )
    result = await build_zip(
        [SourceObject(SRC, k) for k in keys],
        Destination(OUT, "fanout/three.zip"),
        s3=bench.s3,
        options=options,
    )
    assert result.workers == 3
    report = await bench.verify("fanout/three.zip")
    assert report["checksum"] == "CRC32 FULL_OBJECT verified", report
    assert report["zip_ok"] and not report.get("errors"), report
    assert report["entries"] == 5
    assert report["length"] == result.archive_bytes


# -- what a resumed build needs: ListParts, its checkpoint read back, parts re-sent --------


async def test_list_parts_pages_and_matches_the_uploaded_parts(bench: Bench) -> None:
    key = "resume/listed.bin"
    upload_id = (
        await bench.s3.create_multipart_upload(
            Bucket=OUT, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
        )
    )["UploadId"]
    sent = {}
    for n in (1, 2, 3, 5):
        body = read_content(f"lp-{n}", 0, 1000 + n)
        resp = await bench.s3.upload_part(
            Bucket=OUT, Key=key, UploadId=upload_id, PartNumber=n, Body=body,
            ChecksumCRC32=b64crc(body),
        )  # fmt: skip
        sent[n] = (resp["ETag"], len(body), b64crc(body))
    listed = []
    marker = 0
    pages = 0
    while True:
        page = await bench.s3.list_parts(
            Bucket=OUT, Key=key, UploadId=upload_id, PartNumberMarker=marker, MaxParts=2
        )
        pages += 1
        listed += [
            (p["PartNumber"], p["ETag"], p["Size"], p["ChecksumCRC32"]) for p in page["Parts"]
        ]
        if not page["IsTruncated"]:
            break
        marker = page["NextPartNumberMarker"]
    assert pages == 2
    assert listed == [(n, *sent[n]) for n in sorted(sent)]
    await bench.s3.abort_multipart_upload(Bucket=OUT, Key=key, UploadId=upload_id)
    with pytest.raises(ClientError) as err:
        await bench.s3.list_parts(Bucket=OUT, Key=key, UploadId=upload_id)
    assert err.value.response["Error"]["Code"] == "NoSuchUpload"


async def test_a_small_object_is_read_back_and_a_large_one_is_not(bench: Bench) -> None:
    small = b"checkpoint\n" + bytes(range(256)) * 100
    await bench.s3.put_object(Bucket=OUT, Key="resume/a.zip.zipjobs-checkpoint", Body=small)
    got = await bench.s3.get_object(Bucket=OUT, Key="resume/a.zip.zipjobs-checkpoint")
    assert await got["Body"].read() == small
    ranged = await bench.s3.get_object(
        Bucket=OUT, Key="resume/a.zip.zipjobs-checkpoint", Range="bytes=11-20"
    )
    assert await ranged["Body"].read() == small[11:21]
    await bench.s3.put_object(Bucket=OUT, Key="resume/big.bin", Body=b"x" * (8 * MiB + 1))
    with pytest.raises(ClientError) as err:
        await bench.s3.get_object(Bucket=OUT, Key="resume/big.bin")
    assert err.value.response["Error"]["Code"] == "NotImplemented"


async def _verified_part_sent_again(bench: Bench, key: str, flip: bool) -> dict[str, Any]:
    """An archive whose part 1 is uploaded, verified, then uploaded again
    (the same bytes, or with one byte flipped)."""
    data = zipstream_archive(sources(await bench.seed(f"{key}/", 3, 3 * MiB), 3 * MiB))
    size = 5 * MiB
    chunks = [data[:size], data[size:]]
    again = bytearray(chunks[0])
    if flip:
        again[100] ^= 1
    upload_id = (
        await bench.s3.create_multipart_upload(
            Bucket=OUT, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
        )
    )["UploadId"]
    etags = {}
    for n, body in ((1, chunks[0]), (2, chunks[1]), (1, bytes(again))):
        resp = await bench.s3.upload_part(
            Bucket=OUT, Key=key, UploadId=upload_id, PartNumber=n, Body=body,
            ChecksumCRC32=b64crc(body),
        )  # fmt: skip
        etags[n] = resp["ETag"]
    await bench.s3.complete_multipart_upload(
        Bucket=OUT,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [
                {"PartNumber": n, "ETag": etags[n], "ChecksumCRC32": b64crc(c)}
                for n, c in ((1, bytes(again)), (2, chunks[1]))
            ]
        },
        ChecksumCRC32=b64crc(bytes(again) + chunks[1]),
        ChecksumType="FULL_OBJECT",
    )
    return await bench.verify(key)


async def test_a_verified_part_sent_again_with_the_same_bytes_is_accepted(bench: Bench) -> None:
    """A resumed build re-sends the parts past its checkpoint (S3 allows it)."""
    report = await _verified_part_sent_again(bench, "again-same.zip", flip=False)
    assert report["zip_ok"] and not report["errors"], report


async def test_a_verified_part_sent_again_with_other_bytes_is_flagged(bench: Bench) -> None:
    report = await _verified_part_sent_again(bench, "again-other.zip", flip=True)
    assert report["zip_ok"] is False
    assert "part 1 re-uploaded after it was verified" in report["errors"]


async def test_relative_names_let_a_prefix_job_s_archive_verify(bench: Bench) -> None:
    """A prefix job names entries relative to the prefix's last folder."""
    await bench.control(
        "PUT",
        "seed",
        {"bucket": SRC, "prefix": "deep/dir/", "count": 2, "size": 1000, "relative_names": True},
    )
    files = {
        k.removeprefix("deep/dir/"): read_content(k, 0, 1000) for k in seed_keys("deep/dir/", 2)
    }
    await bench.s3.put_object(Bucket=OUT, Key="relative.zip", Body=zipstream_archive(files))
    report = await bench.verify("relative.zip")
    assert report["zip_ok"] and report["unknown_entries"] == 0, report


async def test_a_resumed_engine_build_is_verified_by_the_endpoint(bench: Bench) -> None:
    """The engine stopped after its first checkpoint, then run again: it resumes
    (ListParts, the checkpoint read back) and the endpoint verifies the archive."""
    from service.engine import Destination, SourceObject, ZipOptions, build_zip

    keys = await bench.seed("resumed/", 6, 4 * MiB + 777)
    sources_ = [SourceObject(SRC, k) for k in keys]
    dest = Destination(OUT, "resumed/archive.zip")
    options = ZipOptions(
        budget_bytes=16 * MiB,
        min_part_size=5 * MiB,
        range_size=1 * MiB,
        resume=True,
        checkpoint_interval_s=0,
        progress_interval_s=0,
    )
    stop = asyncio.Event()

    def on_progress(p: Any) -> None:
        if p.bytes_done >= 12 * MiB:
            stop.set()

    first = asyncio.create_task(
        build_zip(sources_, dest, s3=bench.s3, options=options, on_progress=on_progress)
    )
    await asyncio.wait([first, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    assert not first.done()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    seen: list[int] = []
    result = await build_zip(
        sources_,
        dest,
        s3=bench.s3,
        options=options,
        on_progress=lambda p: seen.append(p.bytes_done),
    )
    assert result.resumed_from > 0
    # Progress counts from the archive's start, not from this run's first byte:
    # a resumed job's progress must not fall back towards zero. The source bytes
    # before the checkpoint are its archive offset less at most ~200 header and
    # descriptor bytes per entry.
    assert seen and min(seen) >= result.resumed_from - 200 * len(keys), (seen[:3], result)
    assert seen == sorted(seen)
    report = await bench.verify("resumed/archive.zip")
    assert report["zip_ok"] and not report["errors"], report
    assert report["checksum"] == "CRC32 FULL_OBJECT verified"
    assert report["entries"] == 6 and report["length"] == result.archive_bytes
    left = await bench.s3.list_multipart_uploads(Bucket=OUT, Prefix="resumed/")
    assert not left.get("Uploads")
    with pytest.raises(ClientError):
        await bench.s3.head_object(Bucket=OUT, Key="resumed/archive.zip.zipjobs-checkpoint")
