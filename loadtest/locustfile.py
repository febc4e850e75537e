"""Locust users for the job API: realistic job shapes, the read path, and bad requests.

Run by loadtest/load_run.py (which starts the stack and seeds the bucket), or
by hand against a running `zipjobs dev` stack:

    LOADTEST_MANIFEST=loadtest/results/tmp/manifest.json \
      locust -f loadtest/locustfile.py --headless -u 10 -r 5 -t 60s --host http://127.0.0.1:8080

Every job user creates a job, polls it with backoff until it is final, and for
READY downloads the archive through its presigned URL and checks it (length
against Content-Length, every CRC with zipfile, the entry count and sizes).
moto does not validate presigned signatures, so this proves the URL points at
the right object, not that the signature is right.

Everything the orchestrator judges (5xx, FAILED jobs, bad archives, latencies,
bytes zipped) is tallied here and written as JSON to $LOADTEST_SUMMARY when
Locust quits; Locust's own CSVs are kept beside it for reference.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import uuid
import zipfile
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from locust import HttpUser, between, events, task

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
JOB_TIMEOUT_S = float(os.environ.get("LOADTEST_JOB_TIMEOUT", "300"))
POLL_FIRST_S, POLL_MAX_S = 0.25, 2.0
CHUNK = 1024 * 1024
DOWNLOAD = "GET archive"
POLL = "GET /zip-jobs/[id] poll"
READ = "GET /zip-jobs/[id] read"
CREATE = "POST /zip-jobs"


def _load_manifest() -> dict[str, Any]:
    path = os.environ.get("LOADTEST_MANIFEST")
    if not path:
        raise SystemExit("LOADTEST_MANIFEST must name the seed manifest (load_run.py writes it)")
    return dict(json.loads(Path(path).read_text()))


MANIFEST = _load_manifest()
SHAPES: dict[str, list[dict[str, Any]]] = MANIFEST["shapes"]
MAX_KEYS: int = int(MANIFEST.get("max_keys") or 1000)


@dataclass
class Tally:
    """Everything judged after the run. One Locust process, gevent: no locking needed."""

    started: float = field(default_factory=time.time)
    stopped: float = 0.0
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    status_counts: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    invalid_archives: list[str] = field(default_factory=list)
    bad_request_mismatch: Counter[str] = field(default_factory=Counter)
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "stopped": self.stopped or time.time(),
            "latency_ms": self.latency_ms,
            "status_counts": dict(self.status_counts),
            "server_errors": self.server_errors[:100],
            "server_error_count": len(self.server_errors),
            "transport_errors": self.transport_errors[:100],
            "transport_error_count": len(self.transport_errors),
            "outcomes": dict(self.outcomes),
            "unexpected": self.unexpected[:100],
            "unexpected_count": len(self.unexpected),
            "invalid_archives": self.invalid_archives[:100],
            "invalid_archive_count": len(self.invalid_archives),
            "bad_request_mismatch": dict(self.bad_request_mismatch),
            "jobs": self.jobs,
        }


TALLY = Tally()
RECENT_JOB_IDS: deque[str] = deque(maxlen=500)
# One verified archive per shape is kept for the orchestrator, which opens it with
# every independent ZIP reader (unzip, 7z, bsdtar, jar): too slow for each archive.
KEEP_DIR = os.environ.get("LOADTEST_KEEP_DIR")
KEPT: set[str] = set()


def keep_archive(shape: str, fh: IO[bytes], keys: list[str]) -> None:
    if not KEEP_DIR or shape in KEPT:
        return
    KEPT.add(shape)
    Path(KEEP_DIR).mkdir(parents=True, exist_ok=True)
    fh.seek(0)
    with open(Path(KEEP_DIR) / f"{shape}.zip", "wb") as out:
        shutil.copyfileobj(fh, out)
    (Path(KEEP_DIR) / f"{shape}.json").write_text(json.dumps({"keys": keys}))


def _on_start(**_: Any) -> None:
    TALLY.started = time.time()


def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    """Every request, API or download: latencies, status classes, 5xx and dead connections."""
    TALLY.latency_ms.setdefault(name, []).append(round(response_time, 2))
    status = getattr(response, "status_code", 0) or 0
    if status == 0 and exception is not None:
        TALLY.transport_errors.append(f"{request_type} {name}: {type(exception).__name__}")
        return
    TALLY.status_counts[f"{status // 100}xx"] += 1
    if status >= 500:
        TALLY.server_errors.append(f"{request_type} {name} -> {status}")


def _on_quit(**_: Any) -> None:
    TALLY.stopped = time.time()
    out = os.environ.get("LOADTEST_SUMMARY")
    if out:
        Path(out).write_text(json.dumps(TALLY.to_json()))


events.test_start.add_listener(_on_start)  # type: ignore[no-untyped-call]
events.request.add_listener(_on_request)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quit)  # type: ignore[no-untyped-call]


def _pick(shape: str, count: int) -> list[dict[str, Any]]:
    objs = SHAPES[shape]
    return random.sample(objs, min(count, len(objs)))


def check_archive(fh: IO[bytes], expected_sizes: list[int]) -> str | None:
    """Why the archive in ``fh`` is wrong, or None: every CRC, the entry count, the sizes."""
    try:
        with zipfile.ZipFile(fh) as zf:
            bad = zf.testzip()
            if bad is not None:
                return f"CRC mismatch in {bad!r}"
            sizes = sorted(i.file_size for i in zf.infolist() if not i.is_dir())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"unreadable: {err}"
    if len(sizes) != len(expected_sizes):
        return f"{len(sizes)} entries, expected {len(expected_sizes)}"
    if sizes != sorted(expected_sizes):
        return "entry sizes differ from the sources"
    return None


class JobUser(HttpUser):
    """Creates jobs, follows them to the end, downloads and checks READY archives."""

    abstract = True
    wait_time = between(1, 3)

    def run_job(
        self,
        shape: str,
        objs: list[dict[str, Any]],
        *,
        missing_keys: tuple[str, ...] = (),
        missing: str = "fail",
    ) -> None:
        keys = [o["key"] for o in objs] + list(missing_keys)
        random.shuffle(keys)
        expect = "FAILED" if missing_keys and missing == "fail" else "READY"
        body = {"keys": keys, "name": f"{shape}-{uuid.uuid4().hex[:8]}.zip", "missing": missing}
        t0 = time.time()
        with self.client.post("/zip-jobs", json=body, name=CREATE, catch_response=True) as r:
            if r.status_code != 202:
                r.failure(f"create answered {r.status_code}")
                TALLY.outcomes["create-refused"] += 1
                return
            job_id = str(r.json()["jobId"])
        RECENT_JOB_IDS.append(job_id)
        TALLY.outcomes["created"] += 1
        doc = self.poll(job_id)
        if doc is None:
            TALLY.outcomes["unfinished"] += 1
            return
        status = doc["status"]
        TALLY.outcomes[status] += 1
        if status != expect:
            detail = json.dumps(doc.get("error", {}))[:300]
            TALLY.unexpected.append(f"{shape} job {job_id}: {status}, expected {expect} {detail}")
            return
        if status == "FAILED":
            self.check_failure(job_id, doc, missing_keys)
            return
        self.download(shape, job_id, doc, objs, t0)

    def poll(self, job_id: str) -> dict[str, Any] | None:
        """The job's final document, or None if it is not final within JOB_TIMEOUT_S."""
        delay = POLL_FIRST_S
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.client.get(f"/zip-jobs/{job_id}", name=POLL, catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"poll answered {r.status_code}")
                    return None
                doc: dict[str, Any] = r.json()
            if doc["status"] in ("READY", "FAILED", "CANCELLED"):
                return doc
            time.sleep(delay)  # gevent-patched: yields to other users
            delay = min(POLL_MAX_S, delay * 1.5)
        return None

    def check_failure(self, job_id: str, doc: dict[str, Any], missing: tuple[str, ...]) -> None:
        named = set(doc.get("error", {}).get("missingKeys", []))
        if not set(missing) <= named:
            TALLY.unexpected.append(f"job {job_id} FAILED without naming all missing keys")

    def download(
        self, shape: str, job_id: str, doc: dict[str, Any], objs: list[dict[str, Any]], t0: float
    ) -> None:
        sizes = [int(o["size"]) for o in objs]
        url = doc.get("downloadUrl")
        if not url:
            TALLY.invalid_archives.append(f"{shape} job {job_id}: READY without downloadUrl")
            return
        if urlsplit(url).hostname not in LOOPBACK_HOSTS:
            TALLY.invalid_archives.append(f"{shape} job {job_id}: download URL is not loopback")
            return
        with (
            tempfile.TemporaryFile() as fh,
            self.client.get(url, name=DOWNLOAD, stream=True, catch_response=True) as r,
        ):
            if r.status_code != 200:
                r.failure(f"download answered {r.status_code}")
                TALLY.invalid_archives.append(f"{shape} job {job_id}: download {r.status_code}")
                return
            got = 0
            for chunk in r.iter_content(CHUNK):
                fh.write(chunk)
                got += len(chunk)
            declared = int(r.headers.get("Content-Length", -1))
            problem = None
            if got != declared:
                problem = f"got {got} bytes, Content-Length {declared}"
            elif doc.get("archiveBytes") not in (None, got):
                problem = f"got {got} bytes, job says {doc['archiveBytes']}"
            else:
                fh.seek(0)
                problem = check_archive(fh, sizes)
            if problem is not None:
                r.failure(problem)
                TALLY.invalid_archives.append(f"{shape} job {job_id}: {problem}")
                return
            keep_archive(shape, fh, [o["key"] for o in objs])
        TALLY.outcomes["verified"] += 1
        TALLY.jobs.append(
            {
                "shape": shape,
                "files": len(sizes),
                "source_bytes": sum(sizes),
                "archive_bytes": got,
                "created_at": doc.get("createdAt"),
                "started_at": doc.get("startedAt"),
                "finished_at": doc.get("finishedAt"),
                "client_seconds": round(time.time() - t0, 3),
            }
        )


