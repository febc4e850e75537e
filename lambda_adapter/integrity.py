"""Is this package running where it was built for? Checked once per cold start.

A package built for another Python minor version or CPU still imports: the
pure-Python parts work, and the libraries with optional C extensions
(aiohttp, multidict, yarl, frozenlist, propcache) silently fall back to their
pure-Python twins, which are several times slower. Nothing fails, so nothing
would tell. Each handler container therefore logs, at cold start:

* which of those C extensions are in use (by asking each library which
  implementation it picked, not whether a ``.so`` file exists);
* whether the running interpreter and CPU match the build manifest that
  ``tools/build_lambda.py`` writes into the package (``MANIFEST_NAME``).

See docs/packaging.md.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "lambda_manifest.json"

# library -> (module, attribute, the module that attribute comes from when the
# C extension is in use). Each library imports its C class when it can and
# its pure-Python one otherwise, under the same public name.
NATIVE_PROBES: dict[str, tuple[str, str, str]] = {
    "aiohttp": ("aiohttp.http_parser", "HttpResponseParser", "aiohttp._http_parser"),
    "multidict": ("multidict", "MultiDict", "multidict._multidict"),
    "yarl": ("yarl._quoting", "_Quoter", "yarl._quoting_c"),
    "frozenlist": ("frozenlist", "FrozenList", "frozenlist._frozenlist"),
    "propcache": ("propcache._helpers", "under_cached_property", "propcache._helpers_c"),
}

# Lambda's names for the CPU, from Python's.
_ARCHITECTURES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "amd64": "x86_64"}


def native_extensions() -> dict[str, bool]:
    """For each library, True when its C extension is the implementation in use."""
    report = {}
    for library, (module, attribute, native_module) in NATIVE_PROBES.items():
        try:
            obj = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            report[library] = False
            continue
        report[library] = getattr(obj, "__module__", None) == native_module
    return report


def running_target() -> dict[str, str]:
    """The runtime and architecture in Lambda's spelling, e.g. python3.13 / arm64."""
    machine = platform.machine().lower()
    return {
        "runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "architecture": _ARCHITECTURES.get(machine, machine),
    }


def read_manifest(root: Path | None = None) -> dict[str, Any] | None:
    """The build manifest at the package root (beside ``lambda_adapter/``), if any."""
    base = root if root is not None else Path(__file__).resolve().parents[1]
    try:
        data: dict[str, Any] = json.loads((base / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data


@dataclass(frozen=True)
class ColdStartReport:
    native: dict[str, bool]
    running: dict[str, str]
    built_for: dict[str, str] | None

    @property
    def fallbacks(self) -> list[str]:
        return sorted(name for name, native in self.native.items() if not native)

    @property
    def mismatches(self) -> list[str]:
        """``key: built X, running Y`` for each way the manifest disagrees."""
        if self.built_for is None:
            return []
        return [
            f"{key}: built {self.built_for.get(key)}, running {value}"
            for key, value in self.running.items()
            if self.built_for.get(key) != value
        ]

    @property
    def healthy(self) -> bool:
        return not self.fallbacks and not self.mismatches

    def as_log(self) -> dict[str, Any]:
        return {
            "native_extensions": self.native,
            "fallbacks": self.fallbacks,
            "running": self.running,
            "built_for": self.built_for,
            "mismatches": self.mismatches,
        }


def cold_start_report(root: Path | None = None) -> ColdStartReport:
    manifest = read_manifest(root)
    built_for = (
        None if manifest is None else {k: str(manifest.get(k)) for k in ("runtime", "architecture")}
    )
    return ColdStartReport(native_extensions(), running_target(), built_for)
