"""Turn S3 keys into safe, unique names inside the archive.

Pure functions. Two promises: no name escapes the extraction directory
(``..``, absolute paths, drive letters, backslashes, NUL), and no entry is
silently shadowed by another with the same name, which is what users of other
zippers lose files to (s3-zip #66, client-zip #32).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Control characters (including NUL) make names that some extractors truncate
# or refuse; they are replaced, not dropped, so distinct keys stay distinct.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_NAME_BYTES = 65535  # the ZIP name-length field is 16 bits
FALLBACK_NAME = "unnamed"


def sanitize(name: str) -> str:
    """Return a relative POSIX path that stays inside the archive root.

    Backslashes become separators (Windows extractors treat them so), drive
    prefixes and leading slashes go, and ``.``/``..``/empty segments are
    dropped: ``../../etc/passwd`` becomes ``etc/passwd``. Names are
    NFC-normalised so the same visible name from macOS (NFD) and Linux (NFC)
    sources dedupes. An over-long name is cut and cleaned again, so the cut
    cannot leave a ``..`` or a trailing ``/`` behind.
    """
    name = unicodedata.normalize("NFC", name)
    name = _CONTROL.sub("_", name).replace("\\", "/")
    cleaned = _clean_segments(name)
    while len(cleaned.encode("utf-8")) > MAX_NAME_BYTES:
        cut = cleaned.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
        cleaned = _clean_segments(cut)
    return cleaned or FALLBACK_NAME


def _clean_segments(name: str) -> str:
    """Drop empty, ``.`` and ``..`` segments and any drive prefix (``C:``) in front."""
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    while parts and _DRIVE.match(parts[0]):
        parts[0] = _DRIVE.sub("", parts[0], count=1)
        if parts[0] in ("", ".", ".."):
            parts.pop(0)
    return "/".join(parts)


def _with_suffix(name: str, n: int) -> str:
    """``dir/a.pdf`` -> ``dir/a (n).pdf``; a dotfile or bare name gets it at the end.

    The stem is shortened if needed so the result still fits the ZIP name field.
    """
    head, sep, base = name.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not stem:  # no extension, or a dotfile like ".env"
        stem, dot, ext = base, "", ""
    suffix = f" ({n}){dot}{ext}"
    room = MAX_NAME_BYTES - len(f"{head}{sep}{suffix}".encode())
    stem = stem.encode()[: max(room, 1)].decode("utf-8", errors="ignore") or "_"
    return f"{head}{sep}{stem}{suffix}"


def _folders(names: Iterable[str]) -> set[str]:
    """Every folder the names imply, casefolded: ``a/b/c.pdf`` -> ``a``, ``a/b``."""
    out: set[str] = set()
    for name in names:
        parts = name.casefold().split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def unique_names(names: Iterable[str]) -> list[str]:
    """Sanitize and deduplicate, deterministically, in input order.

    Comparison ignores case because macOS and Windows extract ``A.pdf`` over
    ``a.pdf``. A generated name never takes a later original's either: for
    ``a.pdf, a.pdf, a (1).pdf`` the second becomes ``a (2).pdf`` and the third
    keeps ``a (1).pdf``. Two passes make that possible: every original name is
    reserved by its first holder, then the clashes are renamed.

    A file may not have the name of a folder another entry needs (``docs``
    next to ``docs/x.pdf``): no extractor can create both, so the file is
    renamed ``docs (1)``.
    """
    cleaned = [sanitize(n) for n in names]
    folders = _folders(cleaned)
    first_owner: dict[str, int] = {}
    for i, name in enumerate(cleaned):
        first_owner.setdefault(name.casefold(), i)
    taken = set(first_owner) | folders
    out: list[str] = []
    for i, name in enumerate(cleaned):
        key = name.casefold()
        if first_owner[key] == i and key not in folders:
            out.append(name)
            continue
        n = 1
        while (candidate := _with_suffix(name, n)).casefold() in taken:
            n += 1
        taken.add(candidate.casefold())
        out.append(candidate)
    return out
