"""LocalStack without Docker: S3 and SQS from a LocalStack process on this host.

LocalStack needs Python >= 3.12 and pins its own dependencies, so it lives in
a virtual environment of its own (Python 3.13), apart from the suite's. Two
halves:

``python -m tests.support.localstack_host setup VENV``
    run by ``tox -e integration-localstack`` before the tests: finds Python
    3.13 (``ZIPJOBS_LOCALSTACK_PYTHON``, else ``python3.13`` on PATH, else
    pyenv's ``$PYENV_ROOT/versions/3.13*``), creates VENV and installs
    ``localstack-requirements.txt`` (pinned) from the package index, once
    (a stamp holds the requirements' hash), with uv when the ``uv`` package
    is installed (the tox envs add it), else pip. Without Python 3.13 it writes
    the reason to ``VENV.unavailable`` and the tests skip with that one
    line, except under ``ZIPJOBS_REQUIRE_READERS=1`` (CI), where it fails.

``localstack_host_endpoint()``
    starts ``VENV/bin/python -m localstack.runtime.main`` with S3 and SQS
    (plus STS, SSM and Secrets Manager, which some tests use) on a free
    127.0.0.1 port, waits for its health endpoint, and stops it
    (its whole process group) at the end. LocalStack's DynamoDB downloads Java
    and DynamoDB Local when it starts, which cannot happen offline, so the
    job table lives in an in-process moto server reached through the
    per-service endpoint setting (``AWS_ENDPOINT_URL_DYNAMODB``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("localstack-requirements.txt")
VENV_ENV = "ZIPJOBS_LOCALSTACK_VENV"
PYTHON_ENV = "ZIPJOBS_LOCALSTACK_PYTHON"
REQUIRE_ENV = "ZIPJOBS_REQUIRE_READERS"  # CI's "nothing may be skipped" switch
SERVICES = "s3,sqs,sts,ssm,secretsmanager"  # sts, ssm, secretsmanager need no download
START_TIMEOUT_S = 120.0


class LocalStackUnavailableError(RuntimeError):
    """LocalStack cannot run on this machine; the message is the one-line reason."""


def _runs(python: str) -> bool:
    """pyenv's shims exist for every version but fail (127) for one not selected."""
    try:
        return subprocess.run([python, "-c", "import venv"], capture_output=True).returncode == 0
    except OSError:
        return False


def find_python() -> str | None:
    """A working Python 3.13: the explicit setting, pyenv's install, or python3.13 on PATH."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [
        os.environ.get(PYTHON_ENV, ""),
        *sorted(glob.glob(os.path.join(root, "versions", "3.13*", "bin", "python3.13")))[::-1],
        shutil.which("python3.13") or "",
    ]
    return next((c for c in candidates if c and _runs(c)), None)


def _unavailable_marker(venv: Path) -> Path:
    return venv.with_name(venv.name + ".unavailable")


def setup(venv: Path) -> int:
    """Create or refresh the LocalStack venv; 0 when usable or skipped, 1 when required."""
    marker = _unavailable_marker(venv)
    marker.unlink(missing_ok=True)
    python = find_python()
    if python is None:
        reason = (
            f"no Python 3.13 for LocalStack (set {PYTHON_ENV}, put python3.13 on PATH, "
            "or `pyenv install 3.13`)"
        )
        marker.write_text(reason + "\n")
        print(f"localstack: {reason}", file=sys.stderr)
        return 1 if os.environ.get(REQUIRE_ENV) == "1" else 0
    stamp = venv / ".requirements-sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return 0
    shutil.rmtree(venv, ignore_errors=True)
    uv = _uv()
    if uv is not None:  # seconds instead of most of a minute (CI installs it every run)
        subprocess.run([uv, "venv", "-q", "--seed", "--python", python, str(venv)], check=True)
        into = ["--python", str(venv / "bin" / "python")]
        subprocess.run([uv, "pip", "install", "-q", *into, "-r", str(REQUIREMENTS)], check=True)
    else:
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(want + "\n")
    return 0


def _uv() -> str | None:
    """uv's binary when the ``uv`` package is installed here (the localstack tox envs add it)."""
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    return find_uv_bin()


def _venv_python() -> Path:
    venv_name = os.environ.get(VENV_ENV)
    if not venv_name:
        raise LocalStackUnavailableError(
            f"{VENV_ENV} is not set: run through `tox -e integration-localstack`, which makes it"
        )
    venv = Path(venv_name)
    marker = _unavailable_marker(venv)
    if marker.exists():
        raise LocalStackUnavailableError(marker.read_text().strip())
    python = venv / "bin" / "python"
    if not python.exists():
        raise LocalStackUnavailableError(f"no LocalStack virtual environment at {venv}")
    return python


def _free_port() -> int:
    # LocalStack cannot listen on port 0; a port the OS just handed out is the
    # next best (the race with another process taking it is tiny).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as resp:
            services = json.load(resp).get("services", {})
    except (OSError, ValueError):
        return False
    return all(services.get(s) in ("available", "running") for s in SERVICES.split(","))


@contextlib.contextmanager
def localstack_host_endpoint() -> Iterator[str]:
    """A LocalStack process (S3 + SQS) for the block; yields its http URL."""
    python = _venv_python()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="zipjobs-localstack-") as root:
        env = {
            **os.environ,
            "SERVICES": SERVICES,
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "GATEWAY_SERVER": "hypercorn",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "SKIP_INFRA_DOWNLOADS": "1",
            "PERSISTENCE": "0",
            "ACTIVATE_PRO": "0",
            "DISABLE_EVENTS": "1",
            "FILESYSTEM_ROOT": root,
            # Like AWS: presigned URLs are checked (moto does not).
            "S3_SKIP_SIGNATURE_VALIDATION": "0",
        }
        log_path = Path(root) / "localstack.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(python), "-m", "localstack.runtime.main"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while not _ready(url):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = log_path.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"LocalStack did not start on {url}:\n{tail}")
                    time.sleep(0.5)
                yield url
            finally:
                _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "setup":
        sys.exit("usage: python -m tests.support.localstack_host setup VENV_DIR")
    sys.exit(setup(Path(sys.argv[2])))
