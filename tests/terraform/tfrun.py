"""Run the Terraform CLI against a copy of terraform/, offline, for the tests.

The CLI and a filesystem mirror of the hashicorp/aws provider come with the
machine image, not from the registry: ``TF_PLUGIN_DIR`` names the mirror (the
directory that holds ``registry.terraform.io``). Without either, the tests
that need them skip with one line saying which is missing.

Each caller works on its own copy of the ``*.tf`` files, so a test never
leaves ``.terraform/`` or a state file in the repository and two sessions
never share a state.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
PLUGIN_DIR_ENV = "TF_PLUGIN_DIR"

# Every service the stack creates resources in; one emulator answers them all.
EMULATED_SERVICES = (
    "apigatewayv2",
    "cloudwatch",
    "dynamodb",
    "events",
    "iam",
    "lambda",
    "logs",
    "s3",
    "sqs",
    "sts",
)


def load_build_tool() -> ModuleType:
    """tools/build_lambda.py as a module (tools/ is not a package)."""
    if "build_lambda" in sys.modules:
        return sys.modules["build_lambda"]
    spec = importlib.util.spec_from_file_location("build_lambda", REPO / "tools/build_lambda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_lambda"] = module
    spec.loader.exec_module(module)
    return module


def missing_tooling() -> str | None:
    """Why the CLI tests cannot run here, or None when they can."""
    if shutil.which("terraform") is None:
        return "terraform CLI not on PATH"
    plugin_dir = os.environ.get(PLUGIN_DIR_ENV, "")
    if not plugin_dir:
        return f"{PLUGIN_DIR_ENV} is not set (the provider mirror's parent directory)"
    if not (Path(plugin_dir) / "registry.terraform.io").is_dir():
        return f"{PLUGIN_DIR_ENV}={plugin_dir} holds no registry.terraform.io mirror"
    return None


@dataclass
class Terraform:
    """One working copy of the configuration and the commands run on it."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def copy_of_config(cls, workdir: Path, extra_env: dict[str, str] | None = None) -> Terraform:
        workdir.mkdir(parents=True, exist_ok=True)
        for tf in TERRAFORM_DIR.glob("*.tf"):
            shutil.copy2(tf, workdir / tf.name)
        env = {
            **os.environ,
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",  # no version check call-home
            # The image points TF_CLI_CONFIG_FILE at a file that may not exist;
            # an empty config keeps the output free of that warning.
            "TF_CLI_CONFIG_FILE": os.devnull,
        }
        env.pop("TF_DATA_DIR", None)
        env.update(extra_env or {})
        return cls(workdir=workdir, env=env)

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run one command; on failure raise with its output, so the test log says why."""
        return self._run(args[0], ["terraform", *args, "-no-color"], self.env, timeout)

    def make(
        self, target: str, timeout: float = 900, **variables: str
    ) -> subprocess.CompletedProcess[str]:
        """The Makefile's ``target`` on this copy (``TF_DIR``), as an operator runs it.

        ``VENV`` is this interpreter's environment, which already holds what a
        build needs (``-o`` its install marker: make would reinstall the
        project into it otherwise). The provider mirror reaches ``tf-init``
        through ``TF_PLUGIN_DIR``, the emulator's endpoints the copy's
        ``*.auto.tfvars.json``.
        """
        venv = sys.prefix
        command = [
            "make", "--no-print-directory", "-C", str(REPO), target,
            f"TF_DIR={self.workdir}", f"VENV={venv}", "-o", f"{venv}/.lambda-installed",
            *(f"{name}={value}" for name, value in variables.items()),
        ]  # fmt: skip
        return self._run(
            f"make {target}", command, {**self.env, "TF_CLI_ARGS": "-no-color"}, timeout
        )

    def _run(
        self, label: str, command: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run(
            command,
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.timings[label] = round(time.monotonic() - started, 1)
        if proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited {proc.returncode}\n"
                f"--- stdout (tail) ---\n{proc.stdout[-4000:]}\n"
                f"--- stderr ---\n{proc.stderr[-4000:]}"
            )
        return proc

    def init(self) -> None:
        plugin_dir = self.env.get(PLUGIN_DIR_ENV) or os.environ[PLUGIN_DIR_ENV]
        self.run("init", "-backend=false", f"-plugin-dir={plugin_dir}", "-input=false")

    def write_vars(self, values: dict[str, Any]) -> Path:
        path = self.workdir / "test.auto.tfvars.json"
        path.write_text(json.dumps(values, indent=2))
        return path

    def outputs(self) -> dict[str, Any]:
        raw = json.loads(self.run("output", "-json").stdout)
        return {name: item["value"] for name, item in raw.items()}


def endpoint_overrides(endpoint_url: str) -> dict[str, str]:
    return {service: endpoint_url for service in EMULATED_SERVICES}
