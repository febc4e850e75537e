"""A minimal HTTP/1.1 client for the fast ranged-GET path: GETs on pooled keep-alive
connections, each body read straight into the buffer the reader gives it.

Why our own (docs/performance.md, "The GET transport"): on many small objects
the engine is CPU-bound, and aiohttp's client spent about 10% of it per
request (request and response objects, header multidicts, timers, the
connector, a tracing hook per step) and copied every body byte three times
on the way in (decrypted into a new ``bytes``, fed into its stream reader,
joined and copied again into our buffer). A ranged GET needs far less: one
preformatted request head, one answer head, and a body of known length. So
each connection here is an ``asyncio.BufferedProtocol``: asyncio decrypts
TLS records straight into the slice of the range buffer the reader is
waiting on, and plain TCP ``recv_into``s it.

What it does: GET only; keep-alive connections pooled per origin (at most
``limit`` at once, like the client's connector); ``Content-Length`` bodies
into the caller's buffer; chunked or close-delimited bodies (error answers)
read whole; a connect timeout and a per-read timeout; a request that finds
its pooled connection closed by the server (no answer byte yet) is sent once
more on a new connection. What it refuses (``UnsupportedAnswer``): a 2xx
without ``Content-Length``, which the caller hands to botocore.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

# Head bytes we accept before calling the answer malformed (S3's are < 1 KiB).
MAX_HEAD = 64 * 1024
# Bytes of an error body held in memory (S3's XML errors are < 1 KiB).
MAX_ERROR_BODY = 1024 * 1024
_SCRATCH = 16 * 1024  # head bytes and the few body bytes that come with them


class ConnectTimeout(TimeoutError):
    """No connection within the connect timeout."""


class ReadTimeout(TimeoutError):
    """No byte of the answer within the read timeout."""


class ClosedBeforeAnswer(ConnectionError):
    """The server closed the connection before a complete answer head."""


class BodyCut(ConnectionError):
    """The connection ended before the body's last byte."""


class MalformedAnswer(ConnectionError):
    """The bytes that came back are not an HTTP/1.1 answer we can read."""


class UnsupportedAnswer(Exception):
    """A 2xx answer this client does not read (no Content-Length): the caller's fallback."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (names lower-cased; repeated ones joined with ", ")."""
    try:
        text = raw.decode("latin-1")
        status_line, *lines = text.split("\r\n")
        version, status, *_ = status_line.split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        headers: dict[str, str] = {}
        for line in lines:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ValueError(line)
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return int(status), headers
    except ValueError as err:
        raise MalformedAnswer(f"malformed answer head: {raw[:200]!r}") from err


