"""Names inside the archive: safe to extract anywhere, and never silently shadowed."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from service.engine.arcnames import FALLBACK_NAME, MAX_NAME_BYTES, sanitize, unique_names

# Keys as S3 users write them: separators, dots and Windows habits are over-represented
# so the generator reaches the interesting cases quickly.
_PIECES = st.sampled_from(["/", "\\", ".", "..", "a", "B", "é", "e\u0301", " ", ":", "C:", "\x00"])
keys = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=12).map("".join),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def assert_safe(name: str) -> None:
    """What every archive name must satisfy, whatever the key was."""
    assert name, "empty name"
    assert not name.startswith("/"), name
    assert "\\" not in name, name
    assert not _CONTROL.search(name), name
    segments = name.split("/")
    assert all(s not in ("", ".", "..") for s in segments), name
    assert not re.match(r"[A-Za-z]:", name), f"drive prefix: {name}"
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert unicodedata.is_normalized("NFC", name)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("docs/a.pdf", "docs/a.pdf"),
        ("../../etc/passwd", "etc/passwd"),
        ("/abs/path.pdf", "abs/path.pdf"),
        ("a//b/./c.pdf", "a/b/c.pdf"),
        ("dir\\sub\\file.pdf", "dir/sub/file.pdf"),
        ("C:\\Windows\\evil.dll", "Windows/evil.dll"),
        ("c:relative.pdf", "relative.pdf"),
        ("\\\\server\\share\\x.pdf", "server/share/x.pdf"),
        ("a\x00b.pdf", "a_b.pdf"),
        ("tab\there\n.pdf", "tab_here_.pdf"),
        ("e\u0301.pdf", "\u00e9.pdf"),  # NFD from macOS becomes NFC
        ("folder/", "folder"),
        ("", FALLBACK_NAME),
        ("..", FALLBACK_NAME),
        ("./../", FALLBACK_NAME),
        ("D:", FALLBACK_NAME),
        (" spaced name .pdf", " spaced name .pdf"),  # spaces are legal and kept
        ("日本語/ファイル.pdf", "日本語/ファイル.pdf"),
        ("a..b/..c/d..", "a..b/..c/d.."),  # dots inside a segment are fine
    ],
)
def test_sanitize_table(key: str, name: str) -> None:
    assert sanitize(key) == name
    assert_safe(sanitize(key))


@given(keys)
@example("/C:/x")
@example("\\\\?\\C:\\x")
@example("..\\..\\x")
def test_sanitize_output_is_always_safe(key: str) -> None:
    assert_safe(sanitize(key))


@given(keys)
def test_sanitize_treats_nfd_and_nfc_alike(key: str) -> None:
    assert sanitize(unicodedata.normalize("NFD", key)) == sanitize(
        unicodedata.normalize("NFC", key)
    )


@given(keys)
@example("C:C:/x")
def test_sanitize_is_idempotent(key: str) -> None:
    assert sanitize(sanitize(key)) == sanitize(key)


def test_long_name_is_cut_to_the_zip_limit() -> None:
    name = sanitize("x" * (MAX_NAME_BYTES + 10))
    assert_safe(name)
    assert name == "x" * len(name)


# Regressions: both were bugs before sanitize re-cleaned after stripping a drive or cutting.
@pytest.mark.parametrize("key", ["/C:/Windows/x.dll", "../C:/x.dll", "C:C:/x.dll"])
def test_no_drive_letter_survives(key: str) -> None:
    assert not re.match(r"^[A-Za-z]:", sanitize(key)), sanitize(key)


@pytest.mark.parametrize("tail", ["/..", "/"])
def test_cutting_a_long_name_keeps_it_safe(tail: str) -> None:
    # 131,072 characters halve to 65,536 (still too long), then to 32,768:
    # the cut lands right after ``tail``.
    head = "b" * (32768 - len(tail)) + tail
    assert_safe(sanitize(head + "c" * (131072 - len(head))))


# ------------------------------------------------------------------ unique_names


def test_renamed_name_still_fits_the_zip_name_field() -> None:
    for name in unique_names(["x" * MAX_NAME_BYTES] * 2):
        assert_safe(name)


@pytest.mark.parametrize(
    ("keys_in", "names_out"),
    [
        (["a.pdf", "b.pdf"], ["a.pdf", "b.pdf"]),
        (["a.pdf", "a.pdf"], ["a.pdf", "a (1).pdf"]),
        (["a.pdf", "A.PDF"], ["a.pdf", "A (1).PDF"]),  # macOS/Windows extract them onto one
        (["d/a.pdf", "d/a.pdf", "d/a.pdf"], ["d/a.pdf", "d/a (1).pdf", "d/a (2).pdf"]),
        # A generated name never takes a later original's: "a (1).pdf" stays with its owner.
        (["a.pdf", "a.pdf", "a (1).pdf"], ["a.pdf", "a (2).pdf", "a (1).pdf"]),
        ([".env", ".env"], [".env", ".env (1)"]),
        (["README", "README"], ["README", "README (1)"]),
        (["x.tar.gz", "x.tar.gz"], ["x.tar.gz", "x.tar (1).gz"]),
        (["../a.pdf", "a.pdf"], ["a.pdf", "a (1).pdf"]),  # equal after sanitizing
        (["e\u0301.pdf", "\u00e9.pdf"], ["\u00e9.pdf", "\u00e9 (1).pdf"]),  # NFD == NFC
        ([], []),
    ],
)
def test_unique_names_table(keys_in: list[str], names_out: list[str]) -> None:
    assert unique_names(keys_in) == names_out


name_lists = st.lists(
    st.one_of(keys, st.sampled_from(["a.pdf", "A.pdf", "a (1).pdf", "a (1) (1).pdf", "d/a.PDF"])),
    max_size=30,
)


@given(name_lists)
@example(["0", "0/0"])  # a file named like a folder another entry needs
def test_unique_names_properties(names: list[str]) -> None:
    out = unique_names(names)
    assert len(out) == len(names)
    assert len({n.casefold() for n in out}) == len(out), out
    assert unique_names(names) == out  # deterministic
    for name in out:
        assert_safe(name)
    cleaned = [sanitize(key) for key in names]
    # Every folder some entry needs: a file of that name cannot be extracted beside it.
    folders = {c.casefold()[:i] for c in cleaned for i, ch in enumerate(c) if ch == "/"}
    seen: set[str] = set()
    for clean, name in zip(cleaned, out, strict=True):
        if clean.casefold() in folders:
            assert name != clean and "(" in name.rpartition("/")[2], "a file never takes a folder"
            assert not any(o.casefold().startswith(name.casefold() + "/") for o in out)
        elif clean.casefold() not in seen:
            assert name == clean, "the first holder of a name keeps it"
            seen.add(clean.casefold())
        else:
            head = clean.rpartition("/")[0]
            assert name.startswith(head), "a renamed entry stays in its directory"
            assert name != clean and "(" in name.rpartition("/")[2]


@given(name_lists)
def test_appending_unrelated_names_changes_nothing_before(names: list[str]) -> None:
    """Names are decided by equal names only. (A later *original* equal to a generated
    name does move the generated one on: originals are reserved first, see the table.)"""
    out = unique_names(names)
    more = unique_names([*names, "zz-unrelated-1.pdf", "zz-unrelated-2.pdf"])
    assert more[: len(out)] == out


@pytest.mark.parametrize(
    ("keys_in", "names_out"),
    [
        (["docs", "docs/x.pdf"], ["docs (1)", "docs/x.pdf"]),
        (["docs/x.pdf", "DOCS"], ["docs/x.pdf", "DOCS (1)"]),
        (["a/b", "a/b/c.pdf", "a"], ["a/b (1)", "a/b/c.pdf", "a (1)"]),
    ],
)
def test_a_file_never_takes_a_folders_name(keys_in: list[str], names_out: list[str]) -> None:
    """No extractor can create a file and a folder of the same name."""
    assert unique_names(keys_in) == names_out
