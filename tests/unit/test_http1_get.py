"""The fast GET path's HTTP/1.1 client against a scripted server, over TCP and TLS.

The server answers each request head with bytes a test chooses, so framing
that S3 itself rarely sends (chunked or close-delimited error bodies, a head
split across packets, a connection closed while idle in the pool, a cut
body, no answer at all) is exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
import trustme

from service.http1_get import (
    BodyCut,
    ClosedBeforeAnswer,
    Http1Pool,
    MalformedAnswer,
    Origin,
    ReadTimeout,
    UnsupportedAnswer,
)

Reply = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]  # -> keep the connection


@dataclass
class Scripted:
    """A server whose answer to the n-th request (counted over all connections) is ``reply``."""

    reply: Reply
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                if not await self.reply(len(self.requests), head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(status: int, body: bytes, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


DATA = os.urandom(300_000)


async def ok(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
    w.write(answer(206, DATA, Content_Length=str(len(DATA)), ETag='"e"'))
    await w.drain()
    return True


@pytest.fixture(params=["http", "https"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest_asyncio.fixture
async def serve(
    scheme: str, ca: trustme.CA
) -> AsyncIterator[Callable[[Reply], Awaitable[tuple[Scripted, Http1Pool, Origin]]]]:
    servers: list[asyncio.Server] = []
    pools: list[Http1Pool] = []

    async def start(reply: Reply, read_timeout: float = 5.0) -> tuple[Scripted, Http1Pool, Origin]:
        scripted = Scripted(reply)
        server_tls = client_tls = None
        if scheme == "https":
            server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1").configure_cert(server_tls)
            client_tls = ssl.create_default_context()
            ca.configure_trust(client_tls)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0, ssl=server_tls)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        pool = Http1Pool(client_tls, limit=4, connect_timeout=5, read_timeout=read_timeout)
        pools.append(pool)
        return scripted, pool, Origin(scheme, "127.0.0.1", port)

    yield start
    for pool in pools:
        pool.close()
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_body(pool: Http1Pool, origin: Origin, size: int, piece: int = 70_000) -> bytes:
    resp = await pool.get(origin, "/b/k", {"host": "127.0.0.1", "range": "bytes=0-1"})
    assert resp.status == 206 and resp.headers["etag"] == '"e"'
    buf = bytearray(size)
    view, filled = memoryview(buf), 0
    try:
        while filled < size:
            n = await resp.readinto(view[filled : filled + piece])
            assert n > 0
            filled += n
    except BaseException:
        resp.close()
        raise
    resp.release()
    return bytes(buf)


async def test_bodies_arrive_whole_on_one_kept_alive_connection(serve) -> None:  # type: ignore[no-untyped-def]
    scripted, pool, origin = await serve(ok)
    for _ in range(5):
        assert await read_body(pool, origin, len(DATA)) == DATA
    assert pool.opened == 1 and scripted.connections == 1
    assert scripted.requests[0].startswith(b"GET /b/k HTTP/1.1\r\n")
    assert b"range: bytes=0-1\r\n" in scripted.requests[0]


async def test_a_connection_the_server_closed_while_idle_is_replaced(serve) -> None:  # type: ignore[no-untyped-def]
    async def once(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        await ok(n, head, w)
        return False  # close after each answer, without saying so

    scripted, pool, origin = await serve(once)
    for _ in range(3):
        assert await read_body(pool, origin, len(DATA)) == DATA
    assert scripted.connections == 3 and len(scripted.requests) == 3


async def test_head_and_body_split_into_tiny_packets(serve) -> None:  # type: ignore[no-untyped-def]
    small = DATA[:5000]

    async def dribble(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        raw = answer(206, small, Content_Length=str(len(small)), ETag='"e"')
        for i in range(0, len(raw), 7):
            w.write(raw[i : i + 7])
            await w.drain()
            await asyncio.sleep(0)
        return True

    _, pool, origin = await serve(dribble)
    assert await read_body(pool, origin, len(small), piece=333) == small
    assert await read_body(pool, origin, len(small)) == small
    assert pool.opened == 1


async def test_error_bodies_in_every_framing_are_read_whole(serve) -> None:  # type: ignore[no-untyped-def]
    xml = b"<Error><Code>NoSuchKey</Code></Error>"

    async def errors(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (len(xml[i : i + 10]), xml[i : i + 10])
                for i in range(0, len(xml), 10)
            )
            w.write(answer(404, chunks + b"0\r\n\r\n", Transfer_Encoding="chunked"))
            return True
        if n == 2:
            w.write(answer(403, xml, Content_Length=str(len(xml))))
            return True
        w.write(answer(500, xml))  # no length: the body ends with the connection
        await w.drain()
        return False

    _, pool, origin = await serve(errors)
    for status in (404, 403, 500):
        resp = await pool.get(origin, "/b/k", {"host": "h"})
        assert resp.status == status
        assert await resp.read() == xml
        resp.release()
    assert pool.opened == 1  # the close-delimited answer was the last on its connection


async def test_a_2xx_without_length_is_refused_for_the_caller_to_hand_over(serve) -> None:  # type: ignore[no-untyped-def]
    async def unframed(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(answer(200, b"abc"))
        return False

    _, pool, origin = await serve(unframed)
    resp = await pool.get(origin, "/b/k", {"host": "h"})
    with pytest.raises(UnsupportedAnswer):
        resp.check_readable()
    resp.close()


async def test_a_cut_body_raises_after_the_bytes_that_came(serve) -> None:  # type: ignore[no-untyped-def]
    async def cut(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(answer(206, DATA[:1000], Content_Length=str(len(DATA))))
        await w.drain()
        return False

    _, pool, origin = await serve(cut)
    resp = await pool.get(origin, "/b/k", {"host": "h"})
    buf = memoryview(bytearray(len(DATA)))
    got = 0
    with pytest.raises(BodyCut):
        while True:
            n = await resp.readinto(buf[got:])
            assert n > 0
            got += n
    assert bytes(buf[:got]) == DATA[:1000]
    resp.close()


async def test_no_answer_is_a_read_timeout_and_a_closed_one_is_no_answer(serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            await asyncio.sleep(1)
            return False
        return False  # close at once, no byte back

    _, pool, origin = await serve(silent, 0.3)
    with pytest.raises(ReadTimeout):
        await pool.get(origin, "/b/k", {"host": "h"})
    with pytest.raises(ClosedBeforeAnswer):
        await pool.get(origin, "/b/k", {"host": "h"})


async def test_garbage_is_a_malformed_answer_and_extra_bytes_end_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    async def odd(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        if n == 1:  # a valid answer followed by bytes nobody asked for
            w.write(answer(206, b"abc", Content_Length="3", ETag='"e"') + b"junk")
            return True
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        return True

    scripted, pool, origin = await serve(odd)
    assert await read_body(pool, origin, 3) == b"abc"
    with pytest.raises(MalformedAnswer):
        await pool.get(origin, "/b/k", {"host": "h"})
    assert scripted.connections == 2  # the first connection was not reused after the junk


async def test_at_most_limit_connections_at_once(serve) -> None:  # type: ignore[no-untyped-def]
    scripted, pool, origin = await serve(ok)
    await asyncio.gather(*(read_body(pool, origin, len(DATA)) for _ in range(12)))
    assert pool.opened <= 4 and scripted.connections <= 4


async def test_a_stalled_body_is_a_read_timeout_but_a_slow_steady_one_is_not(serve) -> None:  # type: ignore[no-untyped-def]
    """The read timeout is per wait (no byte for that long), kept by one timer per
    connection: a body that trickles in over several timeouts' worth of time, each
    gap shorter than the timeout, must arrive whole (the timer armed by the first
    wait re-arms for later ones instead of firing), and a body that stops must fail."""
    piece = len(DATA) // 6

    async def trickle(n: int, head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(answer(206, b"", Content_Length=str(len(DATA)), ETag='"e"'))
        for start in range(0, len(DATA), piece):
            await w.drain()
            if n == 2 and start >= 2 * piece:
                await asyncio.sleep(2)  # stalls for longer than the timeout
                return False
            await asyncio.sleep(0.15)  # each gap half the timeout; 0.9 s in all
            w.write(DATA[start : start + piece])
        await w.drain()
        return True

    _, pool, origin = await serve(trickle, 0.3)
    assert await read_body(pool, origin, len(DATA)) == DATA
    resp = await pool.get(origin, "/b/k", {"host": "h"})
    buf = memoryview(bytearray(len(DATA)))
    got = 0
    with pytest.raises(ReadTimeout):
        while True:
            got += await resp.readinto(buf[got:])
    assert bytes(buf[:got]) == DATA[:got] and got == 2 * piece
    resp.close()
