"""What the benchmark endpoint knows: virtual sources, open uploads, written objects.

No bytes are stored. A source is (key, size, version); its content comes from
``content.py``. A written object is its length, CRC-32 and, for keys ending
in ``.zip``, the verifier's report.
"""

from __future__ import annotations

import bisect
import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Any

from service.engine.crc import crc32_combine

from ..bench_keys import seed_keys
from .content import content_crc32, etag_for
from .zipcheck import Reorder, ZipChecker, ZipReport

S3_MIN_PART = 5 * 1024 * 1024
# A non-.zip PutObject up to this size keeps its bytes so it can be read back:
# the engine's resume checkpoint (about 50 bytes per part plus 4 per entry,
# ~0.6 MB at 9,000 parts and 20,000 entries) is written and read by the job.
KEEP_BYTES_MAX = 8 * 1024 * 1024
LAST_MODIFIED = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


class S3Error(Exception):
    """An error the endpoint answers with S3's XML error shape."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


@dataclass(slots=True)
class VirtualObject:
    """A source object: content is a pure function of (key, version)."""

    key: str
    size: int
    version: int = 0

    @property
    def etag(self) -> str:
        return etag_for(self.key, self.size, self.version)

    def crc32(self) -> int:
        return content_crc32(self.key, self.size, self.version)


@dataclass(slots=True)
class WrittenObject:
    """An uploaded object; its bytes were checksummed and dropped."""

    key: str
    length: int
    crc32: int | None  # None for .zip keys: their entries are checked instead (one CRC pass)
    etag: str
    parts: int
    report: ZipReport | None = None
    # What S3-style checksum the client sent and the endpoint checked, e.g.
    # "CRC32 FULL_OBJECT verified"; None when the client sent none.
    checksum: str | None = None
    full_crc32: int | None = None
    data: bytes | None = None  # kept for small non-.zip objects only (KEEP_BYTES_MAX)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "length": self.length,
            "crc32": None if self.crc32 is None else f"{self.crc32:08x}",
            "parts": self.parts,
            "etag": self.etag,
            "checksum": self.checksum,
            "full_crc32": None if self.full_crc32 is None else f"{self.full_crc32:08x}",
            "zip_ok": None,
            "entries": None,
            "errors": [],
        }
        if self.report is not None:
            out.update(self.report.as_json())
            out["length"] = self.length  # the bytes S3 would hold, not what was parsed
            if self.report.length != self.length:
                out["zip_ok"] = False
                out["errors"] = [
                    *out["errors"],
                    f"parsed {self.report.length} bytes of {self.length}",
                ]
        return out


def is_zip_key(key: str) -> bool:
    """Only ``.zip`` keys are parsed as archives; other uploads are checksummed only."""
    return key.lower().endswith(".zip")


@dataclass(slots=True)
class Upload:
    """One multipart upload in progress.

    A ``.zip`` upload keeps each part's chunks until the verifier has read
    them in order; its parts get no CRC of their own (the verifier's CRC of
    every entry is the check), so the endpoint spends one CRC pass per byte
    on an archive, as it does on a plain copy.
    """

    bucket: str
    key: str
    upload_id: str
    parts: dict[int, tuple[int | None, int]] = field(default_factory=dict)  # n -> (crc, len)
    checker: ZipChecker | None = None
    reorder: Reorder = field(default_factory=Reorder)
    problems: list[str] = field(default_factory=list)
    # S3's additional checksums (CreateMultipartUpload's x-amz-checksum-*):
    # the algorithm and type asked for, and each part's CRC-32 as verified.
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    part_crcs: dict[int, int] = field(default_factory=dict)

    def add_part(
        self,
        number: int,
        crc: int | None,
        length: int,
        chunks: list[bytes] | None,
        same_as_before: bool = False,
    ) -> str:
        """Record a part; a ``.zip`` part's chunks go to the verifier in part order.

        ``same_as_before``: the client sent this part's CRC-32 both times, the
        endpoint checked both bodies against it, and the two CRCs and lengths
        match. S3 lets a part be uploaded again (a resumed build re-sends the
        parts past its checkpoint); identical bytes leave the archive as verified.
        """
        if number in self.parts and self.checker is not None and number < self.reorder.next_part:
            if same_as_before and self.parts[number][1] == length:
                return part_etag(number, crc, length)
            # Already parsed: a retry cannot be re-verified; flag it.
            self.problems.append(f"part {number} re-uploaded after it was verified")
            return part_etag(number, crc, length)
        self.parts[number] = (crc, length)
        if self.checker is not None and chunks is not None:
            for part in self.reorder.add(number, chunks, length):
                for chunk in part:
                    self.checker.feed(chunk)
        return part_etag(number, crc, length)


def part_etag(number: int, crc: int | None, length: int) -> str:
    """Cheap and content-derived where a CRC exists (MD5 of every part would cost CPU)."""
    if crc is None:
        return f'"p{number:05d}{length:016x}"'
    return f'"{crc:08x}{length:016x}"'


class Store:
    """All endpoint state; the aiohttp handlers are thin wrappers around it."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, VirtualObject]] = {}
        self._sorted: dict[str, list[str]] = {}
        self.by_name: dict[str, VirtualObject] = {}
        self.written: dict[tuple[str, str], WrittenObject] = {}
        self.uploads: dict[str, Upload] = {}
        self.aborted = 0
        self.stats: dict[str, int] = {}

    # -- buckets and sources ----------------------------------------------------

    def create_bucket(self, bucket: str) -> None:
        self.buckets.setdefault(bucket, {})

    def bucket(self, bucket: str) -> dict[str, VirtualObject]:
        try:
            return self.buckets[bucket]
        except KeyError:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist") from None

    def seed(
        self,
        bucket: str,
        prefix: str,
        count: int,
        size: int,
        width: int = 6,
        relative_names: bool = False,
    ) -> list[str]:
        """Register ``count`` objects ``{prefix}{i:0{width}d}.bin`` of ``size`` bytes.

        ``relative_names``: archive entries may also be named relative to the
        prefix's last folder, as a prefix job names them (``a/b/000001.bin`` in
        ``a/b/`` is ``000001.bin``), so the verifier knows which source each is.
        """
        self.create_bucket(bucket)
        keys = seed_keys(prefix, count, width)
        objects = self.buckets[bucket]
        cut = prefix.rfind("/") + 1 if relative_names else 0
        for key in keys:
            obj = VirtualObject(key, size)
            objects[key] = obj
            self.by_name[key] = obj
            if cut:
                self.by_name[key[cut:]] = obj
        self._sorted.pop(bucket, None)
        return keys

    def touch(self, bucket: str, key: str) -> VirtualObject:
        """A new version of a source: new content, new ETag (tests If-Match)."""
        obj = self.source(bucket, key)
        obj.version += 1
        return obj

    def delete_source(self, bucket: str, key: str) -> None:
        obj = self.bucket(bucket).pop(key, None)
        self.written.pop((bucket, key), None)
        if obj is not None:
            self._sorted.pop(bucket, None)
            if self.by_name.get(key) is obj:
                del self.by_name[key]

    def source(self, bucket: str, key: str) -> VirtualObject:
        obj = self.bucket(bucket).get(key)
        if obj is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return obj

    def expect(self, name: str) -> tuple[int, int] | None:
        """Size and CRC of the source an archive entry named ``name`` should hold."""
        obj = self.by_name.get(name)
        return None if obj is None else (obj.size, obj.crc32())

    def sorted_keys(self, bucket: str) -> list[str]:
        keys = self._sorted.get(bucket)
        if keys is None:
            keys = self._sorted[bucket] = sorted(self.bucket(bucket))
        return keys

    def list_keys(
        self, bucket: str, prefix: str, delimiter: str, start_after: str, max_keys: int
    ) -> tuple[list[VirtualObject], list[str], str | None]:
        """(objects, common prefixes, next start key or None)."""
        keys = self.sorted_keys(bucket)
        objects = self.buckets[bucket]
        at = bisect.bisect_right(keys, start_after) if start_after else 0
        at = max(at, bisect.bisect_left(keys, prefix))
        contents: list[VirtualObject] = []
        prefixes: list[str] = []
        last = ""
        while at < len(keys) and keys[at].startswith(prefix):
            if len(contents) + len(prefixes) >= max_keys:
                return contents, prefixes, last
            key = keys[at]
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                prefixes.append(common)
                last = common + "\U0010ffff"  # skip everything under it
                at = bisect.bisect_right(keys, last)
                continue
            contents.append(objects[key])
            last = key
            at += 1
        return contents, prefixes, None

    # -- writes -------------------------------------------------------------------

    def put_object(
        self, bucket: str, key: str, length: int, crc: int | None, data: bytes | None = None
    ) -> WrittenObject:
        """A single PutObject whose body has been streamed (see ``new_checker``)."""
        self.bucket(bucket)
        obj = WrittenObject(key, length, crc, part_etag(1, crc, length), 1, data=data)
        self.written[(bucket, key)] = obj
        return obj

    def new_checker(self, key: str) -> ZipChecker | None:
        return ZipChecker(self.expect) if is_zip_key(key) else None

    def create_upload(self, bucket: str, key: str) -> Upload:
        self.bucket(bucket)
        upload = Upload(bucket, key, secrets.token_hex(16), checker=self.new_checker(key))
        self.uploads[upload.upload_id] = upload
        return upload

    def upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None or (upload.bucket, upload.key) != (bucket, key):
            raise S3Error(
                404,
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, "
                "or the upload may have been aborted or completed.",
                UploadId=upload_id,
            )
        return upload

    def abort(self, bucket: str, key: str, upload_id: str) -> None:
        self.upload(bucket, key, upload_id)
        del self.uploads[upload_id]
        self.aborted += 1

    def complete(
        self, bucket: str, key: str, upload_id: str, listed: list[tuple[int, str]]
    ) -> WrittenObject:
        """Assemble (in checksum space) the listed parts; S3's rules are enforced."""
        upload = self.upload(bucket, key, upload_id)
        if not listed:
            raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed.")
        numbers = [n for n, _ in listed]
        if numbers != sorted(set(numbers)):
            raise S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        crc: int | None = 0
        length = 0
        for i, (number, etag) in enumerate(listed):
            got = upload.parts.get(number)
            if got is None or part_etag(number, *got) != etag:
                raise S3Error(400, "InvalidPart", f"part {number} not found or ETag mismatch")
            if i < len(listed) - 1 and got[1] < S3_MIN_PART:
                raise S3Error(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed object size.",
                )
            crc = None if crc is None or got[0] is None else crc32_combine(crc, got[0], got[1])
            length += got[1]
        report = None
        if upload.checker is not None:
            parsed_through = upload.reorder.next_part - 1
            for part in upload.reorder.flush(numbers):
                for chunk in part:
                    upload.checker.feed(chunk)
            skipped = set(range(1, parsed_through + 1)) - set(numbers)
            if skipped:
                upload.problems.append(f"parts {sorted(skipped)} were parsed but not completed")
            report = upload.checker.finish()
            if upload.problems:
                report.errors.extend(upload.problems)
                report.zip_ok = False
        del self.uploads[upload_id]
        tag = "z" * 8 if crc is None else f"{crc:08x}"
        obj = WrittenObject(key, length, crc, f'"{tag}{length:016x}-{len(listed)}"', len(listed))

        obj.report = report
        self.written[(bucket, key)] = obj
        return obj

    def written_object(self, bucket: str, key: str) -> WrittenObject:
        obj = self.written.get((bucket, key))
        if obj is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return obj

    def check_copies(
        self, src_bucket: str, src_prefix: str, dst_bucket: str, dst_prefix: str
    ) -> dict[str, Any]:
        """Did every source under ``src_prefix`` arrive intact under ``dst_prefix``?"""
        ok, errors = 0, []
        for key in self.sorted_keys(src_bucket):
            if not key.startswith(src_prefix):
                continue
            src = self.buckets[src_bucket][key]
            dst = self.written.get((dst_bucket, dst_prefix + key[len(src_prefix) :]))
            if dst is None:
                errors.append(f"{key}: no copy")
            elif (dst.length, dst.crc32) != (src.size, src.crc32()):
                errors.append(f"{key}: copy differs (length {dst.length}, crc {dst.crc32:08x})")
            else:
                ok += 1
        return {"ok": ok, "errors": errors[:20], "error_count": len(errors)}
