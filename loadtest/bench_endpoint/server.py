"""The benchmark endpoint's HTTP face: a path-style S3 subset over aiohttp.

Only what the engine and the baselines call: HEAD/GET (ranged, If-Match),
PutObject, the multipart calls, ListObjectsV2, plus CreateBucket, HeadBucket,
DeleteObject and ListMultipartUploads for orphan checks, and ListParts plus
reading back small written objects for a resumed build (its checkpoint). Any SigV4 signature
is accepted: this is a benchmark endpoint, never a test double for S3's
security behaviour.

Control routes live under ``/_bench/`` (seed sources, verify an archive,
check copies, stats); see ``loadtest/README.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import resource
import ssl
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from . import checksums
from .awschunked import AwsChunkedDecoder
from .content import iter_content
from .store import (
    KEEP_BYTES_MAX,
    LAST_MODIFIED,
    S3Error,
    Store,
    VirtualObject,
    WrittenObject,
    is_zip_key,
    part_etag,
)

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
HTTP_DATE = email.utils.format_datetime(LAST_MODIFIED, usegmt=True)
ISO_DATE = LAST_MODIFIED.strftime("%Y-%m-%dT%H:%M:%S.000Z")
WRITE_CHUNK = 1024 * 1024

Handler = Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]


def _xml(status: int, body: str) -> web.Response:
    return web.Response(
        status=status,
        body=('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode(),
        content_type="application/xml",
    )


def _error(err: S3Error, head: bool) -> web.Response:
    if head:
        return web.Response(status=err.status, headers={"x-amz-error-code": err.code})
    extra = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in err.extra.items())
    return _xml(
        err.status,
        f"<Error><Code>{err.code}</Code><Message>{escape(err.message)}</Message>{extra}"
        "<RequestId>bench</RequestId></Error>",
    )


def parse_range(header: str, size: int) -> tuple[int, int]:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` to a half-open [start, end)."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
    if not first:
        n = int(last)
        start, end = max(0, size - n), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
    return start, end


def _declared_length(request: web.Request) -> int:
    """The payload length the client announced (aws-chunked bodies say it separately)."""
    raw = request.headers.get("x-amz-decoded-content-length") or request.headers.get(
        "Content-Length", ""
    )
    try:
        return int(raw)
    except ValueError:
        return KEEP_BYTES_MAX + 1  # unknown: treat as large


def _etag_matches(header: str, etag: str) -> bool:
    wanted = [t.strip() for t in header.split(",")]
    return any(t == "*" or t.strip('"') == etag.strip('"') for t in wanted)


class Endpoint:
    """Request routing and the S3 operations; state is in ``Store``."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.counts: Counter[str] = Counter()
        self.bytes_out = 0
        self.bytes_in = 0
        self.started = time.time()

    # -- routing ------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = urllib.parse.unquote(request.raw_path.split("?", 1)[0])
        bucket, _, key = path.lstrip("/").partition("/")
        head = request.method == "HEAD"
        try:
            if bucket == "_bench":
                return await self.control(request, key)
            if not bucket:
                raise S3Error(400, "InvalidRequest", "path-style /bucket/key only")
            op = self._operation(request, key)
            self.counts[op.__name__.lstrip("_")] += 1
            return await op(request, bucket, key)
        except S3Error as err:
            self.counts[f"error_{err.code}"] += 1
            return _error(err, head)

    def _operation(self, request: web.Request, key: str) -> Handler:
        q = request.query
        m = request.method
        if not key:
            table: dict[str, Handler] = {
                "PUT": self._create_bucket,
                "HEAD": self._head_bucket,
                "GET": self._list_uploads if "uploads" in q else self._list_objects,
            }
        elif "uploadId" in q:
            table = {
                "GET": self._list_parts,
                "PUT": self._upload_part,
                "POST": self._complete,
                "DELETE": self._abort,
            }
        else:
            table = {
                "HEAD": self._head_object,
                "GET": self._get_object,
                "PUT": self._put_object,
                "DELETE": self._delete_object,
            }
            if "uploads" in q:
                table["POST"] = self._create_upload
        op = table.get(m)
        if op is None:
            raise S3Error(501, "NotImplemented", f"{m} {request.path_qs} is not implemented")
        return op

    # -- buckets ------------------------------------------------------------------

    async def _create_bucket(self, request: web.Request, bucket: str, _: str) -> web.Response:
        await request.read()
        self.store.create_bucket(bucket)
        return web.Response(headers={"Location": f"/{bucket}"})

    async def _head_bucket(self, request: web.Request, bucket: str, _: str) -> web.Response:
        self.store.bucket(bucket)
        return web.Response()

    async def _list_objects(self, request: web.Request, bucket: str, _: str) -> web.Response:
        q = request.query
        if q.get("list-type") != "2":
            raise S3Error(501, "NotImplemented", "only ListObjectsV2 (list-type=2)")
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        token = q.get("continuation-token", "")
        start = urllib.parse.unquote(token) if token else q.get("start-after", "")
        max_keys = min(1000, int(q.get("max-keys", "1000")))
        url = q.get("encoding-type") == "url"
        contents, prefixes, next_key = self.store.list_keys(
            bucket, prefix, delimiter, start, max_keys
        )

        def enc(s: str) -> str:
            return escape(urllib.parse.quote(s, safe="/") if url else s)

        parts = [
            f'<ListBucketResult xmlns="{XMLNS}"><Name>{escape(bucket)}</Name>'
            f"<Prefix>{enc(prefix)}</Prefix><KeyCount>{len(contents) + len(prefixes)}</KeyCount>"
            f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(next_key is not None).lower()}"
            "</IsTruncated>"
        ]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        if token:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if next_key is not None:
            parts.append(
                f"<NextContinuationToken>{escape(urllib.parse.quote(next_key))}"
                "</NextContinuationToken>"
            )
        for obj in contents:
            parts.append(
                f"<Contents><Key>{enc(obj.key)}</Key><LastModified>{ISO_DATE}</LastModified>"
                f"<ETag>{escape(obj.etag)}</ETag><Size>{obj.size}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        for p in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        return _xml(200, "".join(parts))

    async def _list_uploads(self, request: web.Request, bucket: str, _: str) -> web.Response:
        self.store.bucket(bucket)
        prefix = request.query.get("prefix", "")
        items = "".join(
            f"<Upload><Key>{escape(u.key)}</Key><UploadId>{u.upload_id}</UploadId>"
            f"<Initiated>{ISO_DATE}</Initiated></Upload>"
            for u in self.store.uploads.values()
            if u.bucket == bucket and u.key.startswith(prefix)
        )
        return _xml(
            200,
            f'<ListMultipartUploadsResult xmlns="{XMLNS}"><Bucket>{escape(bucket)}</Bucket>'
            f"<IsTruncated>false</IsTruncated>{items}</ListMultipartUploadsResult>",
        )

    # -- reads --------------------------------------------------------------------

    def _lookup(self, bucket: str, key: str) -> VirtualObject | WrittenObject:
        objects = self.store.bucket(bucket)
        obj = objects.get(key)
        if obj is not None:
            return obj
        return self.store.written_object(bucket, key)

    @staticmethod
    def _headers(etag: str, length: int) -> dict[str, str]:
        return {
            "ETag": etag,
            "Last-Modified": HTTP_DATE,
            "Content-Length": str(length),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }

    def _precondition(self, request: web.Request, etag: str) -> None:
        if_match = request.headers.get("If-Match")
        if if_match is not None and not _etag_matches(if_match, etag):
            raise S3Error(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                Condition="If-Match",
            )

    async def _head_object(self, request: web.Request, bucket: str, key: str) -> web.Response:
        obj = self._lookup(bucket, key)
        size = obj.size if isinstance(obj, VirtualObject) else obj.length
        self._precondition(request, obj.etag)
        return web.Response(headers=self._headers(obj.etag, size))

    async def _get_object(self, request: web.Request, bucket: str, key: str) -> web.StreamResponse:
        obj = self._lookup(bucket, key)
        self._precondition(request, obj.etag)
        if not isinstance(obj, VirtualObject):
            return self._get_kept(request, obj)
        start, end, status = 0, obj.size, 200
        headers = self._headers(obj.etag, obj.size)
        rng = request.headers.get("Range")
        if rng and obj.size:
            try:
                start, end = parse_range(rng, obj.size)
            except ValueError:
                raise S3Error(400, "InvalidArgument", f"bad Range {rng!r}") from None
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{obj.size}"
            headers["Content-Length"] = str(end - start)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        for view in iter_content(obj.key, start, end, obj.version, WRITE_CHUNK):
            await resp.write(view)
            self.bytes_out += len(view)
        await resp.write_eof()
        return resp

    def _get_kept(self, request: web.Request, obj: WrittenObject) -> web.Response:
        """A small written object whose bytes were kept (a checkpoint); others are gone."""
        if obj.data is None:
            raise S3Error(
                501, "NotImplemented", "the benchmark endpoint keeps only checksums of uploads"
            )
        headers = self._headers(obj.etag, obj.length)
        rng = request.headers.get("Range")
        if not rng or not obj.length:
            return web.Response(status=200, body=obj.data, headers=headers)
        start, end = parse_range(rng, obj.length)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{obj.length}"
        headers["Content-Length"] = str(end - start)
        return web.Response(status=206, body=obj.data[start:end], headers=headers)

    # -- writes -------------------------------------------------------------------

    async def _body(
        self, request: web.Request, keep: bool, want_crc: bool = False
    ) -> tuple[int | None, int, list[bytes] | None]:
        """(crc, length, chunks) of the request's payload, read as it streams.

        A body that is kept (a ``.zip`` part, for the verifier) is not
        checksummed here unless the client sent a checksum to verify
        (``want_crc``): otherwise the verifier's pass is its one CRC pass.
        """
        chunked = "aws-chunked" in request.headers.get(
            "Content-Encoding", ""
        ) or request.headers.get("x-amz-content-sha256", "").startswith("STREAMING-")
        decoder = AwsChunkedDecoder() if chunked else None
        crc, length = 0, 0
        kept: list[bytes] | None = [] if keep else None
        async for raw in request.content.iter_any():
            self.bytes_in += len(raw)
            pieces = decoder.feed(raw) if decoder is not None else [raw]
            for piece in pieces:
                length += len(piece)
                if kept is not None:
                    kept.append(bytes(piece))
                if kept is None or want_crc:
                    crc = zlib.crc32(piece, crc)
        return (None if keep and not want_crc else crc), length, kept

    async def _put_object(self, request: web.Request, bucket: str, key: str) -> web.Response:
        self.store.bucket(bucket)
        checker = self.store.new_checker(key)
        sent = request.headers.get(checksums.HEADER)
        small = not is_zip_key(key) and _declared_length(request) <= KEEP_BYTES_MAX
        crc, length, kept = await self._body(
            request, keep=checker is not None or small, want_crc=sent is not None or small
        )
        checksums.check_body(sent, crc or 0)
        data = b"".join(kept) if small and kept is not None else None
        obj = self.store.put_object(bucket, key, length, crc, data)
        obj.checksum = None if sent is None else "CRC32 verified"
        if checker is not None and kept is not None:
            for chunk in kept:
                checker.feed(chunk)
            obj.report = checker.finish()
        return web.Response(headers={"ETag": obj.etag})

    async def _create_upload(self, request: web.Request, bucket: str, key: str) -> web.Response:
        await request.read()
        upload = self.store.create_upload(bucket, key)
        algorithm = request.headers.get("x-amz-checksum-algorithm")
        upload.checksum_algorithm = algorithm.upper() if algorithm else None
        kind = request.headers.get("x-amz-checksum-type")
        upload.checksum_type = kind.upper() if kind else ("COMPOSITE" if algorithm else None)
        return _xml(
            200,
            f'<InitiateMultipartUploadResult xmlns="{XMLNS}"><Bucket>{escape(bucket)}</Bucket>'
            f"<Key>{escape(key)}</Key><UploadId>{upload.upload_id}</UploadId>"
            "</InitiateMultipartUploadResult>",
        )

    async def _upload_part(self, request: web.Request, bucket: str, key: str) -> web.Response:
        upload = self.store.upload(bucket, key, request.query["uploadId"])
        number = int(request.query.get("partNumber", "0"))
        if not 1 <= number <= 10_000:
            raise S3Error(400, "InvalidArgument", "Part number must be between 1 and 10000")
        sent = request.headers.get(checksums.HEADER)
        checksums.check_part(upload, sent)
        crc, length, kept = await self._body(
            request, keep=upload.checker is not None, want_crc=sent is not None
        )
        checksums.check_body(sent, crc or 0)
        # The upload may have been aborted while the body streamed.
        upload = self.store.upload(bucket, key, request.query["uploadId"])
        before = upload.part_crcs.get(number)
        if sent is not None:
            upload.part_crcs[number] = crc or 0
        # A .zip part's ETag stays checksum-free (its bytes are verified by the
        # ZIP checker); others are named by their CRC.
        etag = upload.add_part(
            number,
            None if upload.checker else crc,
            length,
            kept,
            same_as_before=sent is not None and before is not None and before == crc,
        )
        return web.Response(headers={"ETag": etag})

    async def _complete(self, request: web.Request, bucket: str, key: str) -> web.Response:
        body = await request.read()
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise S3Error(
                400, "MalformedXML", "The XML you provided was not well-formed."
            ) from None
        listed: list[tuple[int, str]] = []
        listed_crcs: dict[int, str] = {}
        for part in root.iter():
            if part.tag.rsplit("}", 1)[-1] != "Part":
                continue
            fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "") for c in part}
            number = int(fields.get("PartNumber", "0"))
            listed.append((number, fields.get("ETag", "")))
            if "ChecksumCRC32" in fields:
                listed_crcs[number] = fields["ChecksumCRC32"]
        upload = self.store.upload(bucket, key, request.query["uploadId"])
        sent_full = request.headers.get(checksums.HEADER)
        full_crc = checksums.check_complete(
            upload,
            listed,
            listed_crcs,
            {n: length for n, (_, length) in upload.parts.items()},
            sent_full,
        )
        checksum_type = upload.checksum_type
        obj = self.store.complete(bucket, key, request.query["uploadId"], listed)
        if full_crc is not None:
            obj.checksum = f"CRC32 {checksum_type}" + (
                " verified" if sent_full is not None else " computed"
            )
            obj.full_crc32 = full_crc
        return _xml(
            200,
            f'<CompleteMultipartUploadResult xmlns="{XMLNS}"><Location>/{escape(bucket)}/'
            f"{escape(key)}</Location><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
            f"<ETag>{escape(obj.etag)}</ETag></CompleteMultipartUploadResult>",
        )

    async def _list_parts(self, request: web.Request, bucket: str, key: str) -> web.Response:
        """ListParts, paged like S3 (``part-number-marker``, ``max-parts`` up to 1,000)."""
        upload = self.store.upload(bucket, key, request.query["uploadId"])
        marker = int(request.query.get("part-number-marker", "0") or 0)
        max_parts = min(1000, int(request.query.get("max-parts", "1000")))
        numbers = sorted(n for n in upload.parts if n > marker)
        page, truncated = numbers[:max_parts], len(numbers) > max_parts
        items = []
        for n in page:
            crc, length = upload.parts[n]
            extra = ""
            if n in upload.part_crcs:
                extra = f"<ChecksumCRC32>{checksums.encode(upload.part_crcs[n])}</ChecksumCRC32>"
            items.append(
                f"<Part><PartNumber>{n}</PartNumber><LastModified>{ISO_DATE}</LastModified>"
                f"<ETag>{escape(part_etag(n, crc, length))}</ETag><Size>{length}</Size>"
                f"{extra}</Part>"
            )
        next_marker = f"<NextPartNumberMarker>{page[-1]}</NextPartNumberMarker>" if page else ""
        return _xml(
            200,
            f'<ListPartsResult xmlns="{XMLNS}"><Bucket>{escape(bucket)}</Bucket>'
            f"<Key>{escape(key)}</Key><UploadId>{upload.upload_id}</UploadId>"
            f"<PartNumberMarker>{marker}</PartNumberMarker>{next_marker}"
            f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{str(truncated).lower()}</IsTruncated>"
            f"{''.join(items)}</ListPartsResult>",
        )

    async def _abort(self, request: web.Request, bucket: str, key: str) -> web.Response:
        self.store.abort(bucket, key, request.query["uploadId"])
        return web.Response(status=204)

    async def _delete_object(self, request: web.Request, bucket: str, key: str) -> web.Response:
        self.store.delete_source(bucket, key)
        return web.Response(status=204)

    # -- control ------------------------------------------------------------------

    async def control(self, request: web.Request, what: str) -> web.Response:
        """``/_bench/...`` routes: seeding, verification, stats."""
        cmd, _, rest = what.partition("/")
        bucket, _, key = rest.partition("/")
        m = request.method
        if m == "PUT" and cmd == "seed":
            spec = await request.json()
            keys = self.store.seed(
                spec["bucket"],
                spec.get("prefix", ""),
                int(spec["count"]),
                int(spec["size"]),
                relative_names=bool(spec.get("relative_names", False)),
            )
            return web.json_response({"keys": len(keys), "bytes": len(keys) * int(spec["size"])})
        if m == "GET" and cmd == "verify":
            return web.json_response(self.store.written_object(bucket, key).as_json())
        if m == "GET" and cmd == "source":
            obj = self.store.source(bucket, key)
            crc = await asyncio.to_thread(obj.crc32)
            return web.json_response({"size": obj.size, "crc32": f"{crc:08x}", "etag": obj.etag})
        if m == "POST" and cmd == "touch":
            obj = self.store.touch(bucket, key)
            return web.json_response({"etag": obj.etag, "version": obj.version})
        if m == "POST" and cmd == "check_copies":
            spec = await request.json()
            return web.json_response(
                self.store.check_copies(
                    spec["src_bucket"], spec["src_prefix"], spec["dst_bucket"], spec["dst_prefix"]
                )
            )
        if m == "POST" and cmd == "reset":
            self.store = Store()
            self.counts.clear()
            return web.json_response({"reset": True})
        if m == "GET" and cmd == "stats":
            return web.json_response(self.stats())
        raise S3Error(404, "NoSuchControl", f"no control route {m} /_bench/{what}")

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "requests": dict(self.counts),
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "open_uploads": len(self.store.uploads),
            "aborted_uploads": self.store.aborted,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_mib": usage.ru_maxrss / 1024,
        }


