"""An S3-like link in front of a local endpoint: +latency per request, a per-connection cap.

``netem`` is not available in this kernel, so the link is a TCP proxy. For
each accepted connection it opens one to the upstream and forwards both
directions. Each chunk is released no earlier than ``delay`` after it
arrived (10 ms each way, so about 20 ms per request/response round trip;
the delay is pipelined, not added per chunk) and no faster than ``rate``
bytes/s per direction (a pacing clock, i.e. a token bucket with a one-chunk
burst), which is roughly what one connection to S3 gets (~80 MB/s).

Backpressure is TCP's: a direction holds at most ``QUEUE_CHUNKS`` chunks, then
stops reading its socket.

``--total-mbps`` adds a cap per direction shared by every connection through
the proxy: one machine's network interface (a fan-out benchmark runs one
proxy per worker, so each worker's link is its own; loadtest/README.md).

    python -m loadtest.s3_link_proxy --upstream 127.0.0.1:9000 [--port 0]
    # prints "PORT <n>" once listening
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field

# Big chunks keep the proxy's own CPU low (each chunk costs Python overhead
# and a timer); 256 KiB is 3.3 ms at 80 MB/s, well under the 10 ms delay.
CHUNK = 256 * 1024
QUEUE_CHUNKS = 16  # 4 MiB per direction: more than rate x delay (800 KB)
# Credit a direction may save up while idle; more would let a burst exceed the cap.
BURST_S = 0.002


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One-way delay in seconds and per-connection, per-direction rate in bytes/s."""

    delay_s: float = 0.010
    rate_bps: float = 80e6
    total_bps: float | None = None  # per direction, all connections together


@dataclass(slots=True)
class SharedCap:
    """One direction's capacity shared by all connections: a pacing clock that
    each chunk reserves its transfer time on, first come first served."""

    rate_bps: float
    clock: float = 0.0

    def reserve(self, earliest: float, size: int, now: float) -> float:
        self.clock = max(self.clock, now - BURST_S)
        at = max(earliest, self.clock)
        self.clock = at + size / self.rate_bps
        return at


async def _pump_in(reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
    """Read as fast as the queue allows, stamping each chunk with its arrival time."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await queue.put((time.monotonic(), data))
    except (ConnectionError, OSError):
        pass
    finally:
        await queue.put((time.monotonic(), b""))


async def _pump_out(
    queue: asyncio.Queue[tuple[float, bytes]],
    writer: asyncio.StreamWriter,
    spec: LinkSpec,
    shared: SharedCap | None = None,
) -> None:
    """Release each chunk at max(arrival + delay, when the rate allows).

    ``clock`` is when the link is free again; it never lags ``now`` by more
    than BURST_S, so an idle connection cannot hoard credit.
    """
    clock = 0.0
    try:
        while True:
            arrived, data = await queue.get()
            if not data:
                break
            now = time.monotonic()
            clock = max(clock, now - BURST_S)
            send_at = max(arrived + spec.delay_s, clock)
            if shared is not None:
                send_at = shared.reserve(send_at, len(data), now)
            if send_at > now:
                await asyncio.sleep(send_at - now)
            writer.write(data)
            await writer.drain()
            clock = send_at + len(data) / spec.rate_bps
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _direction(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    spec: LinkSpec,
    shared: SharedCap | None = None,
) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
    await asyncio.gather(_pump_in(reader, queue), _pump_out(queue, writer, spec, shared))


@dataclass(slots=True)
class LinkProxy:
    """A running proxy; ``port`` is where clients connect."""

    server: asyncio.Server
    port: int
    spec: LinkSpec
    connections: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def close(self) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()


async def start_proxy(
    upstream_host: str,
    upstream_port: int,
    *,
    spec: LinkSpec | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> LinkProxy:
    """Start the link in this event loop; returns the proxy (``await proxy.close()``)."""
    spec = spec or LinkSpec()
    proxy: LinkProxy | None = None
    up = SharedCap(spec.total_bps) if spec.total_bps else None
    down = SharedCap(spec.total_bps) if spec.total_bps else None

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        assert proxy is not None
        task = asyncio.current_task()
        assert task is not None
        proxy._tasks.add(task)
        proxy.connections += 1
        try:
            u_reader, u_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            c_writer.close()
            return
        try:
            await asyncio.gather(
                _direction(c_reader, u_writer, spec, up), _direction(u_reader, c_writer, spec, down)
            )
        finally:
            for w in (c_writer, u_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            proxy._tasks.discard(task)

    server = await asyncio.start_server(handle, host, port, backlog=1024)
    bound = int(server.sockets[0].getsockname()[1])
    proxy = LinkProxy(server, bound, spec)
    return proxy


async def measure_link(direct_url: str, linked_url: str, bucket: str, key: str) -> dict[str, float]:
    """What the link adds: median tiny-request latency, and one 64 MiB ranged GET's time.

    Plain aiohttp (no SDK) so the numbers are the link's, not a client's.
    ``key`` must name an object of at least 64 MiB on the endpoint.
    """
    import statistics

    import aiohttp

    async def tiny(session: aiohttp.ClientSession, base: str) -> float:
        times = []
        for _ in range(15):
            t = time.perf_counter()
            async with session.head(f"{base}/{bucket}/{key}") as resp:
                await resp.read()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        out["tiny_direct_ms"] = 1000 * await tiny(session, direct_url)
        out["tiny_linked_ms"] = 1000 * await tiny(session, linked_url)
        t = time.perf_counter()
        headers = {"Range": f"bytes=0-{64 * 1024 * 1024 - 1}"}
        async with session.get(f"{linked_url}/{bucket}/{key}", headers=headers) as resp:
            n = 0
            async for chunk in resp.content.iter_chunked(1024 * 1024):
                n += len(chunk)
        out["get_64mib_linked_s"] = time.perf_counter() - t
        out["get_64mib_linked_mb_s"] = n / 1e6 / out["get_64mib_linked_s"]
    out["added_ms"] = out["tiny_linked_ms"] - out["tiny_direct_ms"]
    return out


async def _serve(upstream: str, port: int, spec: LinkSpec) -> None:
    host, _, up_port = upstream.rpartition(":")
    proxy = await start_proxy(host or "127.0.0.1", int(up_port), spec=spec, port=port)
    print(f"PORT {proxy.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Delaying, rate-capping TCP proxy (an S3-like link).")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the endpoint")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay (default 10)")
    p.add_argument("--rate-mbps", type=float, default=80.0, help="MB/s per connection (80)")
    p.add_argument(
        "--total-mbps",
        type=float,
        default=None,
        help="MB/s per direction for all connections together (default: no such cap)",
    )
    args = p.parse_args(argv)
    total = args.total_mbps * 1e6 if args.total_mbps else None
    spec = LinkSpec(args.delay_ms / 1000, args.rate_mbps * 1e6, total)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.upstream, args.port, spec))


if __name__ == "__main__":
    main()
