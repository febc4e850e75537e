"""The demo's sample PDFs are real PDFs: structure checked here, by qpdf when installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from service.local.samples import make_pdf, pdf_problems, sample_pdfs, sample_sizes


@pytest.mark.parametrize("size", [0, 1000, 50_000, 1_500_000])
def test_pdf_structure_and_size(size: int) -> None:
    data = make_pdf("Invoice (copy) \\ 42", size, seed=size)
    assert data.startswith(b"%PDF-1.4\n")
    assert data.endswith(b"%%EOF\n")
    assert pdf_problems(data) == []
    assert abs(len(data) - max(size, 1900)) < 2048


def test_the_checker_catches_a_wrong_xref_offset() -> None:
    data = bytearray(make_pdf("x", 5000))
    at = data.index(b"xref\n0 7\n") + len(b"xref\n0 7\n") + 20  # entry for object 1
    data[at : at + 10] = b"%010d" % (int(data[at : at + 10]) + 1)
    assert pdf_problems(bytes(data)) == ["xref entry 1 points at 16, not at '1 0 obj'"]
    assert "no %%EOF at the end" in pdf_problems(bytes(data[:-7]))


def test_generation_is_deterministic_and_varied() -> None:
    assert make_pdf("a", 10_000, 1) == make_pdf("a", 10_000, 1)
    assert make_pdf("a", 10_000, 1) != make_pdf("a", 10_000, 2)
    sizes = sample_sizes(50, 5_000_000)
    assert abs(sum(sizes) - 5_000_000) < 50 * 1024 and max(sizes) > 3 * min(sizes)
    keys = [s.key for s in sample_pdfs(3, 30_000)]
    assert keys == [
        "samples/document-0000.pdf",
        "samples/document-0001.pdf",
        "samples/document-0002.pdf",
    ]


@pytest.mark.skipif(not shutil.which("qpdf"), reason="qpdf not installed")
def test_qpdf_accepts_a_sample(tmp_path: Path) -> None:
    path = tmp_path / "s.pdf"
    path.write_bytes(make_pdf("Hello", 200_000, 7))
    proc = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="pdftotext not installed")
def test_pdftotext_reads_the_text(tmp_path: Path) -> None:
    path = tmp_path / "s.pdf"
    path.write_bytes(make_pdf("Hello sample", 20_000, 7))
    out = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True)
    assert "Hello sample" in out.stdout
