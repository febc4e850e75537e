"""Decode ``Content-Encoding: aws-chunked`` request bodies.

Recent botocore (and boto3 >= 1.36 by default) sends PutObject/UploadPart
bodies with a trailing checksum in this framing:
``<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n ... 0\\r\\n<trailers>\\r\\n\\r\\n``.
The endpoint accepts any signature, so only the framing is undone.
"""

from __future__ import annotations


class AwsChunkedDecoder:
    """Feed raw body bytes; get payload bytes back."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = 0  # payload bytes left in the current chunk
        self._crlf = False  # a CRLF ends each chunk's data
        self.done = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | bytearray]:
        self._buf += data
        out: list[bytes | bytearray] = []
        while not self.done:
            if self._left:
                take = min(self._left, len(self._buf))
                if not take:
                    break
                out.append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._left -= take
                self._crlf = self._left == 0
                continue
            if self._crlf:
                if len(self._buf) < 2:
                    break
                del self._buf[:2]
                self._crlf = False
            end = self._buf.find(b"\r\n")
            if end < 0:
                break
            header = bytes(self._buf[:end]).split(b";", 1)[0].strip()
            del self._buf[: end + 2]
            size = int(header, 16)
            if size == 0:
                self.done = True  # trailers (checksums) follow; ignored
                break
            self._left = size
        return out
