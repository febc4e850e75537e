"""Real, valid sample PDFs of chosen sizes, in pure Python, for the demo and tests.

Each file is a one-page PDF 1.4 with a line of text and a grey noise image
(deterministic pseudo-random pixels, Flate-compressed) that sets its size.
Noise does not compress, so a file is about as large as asked, and, like
real scanned PDFs, such files gain nothing from deflate in the archive.
The cross-reference table is computed from the real byte offsets;
``pdf_problems`` checks exactly that, so a broken generator fails a test.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

_HEADER = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
_IMAGE_WIDTH = 1024


def _pdf_string(text: str) -> bytes:
    safe = text.encode("latin-1", "replace")
    return b"(" + safe.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def make_pdf(title: str, size: int, seed: int = 0) -> bytes:
    """A valid one-page PDF of about ``size`` bytes (never less than ~900)."""
    rows = max(1, (max(size, 0) - 900) // _IMAGE_WIDTH)
    pixels = random.Random(seed).randbytes(_IMAGE_WIDTH * rows)
    image = zlib.compress(pixels, 1)
    text = b"BT /F1 18 Tf 72 740 Td " + _pdf_string(title) + b" Tj ET\n"
    draw = f"q 468 0 0 {max(1, 468 * rows // _IMAGE_WIDTH)} 72 72 cm /Im1 Do Q\n".encode()
    content = text + draw
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n"
        % (_IMAGE_WIDTH, rows, len(image))
        + image
        + b"\nendstream",
    ]
    out = bytearray(_HEADER)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)


def pdf_problems(data: bytes) -> list[str]:
    """What is structurally wrong with a classic-xref PDF (empty list = nothing)."""
    problems = []
    if not data.startswith(b"%PDF-1."):
        problems.append("no %PDF-1.x header")
    if not data.rstrip().endswith(b"%%EOF"):
        problems.append("no %%EOF at the end")
    match = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    if match is None:
        return [*problems, "no startxref"]
    xref_at = int(match.group(1))
    if data[xref_at : xref_at + 4] != b"xref":
        return [*problems, f"startxref {xref_at} does not point at the xref table"]
    header = re.match(rb"xref\s+0 (\d+)\s+", data[xref_at:])
    if header is None:
        return [*problems, "unreadable xref header"]
    count = int(header.group(1))
    table = xref_at + header.end()
    for number in range(1, count):
        entry = data[table + 20 * number : table + 20 * number + 20]
        offset = int(entry[:10])
        if not data[offset:].startswith(b"%d 0 obj" % number):
            problems.append(f"xref entry {number} points at {offset}, not at '{number} 0 obj'")
    return problems


@dataclass(frozen=True, slots=True)
class Sample:
    key: str
    data: bytes


def sample_sizes(count: int, total_bytes: int, seed: int = 1) -> list[int]:
    """``count`` sizes summing to about ``total_bytes``, spread from small to ~4x average."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.1, 4.0) for _ in range(count)]
    scale = total_bytes / sum(weights)
    return [max(1024, int(w * scale)) for w in weights]


def sample_pdfs(
    count: int, total_bytes: int, prefix: str = "samples/", seed: int = 1
) -> list[Sample]:
    return [
        Sample(f"{prefix}document-{i:04d}.pdf", make_pdf(f"Sample document {i}", size, seed + i))
        for i, size in enumerate(sample_sizes(count, total_bytes, seed))
    ]
