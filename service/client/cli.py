"""``zipjobs submit`` and ``zipjobs upload-samples``: the deployed stack from a terminal.

submit          POST /zip-jobs (keys, a keys file or a prefix), wait with a progress
                bar, download the archive and check it; SigV4 (default), a bearer
                token/JWT (--token or ZIPJOBS_API_TOKEN) or no auth
upload-samples  put generated sample PDFs into the source bucket (normal AWS credentials)

Exit codes: 0 READY and the archive checks out; 1 the job FAILED/CANCELLED,
the archive is bad, or the API refused the request; 2 usage/configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine_cli import add_keys_file_options, read_keys
from .auth import Auth, AuthError, BearerAuth, NoAuth, sigv4_from_chain
from .progress import bar
from .remote import ApiError, WaitTimeout, ZipJobsApi, archive_problems, download

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

EXIT_OK, EXIT_JOB, EXIT_USAGE = 0, 1, 2
TOKEN_ENV = "ZIPJOBS_API_TOKEN"  # noqa: S105 - a variable name, not a secret
API_URL_ENV = "ZIPJOBS_API_URL"


def job_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body from the command line."""
    doc: dict[str, Any] = {}
    if args.prefix is not None:
        doc["prefix"] = args.prefix
    else:
        doc["keys"] = list(args.keys or []) or read_keys(
            args.keys_file, args.keys_format, trim=args.trim_keys, comments=args.comments
        )
    for name in ("bucket", "name", "missing"):
        if getattr(args, name) is not None:
            doc[name] = getattr(args, name)
    return doc


def choose_auth(args: argparse.Namespace) -> Auth:
    token = args.token or os.environ.get(TOKEN_ENV)
    if args.auth == "none":
        return NoAuth()
    if args.auth == "bearer" or (args.auth == "auto" and token):
        if not token:
            raise AuthError(f"--auth bearer needs --token or {TOKEN_ENV}")
        return BearerAuth(token)
    return sigv4_from_chain(args.api, args.region, args.profile)


class ProgressLine:
    """Redraws one line on a terminal; prints a line per change otherwise (logs, CI)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, job: dict[str, Any]) -> None:
        line = bar(job)
        if self.quiet or line == self.last:
            return
        self.last = line
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr)

    def close(self) -> None:
        if self.tty and self.last and not self.quiet:
            print(file=sys.stderr)


def run_submit(args: argparse.Namespace) -> int:
    if not args.api:
        print(f"zipjobs submit: --api or {API_URL_ENV} is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        api = ZipJobsApi(args.api, choose_auth(args), timeout=args.http_timeout)
        accepted = api.submit(job_request(args))
    except (AuthError, OSError) as err:
        print(f"zipjobs submit: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as err:
        print(f"zipjobs submit: the API refused the job: {err}", file=sys.stderr)
        return EXIT_JOB
    job_id = accepted["jobId"]
    print(f"job {job_id} {accepted.get('status', '')}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return EXIT_OK
    progress = ProgressLine(args.quiet)
    try:
        job = api.wait(
            job_id, timeout=args.wait_timeout, poll_seconds=args.poll, on_update=progress
        )
    except (WaitTimeout, ApiError) as err:
        progress.close()
        print(f"zipjobs submit: {err}", file=sys.stderr)
        return EXIT_JOB
    progress.close()
    return finish(job, args.out)


def finish(job: dict[str, Any], out: Path | None) -> int:
    """Download and check a final job's archive; say what happened."""
    if job["status"] != "READY":
        print(f"job {job['jobId']} {job['status']}: {job.get('error', '')}", file=sys.stderr)
        return EXIT_JOB
    dest = out or Path(f"{job.get('name') or job['jobId']}")
    if dest.suffix != ".zip" and out is None:
        dest = dest.with_name(dest.name + ".zip")
    sha256 = download(job["downloadUrl"], dest)  # the URL itself is never printed
    problems = archive_problems(dest, job)
    for problem in problems:
        print(f"zipjobs submit: {dest}: {problem}", file=sys.stderr)
    if job.get("skippedKeys"):
        print(f"skipped (missing): {len(job['skippedKeys'])} keys", file=sys.stderr)
    print(f"{dest}  {dest.stat().st_size} bytes  sha256 {sha256}")
    return EXIT_JOB if problems else EXIT_OK


def s3_client(endpoint_url: str | None, region: str | None) -> S3Client:
    import boto3

    client: S3Client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
    return client


def run_upload_samples(args: argparse.Namespace) -> int:
    from ..local.samples import sample_pdfs

    s3 = s3_client(args.endpoint_url, args.region)
    samples = sample_pdfs(args.count, args.total_mb * 1_000_000, prefix=args.prefix)
    for sample in samples:
        s3.put_object(
            Bucket=args.bucket, Key=sample.key, Body=sample.data, ContentType="application/pdf"
        )
    total = sum(len(s.data) for s in samples)
    print(
        f"uploaded {len(samples)} PDFs ({total / 1e6:.1f} MB) to s3://{args.bucket}/{args.prefix}"
    )
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``submit`` and ``upload-samples`` to the ``zipjobs`` parser."""
    p = subparsers.add_parser(
        "submit",
        help="submit a job to a deployed API, wait, download and check the archive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--api", default=os.environ.get(API_URL_ENV), help=f"API URL ({API_URL_ENV})")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--keys", nargs="+", metavar="KEY", help="source keys")
    what.add_argument("--keys-file", type=Path, metavar="FILE", help="keys ('-' = stdin)")
    what.add_argument("--prefix", help="every object under this prefix")
    add_keys_file_options(p)
    p.add_argument("--bucket", help="source bucket (default: the stack's first)")
    p.add_argument("--name", help="archive name")
    p.add_argument("--missing", choices=["fail", "skip"], help="what to do with missing keys")
    p.add_argument("--auth", choices=["auto", "sigv4", "bearer", "none"], default="auto",
                   help="auto: bearer if a token is given, else SigV4")  # fmt: skip
    p.add_argument("--token", help=f"bearer token or JWT (default: ${TOKEN_ENV})")
    p.add_argument("--region", help="for SigV4 (default: from the URL or the AWS config)")
    p.add_argument("--profile", help="AWS profile for SigV4")
    p.add_argument("-o", "--out", type=Path, help="where to save the archive")
    p.add_argument("--no-wait", action="store_true", help="print the job id and exit")
    p.add_argument("--wait-timeout", type=float, default=3600, help="seconds (default 3600)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between status reads")
    p.add_argument("--http-timeout", type=float, default=30.0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_submit)

    u = subparsers.add_parser(
        "upload-samples", help="put generated sample PDFs into a bucket (AWS credentials)"
    )
    u.add_argument("--bucket", required=True, help="the stack's source bucket")
    u.add_argument("--prefix", default="samples/", help="key prefix (default samples/)")
    u.add_argument("--count", type=int, default=20)
    u.add_argument("--total-mb", type=int, default=10, help="their total size (default 10)")
    u.add_argument("--endpoint-url", help="S3-compatible endpoint (local emulator)")
    u.add_argument("--region")
    u.set_defaults(handler=run_upload_samples)
