"""lambda_adapter.integrity: the cold-start check that the package fits its runtime.

The detector must see a library that fell back to pure Python; the second
test proves it can, by forcing each library's documented opt-out variable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lambda_adapter.integrity import (
    MANIFEST_NAME,
    NATIVE_PROBES,
    cold_start_report,
    native_extensions,
    running_target,
)

# Each library's switch for its pure-Python implementation.
NO_EXTENSIONS = {
    "aiohttp": "AIOHTTP_NO_EXTENSIONS",
    "multidict": "MULTIDICT_NO_EXTENSIONS",
    "yarl": "YARL_NO_EXTENSIONS",
    "frozenlist": "FROZENLIST_NO_EXTENSIONS",
    "propcache": "PROPCACHE_NO_EXTENSIONS",
}


def test_every_c_extension_is_in_use_in_the_tested_environment() -> None:
    """Fails if any library the service depends on runs its pure-Python fallback here."""
    report = native_extensions()
    assert set(report) == set(NATIVE_PROBES)
    assert [name for name, native in report.items() if not native] == []


@pytest.mark.parametrize("library", sorted(NO_EXTENSIONS))
def test_a_fallback_to_pure_python_is_seen(library: str) -> None:
    env = {**os.environ, NO_EXTENSIONS[library]: "1"}
    code = "import json; from lambda_adapter.integrity import native_extensions as n; " \
        "print(json.dumps(n()))"  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    report = json.loads(out)
    assert report[library] is False
    # The switch is per library: the others keep their C code.
    assert all(native for name, native in report.items() if name != library)


def _write_manifest(root: Path, runtime: str, architecture: str) -> Path:
    (root / MANIFEST_NAME).write_text(
        json.dumps({"runtime": runtime, "architecture": architecture, "packages": {}})
    )
    return root


def test_a_matching_manifest_is_healthy(tmp_path: Path) -> None:
    here = running_target()
    report = cold_start_report(_write_manifest(tmp_path, here["runtime"], here["architecture"]))
    assert report.mismatches == [] and report.healthy
    assert report.as_log()["built_for"] == here


def test_a_package_built_for_another_python_or_cpu_is_reported(tmp_path: Path) -> None:
    here = running_target()
    other_cpu = "x86_64" if here["architecture"] == "arm64" else "arm64"
    report = cold_start_report(_write_manifest(tmp_path, "python3.9", other_cpu))
    assert not report.healthy
    assert report.mismatches == [
        f"runtime: built python3.9, running {here['runtime']}",
        f"architecture: built {other_cpu}, running {here['architecture']}",
    ]


def test_no_manifest_is_not_a_mismatch(tmp_path: Path) -> None:
    """Run from a source tree (tests, zipjobs dev) there is no manifest to compare with."""
    report = cold_start_report(tmp_path)
    assert report.built_for is None and report.mismatches == []
