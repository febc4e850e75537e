"""Build the Lambda deployment package (build/lambda.zip), reproducibly.

    python tools/build_lambda.py                       # arm64, python3.13 -> build/lambda.zip
    python tools/build_lambda.py --arch x86_64 --python-version 3.12
    python tools/build_lambda.py --no-deps -o x.zip    # our code only (tests, smoke deploys)

The package holds our code (``service`` without its embedded-emulator
subpackage, and ``lambda_adapter``) plus the runtime dependencies from
pyproject.toml (``[project.dependencies]`` and the ``lambda`` extra) as
manylinux wheels for the target architecture and Python, installed with
``pip install --platform ... --only-binary=:all: --target``.

Why boto3/botocore are bundled although the Lambda runtime ships them:
aiobotocore patches botocore internals and pins a narrow botocore range (and
boto3 exactly); the runtime's copy is whatever AWS last rolled out, usually
outside that range, and it changes without notice. So the whole closure is
bundled, and by default pinned (``-c``) to the versions installed in the
environment running this script: the package carries what the test suite
ran against. Only files nothing imports at run time are left out.

Reproducible: entries in sorted order, every timestamp SOURCE_DATE_EPOCH
(else 1980-01-01, the ZIP epoch), modes 0644, no directory entries, no
``__pycache__``, no pip bookkeeping (RECORD, INSTALLER, direct_url.json...).
The same inputs give the same bytes (with the same zlib).

Manifest: ``lambda_manifest.json`` at the package root says what the package
was built for (Lambda runtime, architecture, CPython ABI, manylinux
platforms) and the version of every bundled distribution; the handlers
compare it with the interpreter they run on at cold start. A copy beside the
zip (``lambda.manifest.json``) also carries the zip's base64 SHA-256, so
Terraform can refuse a ``lambda_runtime``/``lambda_architecture`` that
disagrees with it, or a manifest left over from another build
(docs/packaging.md).
"""

from __future__ import annotations

import argparse
import base64
import email
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "build" / "lambda.zip"
DEFAULT_PYTHON = "3.13"
DEFAULT_ARCH = "arm64"
MANIFEST_NAME = "lambda_manifest.json"  # lambda_adapter.integrity reads it
MANIFEST_FORMAT = 1

# Our packages, and what of them stays out of the Lambda.
OUR_PACKAGES = ("service", "lambda_adapter")
OUR_EXCLUDED_DIRS = ("service/local",)  # embedded moto stack for `zipjobs demo`/`dev`
OUR_DATA_SUFFIXES = (".py", ".json", ".yaml", ".typed")

PLATFORMS = {
    # manylinux2014 first; newer tags let pip take wheels that only ship those.
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
}

# Lambda limits for a zip uploaded directly (we stay well under them).
MAX_ZIPPED_BYTES = 50 * 1024 * 1024
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024

# Never imported at run time: pip bookkeeping, caches, console scripts, tests.
# (pip --target puts console scripts in a top-level bin/; psutil ships its tests.)
_DROP_DIRS = {"__pycache__", "tests"}
_DROP_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"}
_DROP_SUFFIXES = (".pyc", ".pyo", ".pyi")
ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z


@dataclass(frozen=True)
class BuildResult:
    path: Path
    files: int
    zipped_bytes: int
    unzipped_bytes: int
    sha256: str
    manifest_path: Path


def runtime_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The project's run-time dependencies plus its ``lambda`` extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"].get("lambda", [])]


def tested_versions_constraints() -> str:
    """``name==version`` of every distribution in this environment (pip ``-c`` file)."""
    lines = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            lines.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={dist.version}")
    return "\n".join(sorted(lines)) + "\n"


def pip_install(
    target: Path, requirements: Sequence[str], arch: str, python_version: str, pin: bool
) -> None:
    """Install manylinux wheels for the target into ``target`` (no source builds)."""
    cmd = [
        sys.executable, "-m", "pip", "install",
        "--quiet", "--disable-pip-version-check", "--no-compile", "--no-cache-dir",
        "--target", str(target),
        "--implementation", "cp",
        "--python-version", python_version,
        "--only-binary=:all:",
    ]  # fmt: skip
    for platform in PLATFORMS[arch]:
        cmd += ["--platform", platform]
    with tempfile.TemporaryDirectory() as tmp:
        if pin:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text(tested_versions_constraints())
            cmd += ["-c", str(constraints)]
        subprocess.run([*cmd, *requirements], check=True)  # noqa: S603


def _dropped(rel: PurePosixPath) -> bool:
    parts = rel.parts
    if parts[0] == "bin" or any(p in _DROP_DIRS for p in parts[:-1]):
        return True
    if rel.suffix in _DROP_SUFFIXES:
        return True
    return len(parts) >= 2 and parts[-2].endswith(".dist-info") and parts[-1] in _DROP_DIST_INFO