ENDPOINT_KEY = web.AppKey("endpoint", Endpoint)


def create_app(endpoint: Endpoint | None = None) -> web.Application:
    endpoint = endpoint or Endpoint()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[ENDPOINT_KEY] = endpoint
    app.router.add_route("*", "/{tail:.*}", endpoint.dispatch)
    return app


def _bound_port(site: web.TCPSite, asked: int) -> int:
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else asked


async def start_endpoint(
    host: str = "127.0.0.1", port: int = 0, endpoint: Endpoint | None = None
) -> tuple[web.AppRunner, int]:
    """Run the endpoint in this event loop; returns the runner (``cleanup()`` it) and port."""
    runner = web.AppRunner(create_app(endpoint), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    return runner, _bound_port(site, port)


async def add_tls_port(runner: web.AppRunner, tls: ssl.SSLContext, host: str = "127.0.0.1") -> int:
    """Serve the same endpoint (same state) over HTTPS too, on a new port.

    The benchmark measures clients over TLS, as they talk to S3, while its
    control calls stay on plain HTTP.
    """
    site = web.TCPSite(runner, host, 0, backlog=1024, ssl_context=tls)
    await site.start()
    return _bound_port(site, 0)


def server_tls(cert_chain: str, key: str) -> ssl.SSLContext:
    """A server context from PEM files (the run's own CA signed the certificate)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_chain, key)
    return ctx


async def serve_forever(host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    runner, bound = await start_endpoint(host, port)
    print(f"PORT {bound}", flush=True)
    if tls is not None:
        print(f"TLSPORT {await add_tls_port(runner, tls, host)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Benchmark S3-protocol endpoint (not a test double).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-cert", help="PEM certificate chain: also serve HTTPS (prints TLSPORT)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    args = p.parse_args(argv)
    tls = server_tls(args.tls_cert, args.tls_key) if args.tls_cert else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.host, args.port, tls))
