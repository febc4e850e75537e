"""Keys files keep every legal S3 key.

S3 keys are any UTF-8 up to 1,024 bytes, spaces and ``#`` included
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html), so
the default reading of a keys file may not trim or drop anything a key can hold.
"""

from __future__ import annotations

import json

import pytest

from service.engine_cli import one_line, parse_keys

AWKWARD = [" lead.pdf", "trail.pdf ", "#hash.pdf", "tab\tin.pdf", "cr\rin.pdf", "a\u2028b.pdf"]


def test_lines_are_keys_exactly_as_written() -> None:
    data = ("\n".join(AWKWARD) + "\n").encode()
    assert parse_keys(data) == AWKWARD


def test_blank_lines_are_not_keys_and_crlf_is_kept() -> None:
    # An empty key is illegal; a "\r" before "\n" is part of the key, as written.
    assert parse_keys(b"a\n\nb\r\n") == ["a", "b\r"]


def test_trimming_and_comments_only_when_asked() -> None:
    data = b"  a.pdf \n# note\n#x.pdf\n"
    assert parse_keys(data) == ["  a.pdf ", "# note", "#x.pdf"]
    assert parse_keys(data, trim=True) == ["a.pdf", "# note", "#x.pdf"]
    assert parse_keys(data, trim=True, comments=True) == ["a.pdf"]


def test_jsonl_and_nul_carry_keys_with_newlines() -> None:
    keys = [*AWKWARD, "new\nline.pdf"]
    jsonl = "\n".join(json.dumps(k) for k in keys).encode() + b"\n\n"
    assert parse_keys(jsonl, "jsonl") == keys
    assert parse_keys("\0".join(keys).encode() + b"\0", "nul") == keys


def test_a_jsonl_line_that_is_not_a_string_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_keys(b'"a"\n{"k": 1}\n', "jsonl")


def test_one_line_joins_notes_and_flattens_newlines() -> None:
    err = RuntimeError("first\nsecond")
    err.add_note("abort failed:\n  detail")
    assert one_line(err) == "first second; abort failed: detail"