def site_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(archive name, file) for every installed file that is needed at run time."""
    for path in root.rglob("*"):
        if path.is_file():
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if not _dropped(rel):
                yield str(rel), path


def our_files(repo: Path = REPO) -> Iterator[tuple[str, Path]]:
    """(archive name, file) for our packages' sources and data."""
    for package in OUR_PACKAGES:
        for path in (repo / package).rglob("*"):
            rel = path.relative_to(repo).as_posix()
            if not path.is_file() or "__pycache__" in rel:
                continue
            if any(rel.startswith(d + "/") for d in OUR_EXCLUDED_DIRS):
                continue
            if path.suffix in OUR_DATA_SUFFIXES:
                yield rel, path


def bundled_versions(site: Path) -> dict[str, str]:
    """``{normalised name: version}`` of every distribution pip installed into ``site``."""
    versions = {}
    for metadata in site.glob("*.dist-info/METADATA"):
        meta = email.message_from_bytes(metadata.read_bytes())
        versions[re.sub(r"[-_.]+", "-", meta["Name"]).lower()] = meta["Version"]
    return dict(sorted(versions.items()))


def manifest(
    arch: str, python_version: str, packages: dict[str, str], with_dependencies: bool
) -> dict[str, object]:
    """What the package was built for; names as Lambda and pip spell them."""
    return {
        "format": MANIFEST_FORMAT,
        "runtime": f"python{python_version}",
        "architecture": arch,
        "python_abi": "cp" + python_version.replace(".", ""),
        "platforms": list(PLATFORMS[arch]),
        "dependencies_bundled": with_dependencies,
        "packages": packages,
    }


def manifest_path_for(output: Path) -> Path:
    """build/lambda.zip -> build/lambda.manifest.json (terraform reads it there)."""
    return output.with_name(output.stem + ".manifest.json")


def write_sidecar_manifest(output: Path, content: dict[str, object]) -> Path:
    """The manifest beside the zip, bound to it by the zip's base64 SHA-256."""
    digest = base64.b64encode(hashlib.sha256(output.read_bytes()).digest()).decode()
    path = manifest_path_for(output)
    path.write_text(json.dumps({**content, "package_sha256_base64": digest}, indent=2) + "\n")
    return path


def zip_timestamp() -> tuple[int, int, int, int, int, int]:
    """SOURCE_DATE_EPOCH (clamped to the ZIP epoch) or 1980-01-01, in UTC."""
    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", ZIP_EPOCH)), ZIP_EPOCH)
    t = time.gmtime(epoch)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec - t.tm_sec % 2)


def write_zip(entries: dict[str, Path], output: Path) -> None:
    """Deterministic zip: sorted names, fixed date, mode 0644, deflate level 9."""
    stamp = zip_timestamp()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so external_attr carries the mode
            info.external_attr = (0o100644 & 0xFFFF) << 16
            zf.writestr(info, entries[name].read_bytes(), compresslevel=9)
    tmp.replace(output)


def build(
    output: Path = DEFAULT_OUTPUT,
    *,
    arch: str = DEFAULT_ARCH,
    python_version: str = DEFAULT_PYTHON,
    with_dependencies: bool = True,
    pin_to_environment: bool = True,
) -> BuildResult:
    entries: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="lambda-build-") as tmp:
        site = Path(tmp) / "site"
        packages: dict[str, str] = {}
        if with_dependencies:
            pip_install(site, runtime_requirements(), arch, python_version, pin_to_environment)
            entries.update(site_files(site))
            packages = bundled_versions(site)
        for name, path in our_files():
            if name in entries:
                raise SystemExit(f"{name} is both ours and a dependency's")
            entries[name] = path
        content = manifest(arch, python_version, packages, with_dependencies)
        inner = Path(tmp) / MANIFEST_NAME
        inner.write_text(json.dumps(content, indent=2) + "\n")
        entries[MANIFEST_NAME] = inner
        unzipped = sum(p.stat().st_size for p in entries.values())
        write_zip(entries, output)
    manifest_file = write_sidecar_manifest(output, content)
    data = output.read_bytes()
    return BuildResult(
        path=output,
        files=len(entries),
        zipped_bytes=len(data),
        unzipped_bytes=unzipped,
        sha256=hashlib.sha256(data).hexdigest(),
        manifest_path=manifest_file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default=DEFAULT_ARCH)
    parser.add_argument(
        "--python-version", default=DEFAULT_PYTHON, help="the Lambda runtime's, e.g. 3.13"
    )
    parser.add_argument("--no-deps", action="store_true", help="our code only")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let pip pick the newest versions instead of this environment's",
    )
    args = parser.parse_args(argv)
    result = build(
        args.output,
        arch=args.arch,
        python_version=args.python_version,
        with_dependencies=not args.no_deps,
        pin_to_environment=not args.no_pin,
    )
    print(
        f"{result.path}: {result.files} files, "
        f"{result.zipped_bytes / 1e6:.1f} MB zipped, "
        f"{result.unzipped_bytes / 1e6:.1f} MB unzipped, "
        f"sha256 {result.sha256}; manifest {result.manifest_path}"
    )
    if result.zipped_bytes > MAX_ZIPPED_BYTES or result.unzipped_bytes > MAX_UNZIPPED_BYTES:
        print("error: over Lambda's 50 MB zipped / 250 MB unzipped limits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