class SmallPdfJobs(JobUser):
    """Most traffic: 20-120 small PDFs (letters, invoices)."""

    weight = 4

    @task
    def small_job(self) -> None:
        self.run_job("small", _pick("small", random.randint(20, 120)))


class LargePdfJobs(JobUser):
    """A few big scans in one archive."""

    weight = 1

    @task
    def large_job(self) -> None:
        self.run_job("large", _pick("large", random.randint(1, 2)))


class MixedJobs(JobUser):
    """Small, medium and one large; sometimes with missing keys (fail or skip)."""

    weight = 2

    @task(4)
    def mixed_job(self) -> None:
        objs = _pick("small", random.randint(10, 60)) + _pick("medium", 3) + _pick("large", 1)
        self.run_job("mixed", objs)

    @task(1)
    def missing_fail(self) -> None:
        gone = (f"load/small/gone-{uuid.uuid4().hex[:8]}.pdf",)
        self.run_job("missing-fail", _pick("small", 10), missing_keys=gone, missing="fail")

    @task(1)
    def missing_skip(self) -> None:
        gone = (f"load/small/gone-{uuid.uuid4().hex[:8]}.pdf",)
        self.run_job("missing-skip", _pick("small", 10), missing_keys=gone, missing="skip")


class ReadPath(HttpUser):
    """Hammers GET /zip-jobs/{id}: known jobs, and ids that do not exist (404)."""

    weight = 2
    wait_time = between(0.02, 0.1)

    @task(9)
    def known_job(self) -> None:
        if not RECENT_JOB_IDS:
            self.unknown_job()
            return
        job_id = random.choice(RECENT_JOB_IDS)
        with self.client.get(f"/zip-jobs/{job_id}", name=READ, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"read answered {r.status_code}")

    @task(1)
    def unknown_job(self) -> None:
        with self.client.get(
            f"/zip-jobs/{uuid.uuid4().hex}", name="GET /zip-jobs/[unknown]", catch_response=True
        ) as r:
            if r.status_code == 404:
                r.success()
            else:
                r.failure(f"unknown id answered {r.status_code}")


