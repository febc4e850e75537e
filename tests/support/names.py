"""Oracles for archive entry names: what a safe, extractable set of names looks like.

Written apart from ``service/engine/arcnames.py`` on purpose: a test that
checked names with the code under test would pass whatever that code does.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path


def archive_names(path: Path) -> list[str]:
    """Entry names in central-directory order (the engine keeps the sources' order)."""
    with zipfile.ZipFile(path) as zf:
        return [i.filename for i in zf.infolist()]


_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def unsafe_name_reasons(name: str) -> list[str]:
    """Why ``name`` could escape or confuse an extraction directory (empty: it is safe)."""
    reasons = []
    if not name:
        reasons.append("empty")
    if name.startswith("/"):
        reasons.append("absolute")
    if "\\" in name:
        reasons.append("backslash")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        reasons.append("control character")
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments):
        reasons.append("empty, . or .. segment")
    if len(segments[0]) >= 2 and segments[0][1] == ":" and segments[0][0] in _ASCII_LETTERS:
        reasons.append("drive letter")
    return reasons


def file_folder_clashes(names: Sequence[str]) -> list[str]:
    """Names that are also a folder of another name (``docs`` and ``docs/x.pdf``),
    ignoring case: no extractor can create both."""
    folders: set[str] = set()
    for name in names:
        parts = name.casefold().split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return [n for n in names if n.casefold() in folders]
