"""The fault layer in front of the emulator: one ``ChaosProxy`` per service process.

Built on tests/support/fault_proxy.py (its HTTP request reading), but each
request is judged by the process's ``FaultPlan`` (tests/chaos/faults.py),
DynamoDB's 400 KB rule is enforced as AWS does (tests/chaos/item_limit.py),
and every connection carries one request (``Connection: close``), so a cut
or a hang never leaves a half-used connection in a client's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from tests.chaos.faults import ERRORS, FaultPlan, Kind, classify
from tests.chaos.item_limit import ITEM_LIMIT, item_size
from tests.support.fault_proxy import FaultProxy, _Request, error_body, upstream_bytes

KILLS = (Kind.KILL_API_BEFORE_SEND, Kind.KILL_WORKER_MID_PART, Kind.KILL_WORKER_POISON)


def _with_close(head: bytes) -> bytes:
    """The response head with ``Connection: close`` (each connection serves one request)."""
    lines = head.split(b"\r\n")
    kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"


def _error(status: int, code: str, *, json_protocol: bool) -> tuple[bytes, bytes]:
    body, content_type = error_body(code, json_protocol=json_protocol)
    head = (
        f"HTTP/1.1 {status} Injected\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


class ChaosProxy(FaultProxy):
    """``async with ChaosProxy(moto_url, plan, kill=..., dynamodb=...) as p:`` then ``p.url``.

    ``kill`` SIGKILLs the process this proxy serves; ``dynamodb`` is a client
    straight to the emulator, used to measure and restore items.
    """

    def __init__(
        self, upstream_url: str, plan: FaultPlan, *, kill: Callable[[], None], dynamodb: Any
    ) -> None:
        super().__init__(upstream_url)
        self.plan = plan
        self._kill = kill
        self._db = dynamodb

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Held (hung) connections are cancelled when the run ends: that is not an error.
        with contextlib.suppress(asyncio.CancelledError):
            await super()._serve(reader, writer)

    async def _one_exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        raw = await self._read_request(reader, writer)
        if raw is None:
            return False
        split = urllib.parse.urlsplit(raw.target)
        request = classify(
            raw.method,
            urllib.parse.unquote(split.path),
            split.query,
            raw.header("x-amz-target") or "",
            raw.body,
        )
        kind = self.plan.decide(request)
        if kind is not None:
            self.plan.injected[kind] += 1
        if kind in KILLS:
            self._kill()  # the request never reaches AWS: the process dies before it
            return False
        if kind is Kind.HANG:
            await asyncio.sleep(self.plan.config.hang_s)
            return False
        if kind in (Kind.ERROR_5XX, Kind.THROTTLE):
            status, code = ERRORS[(kind, request.service)]
            head, body = _error(status, code, json_protocol=request.service != "s3")
        elif request.service == "dynamodb" and request.operation == "UpdateItem":
            head, body = await self._update_within_limit(raw)
        else:
            head, body = await self._exchange(raw)
        if kind is Kind.RESET:
            # AWS did the work; the answer is cut halfway (or never starts).
            if body:
                writer.write(_with_close(head) + body[: len(body) // 2])
                await writer.drain()
            return False
        writer.write(_with_close(head) + body)
        await writer.drain()
        return False

    async def _exchange(self, raw: _Request) -> tuple[bytes, bytes]:
        """Forward to the emulator; its whole answer (head, body)."""
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        try:
            up_writer.write(upstream_bytes(raw))
            await up_writer.drain()
            response = await up_reader.read()
        finally:
            up_writer.close()
        answer_head, _, body = response.partition(b"\r\n\r\n")
        return answer_head, body

    async def _update_within_limit(self, raw: _Request) -> tuple[bytes, bytes]:
        """Apply an UpdateItem; if the item ends up over 400 KB, undo it and refuse, like AWS."""
        doc = json.loads(raw.body)
        key = {"TableName": doc["TableName"], "Key": doc["Key"], "ConsistentRead": True}
        before = (await self._db.get_item(**key)).get("Item")
        head, body = await self._exchange(raw)
        status = int(head.split(b" ", 2)[1])
        if status == 200:
            after = (await self._db.get_item(**key)).get("Item") or {}
            too_large = item_size(after) > ITEM_LIMIT
        else:
            too_large = b"ValidationException" in body and b"size" in body.lower()
        if not too_large:
            return head, body
        self.plan.injected[Kind.ITEM_TOO_LARGE] += 1
        if before is not None:
            await self._db.put_item(TableName=doc["TableName"], Item=before)
        else:
            await self._db.delete_item(TableName=doc["TableName"], Key=doc["Key"])
        return _error(400, "ValidationException", json_protocol=True)
