"""tools/build_lambda.py: reproducible, complete, and inside Lambda's size limits.

The full build downloads manylinux wheels from the package index; it skips
with a reason when pip cannot reach it. The code-only build needs nothing.
"""

from __future__ import annotations

import base64
import email
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.terraform.tfrun import load_build_tool

build_lambda = load_build_tool()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _index_reachable(tmp: Path) -> str | None:
    """None if pip can fetch one small manylinux wheel, else why not."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(tmp),
         "--only-binary=:all:", "--platform", "manylinux2014_aarch64", "--python-version",
         "3.13", "--implementation", "cp", "zipstream-ng==1.9.3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return None if proc.returncode == 0 else f"pip cannot reach the index: {proc.stderr[-200:]}"


def test_code_only_build_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = build_lambda.build(tmp_path / "a.zip", with_dependencies=False)
    b = build_lambda.build(tmp_path / "b.zip", with_dependencies=False)
    assert a.sha256 == b.sha256 == _sha256(tmp_path / "a.zip")
    with zipfile.ZipFile(a.path) as zf:
        names = zf.namelist()
        infos = zf.infolist()
    assert names == sorted(names)
    assert "lambda_adapter/handlers.py" in names and "service/settings.py" in names
    assert not [n for n in names if n.startswith("service/local/")]
    assert not [n for n in names if "__pycache__" in n or n.endswith("/")]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_the_manifest_says_what_was_built_inside_and_beside_the_zip(tmp_path: Path) -> None:
    result = build_lambda.build(
        tmp_path / "x.zip", arch="x86_64", python_version="3.12", with_dependencies=False
    )
    with zipfile.ZipFile(result.path) as zf:
        inner = json.loads(zf.read(build_lambda.MANIFEST_NAME))
    assert result.manifest_path == tmp_path / "x.manifest.json"
    beside = json.loads(result.manifest_path.read_text())
    assert inner["runtime"] == "python3.12" and inner["architecture"] == "x86_64"
    assert inner["python_abi"] == "cp312" and inner["dependencies_bundled"] is False
    # Beside the zip: the same, plus the zip's hash in terraform's filebase64sha256 form.
    digest = base64.b64encode(hashlib.sha256(result.path.read_bytes()).digest()).decode()
    assert beside == {**inner, "package_sha256_base64": digest}


def test_source_date_epoch_sets_the_timestamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    result = build_lambda.build(tmp_path / "e.zip", with_dependencies=False)
    with zipfile.ZipFile(result.path) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}


@pytest.fixture(scope="module")
def full_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lambda-build")
    reason = _index_reachable(tmp / "probe")
    if reason:
        pytest.skip(reason)
    first = build_lambda.build(tmp / "first.zip")
    second = build_lambda.build(tmp / "second.zip")
    print(f"\nlambda.zip: {first.zipped_bytes / 1e6:.1f} MB zipped, "
          f"{first.unzipped_bytes / 1e6:.1f} MB unzipped, {first.files} files")  # fmt: skip
    return first.path, second.path


def test_full_build_is_reproducible(full_builds: tuple[Path, Path]) -> None:
    first, second = full_builds
    assert _sha256(first) == _sha256(second)


def test_full_build_fits_lambda_and_targets_arm64(full_builds: tuple[Path, Path]) -> None:
    first, _ = full_builds
    with zipfile.ZipFile(first) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert first.stat().st_size < build_lambda.MAX_ZIPPED_BYTES
    assert sum(i.file_size for i in infos) < build_lambda.MAX_UNZIPPED_BYTES
    native = [n for n in names if n.endswith(".so")]
    assert native and all("x86_64" not in n for n in native)
    assert any("cpython-313-aarch64" in n for n in native)
    assert not [n for n in names if n.endswith(("/RECORD", ".pyc")) or n.startswith("bin/")]
    with zipfile.ZipFile(first) as zf:
        manifest = json.loads(zf.read(build_lambda.MANIFEST_NAME))
    assert (manifest["runtime"], manifest["architecture"]) == ("python3.13", "arm64")
    # Every bundled distribution is listed with its version (the ones the C checks name too).
    assert {"aiohttp", "multidict", "yarl", "frozenlist", "propcache"} <= set(manifest["packages"])
    assert manifest["packages"]["zipstream-ng"] == "1.9.3"


def test_full_build_bundles_the_botocore_aiobotocore_needs(
    full_builds: tuple[Path, Path],
) -> None:
    """The runtime's own botocore is rarely in aiobotocore's range, so ours must be bundled."""
    from packaging.requirements import Requirement

    first, _ = full_builds
    with zipfile.ZipFile(first) as zf:
        metas = {
            n.split("-")[0].lower(): email.message_from_bytes(zf.read(n))
            for n in zf.namelist()
            if n.endswith(".dist-info/METADATA")
        }
    assert {"aioboto3", "aiobotocore", "botocore", "boto3", "zipstream_ng"} <= set(metas)
    botocore_version = metas["botocore"]["Version"]
    pins = [Requirement(r) for r in metas["aiobotocore"].get_all("Requires-Dist", [])]
    (pin,) = [r for r in pins if r.name == "botocore"]
    assert pin.specifier.contains(botocore_version), (str(pin), botocore_version)