def _chunked_end(raw: bytearray) -> tuple[bytes, int] | None:
    """Decode a complete chunked body at the start of ``raw``: (body, bytes used), or
    None if it is not complete yet. Trailers are skipped."""
    out = bytearray()
    pos = 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(raw[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError as err:
            raise MalformedAnswer("malformed chunk size") from err
        pos = eol + 2
        if size == 0:
            end = raw.find(b"\r\n\r\n", pos - 2)
            return (bytes(out), end + 4) if end >= 0 else None
        if len(raw) < pos + size + 2:
            return None
        out += raw[pos : pos + size]
        pos += size + 2


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection, one request at a time.

    Body bytes go into ``_target`` (a slice of the reader's buffer) while a
    ``readinto`` waits, else into ``_stash`` (the bytes that came with the
    head, or arrived between two reads).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._scratch = memoryview(bytearray(_SCRATCH))
        self._head = bytearray()
        self._head_done: asyncio.Future[None] | None = None
        self._data: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self._mode = "idle"  # idle | head | length | chunked | close
        self.remaining = 0  # body bytes still to come ("length" mode)
        self.stash = bytearray()
        self._target: memoryview | None = None
        self.got = 0
        self.eof = False
        self.error: BaseException | None = None
        self.answered = False  # any byte of the current answer arrived
        self.keep_alive = True
        self.raw_done = False  # a chunked or close-delimited body is complete
        # The read timeout: one timer per connection, not one per wait (see _wait).
        self._waiting: asyncio.Future[None] | None = None
        self._wait_started = 0.0
        self._wait_limit = 0.0
        self._wait_what = ""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.error is None:  # keep the first reason (a malformed answer closes too)
            self.error = exc
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def get_buffer(self, sizehint: int) -> memoryview:
        target = self._target
        if target is not None and self.got < len(target):
            return target[self.got :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        self.answered = True
        if self._target is not None and self.got < len(self._target):
            self.got += nbytes
            self.remaining -= nbytes
            self._wake_data()
            return
        self._take(self._scratch[:nbytes])

    # -- state --

    def _take(self, data: memoryview) -> None:
        if self._mode == "head":
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self._fail(MalformedAnswer("answer head too long"))
                return
            rest = bytes(self._head[end + 4 :])
            try:
                self._start_body(bytes(self._head[:end]))
            except MalformedAnswer as err:
                self._fail(err)
                return
            if self._head_done is not None and not self._head_done.done():
                self._head_done.set_result(None)
            if rest:
                self._take(memoryview(rest))
            return
        if self._mode == "length":
            n = min(len(data), self.remaining)
            self.stash += data[:n]
            self.remaining -= n
            if n < len(data):
                self.keep_alive = False  # bytes past the body: never reuse
        elif self._mode in ("chunked", "close"):
            self.stash += data
            if len(self.stash) > MAX_ERROR_BODY + MAX_HEAD:
                self._fail(MalformedAnswer("answer body too long"))
                return
            if self._mode == "chunked" and _chunked_end(self.stash) is not None:
                self.raw_done = True
        else:
            self.keep_alive = False  # bytes nobody asked for
        self._wake_data()

    def _start_body(self, head: bytes) -> None:
        self.status, self.headers = _parse_head(head)
        if self.headers.get("connection", "").lower() == "close" or head.startswith(b"HTTP/1.0"):
            self.keep_alive = False
        if self.status in (204, 304) or 100 <= self.status < 200:
            self._mode, self.remaining = "length", 0
        elif "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._mode = "chunked"
        elif "content-length" in self.headers:
            try:
                self.remaining = int(self.headers["content-length"])
            except ValueError as err:
                raise MalformedAnswer("bad Content-Length") from err
            self._mode = "length"
        else:
            self._mode = "close"
            self.keep_alive = False

    def _fail(self, err: BaseException) -> None:
        self.error = err
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._head_done is not None and not self._head_done.done():
            self._head_done.set_result(None)
        self._wake_data()

    def _wake_data(self) -> None:
        if self._data is not None and not self._data.done():
            self._data.set_result(None)

    # -- used by the pool and the body --

    @property
    def usable(self) -> bool:
        return (
            not self.eof
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    async def send(self, head: bytes, read_timeout: float) -> None:
        """Write a request head and wait for the answer's head."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._head = bytearray()
        self._mode = "head"
        self.answered = False
        self.stash = bytearray()
        self.raw_done = False
        self._head_done = loop.create_future()
        self.transport.write(head)
        await self._wait(self._head_done, read_timeout, "answer")
        if self._mode == "head":  # woken by the end of the connection, or a bad head
            if isinstance(self.error, MalformedAnswer):
                raise self.error
            raise ClosedBeforeAnswer("connection closed before an answer") from self.error

    async def wait_data(self, read_timeout: float) -> None:
        self._data = asyncio.get_running_loop().create_future()
        try:
            await self._wait(self._data, read_timeout, "body bytes")
        finally:
            self._data = None

    async def _wait(self, fut: asyncio.Future[None], read_timeout: float, what: str) -> None:
        """Wait for ``fut`` (set when bytes arrive or the connection ends); raise
        ``ReadTimeout`` if it is not set within ``read_timeout`` seconds.

        Why not ``asyncio.timeout``: a ranged GET waits several times (its head,
        then each batch of body bytes), and a timer made and cancelled per wait
        was about 1.5% of a small-object run's CPU (docs/performance.md). Here
        the connection keeps one timer; a wait only notes when it started, and
        the timer, when it fires, either fails the wait that has run too long
        or re-arms itself for the current wait's deadline.
        """
        loop = asyncio.get_running_loop()
        self._waiting = fut
        self._wait_started = loop.time()
        self._wait_limit = read_timeout
        self._wait_what = what
        due = self._wait_started + read_timeout
        if self._timer is None or self._timer_due > due:  # none, or one too late for this wait
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_due = loop.call_at(due, self._check_wait), due
        try:
            await fut
        finally:
            self._waiting = None

    def _check_wait(self) -> None:
        self._timer = None
        fut = self._waiting
        if fut is None or fut.done():
            return  # idle: the next wait arms the timer again
        due = self._wait_started + self._wait_limit
        loop = fut.get_loop()
        if loop.time() < due:
            self._timer, self._timer_due = loop.call_at(due, self._check_wait), due
            return
        fut.set_exception(ReadTimeout(f"no {self._wait_what} within {self._wait_limit} s"))

    async def readinto(self, b: memoryview, read_timeout: float) -> int:
        """Body bytes into ``b`` (``length`` mode): at least one, or 0 at the body's end."""
        if self.stash:
            n = min(len(b), len(self.stash))
            b[:n] = self.stash[:n]
            del self.stash[:n]
            return n
        if self.remaining == 0:
            return 0
        if self.eof:
            raise BodyCut(f"connection closed with {self.remaining} body bytes to come")
        self._target, self.got = b[: self.remaining], 0
        try:
            while self.got == 0:
                if self.eof or self.error is not None:
                    raise BodyCut(f"connection closed with {self.remaining} body bytes to come")
                await self.wait_data(read_timeout)
            return self.got
        finally:
            self._target = None

    async def read_whole(self, read_timeout: float) -> bytes:
        """The whole body, whatever its framing (error answers: small)."""
        if self._mode == "length":
            buf = bytearray(self.remaining + len(self.stash))
            view, filled = memoryview(buf), 0
            while filled < len(buf):
                n = await self.readinto(view[filled:], read_timeout)
                if n == 0:
                    break
                filled += n
            return bytes(buf[:filled])
        while not (self.raw_done or self.eof):
            await self.wait_data(read_timeout)
        if self._mode == "chunked":
            done = _chunked_end(self.stash)
            if done is None:
                raise BodyCut("connection closed inside a chunked body")
            body, used = done
            if used != len(self.stash):
                self.keep_alive = False  # bytes past the body: never reuse
            self.stash = bytearray()
            self._mode, self.remaining = "length", 0  # read to its end
            return body
        return bytes(self.stash)

    def finished(self) -> bool:
        """Was the whole answer read, leaving the connection ready for another request?"""
        return self._mode == "length" and self.remaining == 0 and not self.stash


class Http1Pool:
    """Keep-alive connections per origin, at most ``limit`` in use or idle at once."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._ssl = ssl_context
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[Origin, list[_Connection]] = {}
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.opened = 0  # connections made (tests and diagnostics)
        self._closed = False

    async def get(self, origin: Origin, target: str, headers: Mapping[str, str]) -> Answer:
        """Send ``GET target`` to ``origin``; the answer with its body unread.

        A pooled connection the server has closed in the meantime (nothing
        came back) costs one more attempt on a new connection, as in any
        keep-alive client; a GET may be sent twice.
        """
        head = "".join(
            [f"GET {target} HTTP/1.1\r\n", *(f"{k}: {v}\r\n" for k, v in headers.items()), "\r\n"]
        ).encode("latin-1")
        await self._slots.acquire()
        try:
            while True:
                conn, reused = self._idle_connection(origin), True
                if conn is None:
                    conn, reused = await self._connect(origin), False
                try:
                    await conn.send(head, self.read_timeout)
                except (ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError):
                    self._discard(conn)
                    if reused and not conn.answered:
                        continue
                    raise
                except BaseException:
                    self._discard(conn)
                    raise
                return Answer(self, origin, conn)
        except BaseException:
            self._slots.release()
            raise

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            self._discard(conn)
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._ssl if origin.scheme == "https" else None
        if origin.scheme == "https" and tls is None:
            raise ValueError("https origin without an SSL context")
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection,
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"no connection to {origin.host}:{origin.port} within {self.connect_timeout} s"
            ) from None
        self.opened += 1
        return conn

    def _discard(self, conn: _Connection) -> None:
        if conn.transport is not None:
            conn.transport.close()

    def _done(self, origin: Origin, conn: _Connection, reuse: bool) -> None:
        if reuse and not self._closed and conn.usable and conn.finished():
            self._idle.setdefault(origin, []).append(conn)
        else:
            self._discard(conn)
        self._slots.release()

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                self._discard(conn)
        self._idle.clear()


class Answer:
    """An answer whose body is unread: read it, then ``release()`` (or ``close()``)."""

    __slots__ = ("_conn", "_done", "_origin", "_pool", "headers", "status")

    def __init__(self, pool: Http1Pool, origin: Origin, conn: _Connection) -> None:
        self._pool = pool
        self._origin = origin
        self._conn = conn
        self._done = False
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    def check_readable(self) -> None:
        """Raise ``UnsupportedAnswer`` if the body cannot be read into a buffer."""
        if self._conn._mode != "length":
            raise UnsupportedAnswer(f"a {self.status} answer without Content-Length")

    async def readinto(self, b: memoryview) -> int:
        return await self._conn.readinto(b, self._pool.read_timeout)

    async def read(self) -> bytes:
        return await self._conn.read_whole(self._pool.read_timeout)

    def release(self) -> None:
        """Back to the pool if the body was read to its end, else closed."""
        self._finish(reuse=True)

    def close(self) -> None:
        self._finish(reuse=False)

    def _finish(self, reuse: bool) -> None:
        if not self._done:
            self._done = True
            self._pool._done(self._origin, self._conn, reuse)
