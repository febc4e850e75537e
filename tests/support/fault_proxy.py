"""A small HTTP-aware TCP proxy on 127.0.0.1 that breaks chosen S3 requests on purpose.

The engine promises that a body cut mid-stream is re-read from the byte where
it broke (not from the start of the range, not by restarting the job), that
throttling is retried, and that an upload that keeps failing is aborted. None
of that can be seen against a well-behaved moto, and patching botocore
in-process would test the patch, not the HTTP path. So tests point a client
at this proxy, which forwards to the emulator and, for the first ``times``
requests matching a ``Fault``:

* ``cut_after=N``: relays the response headers and the first N body bytes,
  then closes the connection (the client sees a short body);
* ``status=503, code="SlowDown"``: answers with an S3 XML error itself;
* ``delay_s=T``: holds the request T seconds before forwarding it (to keep a
  job deterministically busy, e.g. mid-upload, while a test acts);
* ``drop_headers=("if-match",)``: forwards the request without those headers,
  like an S3-compatible server that ignores them;
* ``before=coroutine_function``: awaited before forwarding (e.g. to overwrite
  the object being read, exactly between two ranges of it).

``range_from=N`` narrows a fault to requests whose ``Range`` starts at byte N.

Every request is recorded (method, path, query, headers, what was done), so a
test can assert that the retry asked for ``Range: bytes=<where it broke>-``.

HTTP/1.1 only, enough for botocore/aiohttp: requests with Content-Length (or
chunked) bodies, ``Expect: 100-continue``, keep-alive towards the client. Each
forwarded request uses its own upstream connection (``Connection: close``),
so a response body simply ends at upstream EOF and any framing is relayed as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

_CHUNK = 64 * 1024
_NO_BODY_STATUSES = {204, 304}


def error_body(code: str, *, json_protocol: bool) -> tuple[bytes, str]:
    """An AWS error document (body, content type) in the protocol the client speaks.

    S3 answers XML; DynamoDB and SQS (JSON protocol) answer
    ``{"__type": ..., "message": ...}``, from which botocore takes the code.
    """
    if json_protocol:
        doc = {"__type": f"com.amazonaws.fault#{code}", "message": "injected by the fault proxy"}
        return json.dumps(doc).encode(), "application/x-amz-json-1.0"
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by the test fault proxy"
        "</Message><RequestId>fault-proxy</RequestId></Error>"
    )
    return xml.encode(), "application/xml"


@dataclass
class Fault:
    """Which requests to break, how, and how many times."""

    method: str
    path_contains: str = ""
    query_contains: str = ""
    times: int = 1
    cut_after: int | None = None
    status: int | None = None
    code: str = "InternalError"
    delay_s: float = 0.0
    drop_headers: tuple[str, ...] = ()
    before: Callable[[], Awaitable[None]] | None = None
    range_from: int | None = None
    hits: int = 0
    # DynamoDB and SQS (JSON protocol) send every call as ``POST /`` and name
    # the operation in X-Amz-Target ("DynamoDB_20120810.PutItem",
    # "AmazonSQS.SendMessage"): match on it to break one service's calls.
    target_contains: str = ""

    def matches(
        self, method: str, path: str, query: str, target: str = "", range_header: str | None = None
    ) -> bool:
        return (
            self.hits < self.times
            and method == self.method
            and self.path_contains in path
            and self.query_contains in query
            and self.target_contains in target
            and (
                self.range_from is None
                or (range_header or "").startswith(f"bytes={self.range_from}-")
            )
        )

    def describe(self) -> str:
        if self.cut_after is not None:
            return f"cut after {self.cut_after} bytes"
        if self.status is not None:
            return f"status {self.status} {self.code}"
        if self.drop_headers:
            return f"dropped {', '.join(self.drop_headers)}"
        if self.before is not None:
            return "acted before forwarding"
        return f"delayed {self.delay_s} s"


@dataclass
class Seen:
    """One request as the proxy saw it and what it did with it."""

    method: str
    path: str  # percent-decoded
    query: str
    headers: dict[str, str]
    fault: str | None = None
    status: int | None = None
    body_bytes_sent: int = 0
    target: str = ""  # the request target as sent (path and query, still encoded)

    @property
    def range(self) -> tuple[int, int] | None:
        """``(first, last)`` of a ``Range: bytes=first-last`` header."""
        value = self.headers.get("range")
        if not value or not value.startswith("bytes="):
            return None
        first, _, last = value[len("bytes=") :].partition("-")
        return int(first), int(last)


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
        raise ValueError(f"need an http://host:port upstream, got {url!r}")
    return parsed.hostname, parsed.port


def upstream_bytes(request: _Request) -> bytes:
    """``request`` as sent upstream: on a connection of its own, so its answer ends at EOF."""
    headers = [(k, v) for k, v in request.headers if k.lower() != "connection"]
    headers.append(("Connection", "close"))
    head = f"{request.method} {request.target} {request.version}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + request.body


class FaultProxy:
    """``async with FaultProxy(upstream_url) as proxy:`` then use ``proxy.url``."""

    def __init__(self, upstream_url: str, by_target: Mapping[str, str] | None = None) -> None:
        """``by_target`` sends requests whose X-Amz-Target starts with a key elsewhere,
        e.g. ``{"DynamoDB_": url}`` when DynamoDB has its own endpoint."""
        self._upstream = _host_port(upstream_url)
        self._by_target = {k: _host_port(v) for k, v in (by_target or {}).items()}
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.faults: list[Fault] = []
        self.requests: list[Seen] = []
        self.url = ""

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def seen(self, method: str | None = None, path_contains: str = "") -> list[Seen]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and path_contains in r.path
        ]

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------ serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while await self._one_exchange(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; False when the client connection must close."""
        request = await self._read_request(reader, writer)
        if request is None:
            return False
        split = urllib.parse.urlsplit(request.target)
        path = urllib.parse.unquote(split.path)
        seen = Seen(
            request.method,
            path,
            split.query,
            {k.lower(): v for k, v in request.headers},
            target=request.target,
        )
        self.requests.append(seen)
        target = request.header("x-amz-target") or ""
        range_header = request.header("range")
        fault = next(
            (
                f
                for f in self.faults
                if f.matches(request.method, path, split.query, target, range_header)
            ),
            None,
        )
        if fault is not None:
            fault.hits += 1
            seen.fault = fault.describe()
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.before is not None:
                await fault.before()
            if fault.drop_headers:
                dropped = {h.lower() for h in fault.drop_headers}
                request.headers = [(k, v) for k, v in request.headers if k.lower() not in dropped]
                seen.headers = {k.lower(): v for k, v in request.headers}  # as forwarded
            if fault.status is not None:
                await self._answer_error(writer, request, fault, seen)
                return True
        return await self._forward(request, writer, fault, seen)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # client closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        request = _Request(method, target, version)
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                request.headers.append((name.strip(), value.strip()))
        if (request.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            request.headers = [(k, v) for k, v in request.headers if k.lower() != "expect"]
        if (request.header("transfer-encoding") or "").lower() == "chunked":
            request.body = await self._read_chunked(reader)
            request.headers = [
                (k, v) for k, v in request.headers if k.lower() != "transfer-encoding"
            ]
            request.headers.append(("Content-Length", str(len(request.body))))
        else:
            request.body = await reader.readexactly(int(request.header("content-length") or 0))
        return request

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # (no trailers from botocore)
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    async def _answer_error(
        self, writer: asyncio.StreamWriter, request: _Request, fault: Fault, seen: Seen
    ) -> None:
        assert fault.status is not None
        body, content_type = error_body(
            fault.code, json_protocol=bool(request.header("x-amz-target"))
        )
        head = (
            f"HTTP/1.1 {fault.status} Injected\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        ).encode()
        writer.write(head if request.method == "HEAD" else head + body)
        await writer.drain()
        seen.status = fault.status

    async def _forward(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
        seen: Seen,
    ) -> bool:
        target = request.header("x-amz-target") or ""
        upstream = next(
            (hp for prefix, hp in self._by_target.items() if target.startswith(prefix)),
            self._upstream,
        )
        up_reader, up_writer = await asyncio.open_connection(*upstream)
        try:
            up_writer.write(upstream_bytes(request))
            await up_writer.drain()
            return await self._relay_response(request, up_reader, writer, fault, seen)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _relay_response(
        self,
        request: _Request,
        upstream: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
        seen: Seen,
    ) -> bool:
        head = await upstream.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        seen.status = status
        headers = [
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        ]
        names = {k.lower() for k, _ in headers}
        no_body = request.method == "HEAD" or status in _NO_BODY_STATUSES or status < 200
        framed = no_body or "content-length" in names or "transfer-encoding" in names
        # Keep the client's connection alive when the body has its own framing;
        # otherwise it ends at EOF, and the client must see the close.
        keep = framed and (fault is None or fault.cut_after is None)
        out = [(k, v) for k, v in headers if k.lower() != "connection"]
        if not keep:
            out.append(("Connection", "close"))
        writer.write(
            (lines[0] + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out) + "\r\n").encode(
                "latin-1"
            )
        )
        limit = fault.cut_after if fault is not None else None
        while not no_body:
            chunk = await upstream.read(_CHUNK)
            if not chunk:
                break
            if limit is not None:
                chunk = chunk[: limit - seen.body_bytes_sent]
            writer.write(chunk)
            seen.body_bytes_sent += len(chunk)
            await writer.drain()
            if limit is not None and seen.body_bytes_sent >= limit:
                break
        await writer.drain()
        return keep