def _bad_cases() -> list[tuple[str, str, str, dict[str, Any], int]]:
    """(name, method, path, requests kwargs, the status validation.py gives) per bad request."""
    small = SHAPES["small"][0]["key"]
    js = {"Content-Type": "application/json"}
    post = "POST", "/zip-jobs"

    def body(doc: Any) -> dict[str, Any]:
        return {"json": doc}

    too_many = [f"load/small/{i}.pdf" for i in range(MAX_KEYS + 1)]
    return [
        ("bad: malformed json", *post, {"data": b'{"keys": [', "headers": js}, 400),
        ("bad: body is array", *post, body([small]), 422),
        ("bad: empty keys", *post, body({"keys": []}), 422),
        ("bad: key not string", *post, body({"keys": [1, None]}), 422),
        ("bad: unknown field", *post, body({"keys": [small], "x": 1}), 422),
        ("bad: bucket", *post, body({"keys": [small], "bucket": "other-b"}), 403),
        ("bad: outside prefix", *post, body({"keys": ["etc/passwd"]}), 403),
        ("bad: name", *post, body({"keys": [small], "name": "../a.tar"}), 422),
        ("bad: keys+prefix", *post, body({"keys": [small], "prefix": "load/"}), 422),
        ("bad: missing enum", *post, body({"keys": [small], "missing": "x"}), 422),
        ("bad: key too long", *post, body({"keys": ["load/" + "k" * 1100]}), 422),
        ("bad: too many keys", *post, body({"keys": too_many}), 422),
        ("bad: text/plain", *post, {"data": b"x", "headers": {"Content-Type": "text/plain"}}, 415),
        (
            "bad: idempotency key",
            *post,
            {"json": {"keys": [small]}, "headers": {"Idempotency-Key": "a b"}},
            400,
        ),
        ("bad: GET malformed id", "GET", "/zip-jobs/not-a-job", {}, 404),
        ("bad: DELETE unknown", "DELETE", f"/zip-jobs/{uuid.uuid4().hex}", {}, 404),
        ("bad: PUT collection", "PUT", "/zip-jobs", {"json": {}}, 405),
        ("bad: no route", "GET", "/nope", {}, 404),
    ]


class BadRequests(HttpUser):
    """Every bad request must get a 4xx; a 5xx is a bug, another 4xx is a contract drift."""

    weight = 1
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.cases = _bad_cases()

    @task
    def bad_request(self) -> None:
        name, method, path, kwargs, expected = random.choice(self.cases)
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as r:
            if 400 <= r.status_code < 500:
                r.success()
                if r.status_code != expected:
                    TALLY.bad_request_mismatch[f"{name}: {r.status_code} not {expected}"] += 1
            else:
                r.failure(f"expected 4xx, got {r.status_code}")
                if r.status_code < 500:  # a 2xx/3xx for a bad request is wrong too
                    TALLY.unexpected.append(f"{name}: answered {r.status_code}")
