"""``zipjobs``: one command, several ways to run the service.

zipjobs demo     the README's main command: everything, end to end, locally
zipjobs dev      API + worker on an embedded local AWS, until Ctrl-C
zipjobs serve    the API against real AWS (configured by ZIPJOBS_* variables)
zipjobs worker   the SQS worker against real AWS
zipjobs zip      one archive, now, without the job API
zipjobs submit   a job on a deployed API: wait, download, check (service/client)
zipjobs upload-samples   sample PDFs into a source bucket
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

from . import engine_cli
from . import settings as settings_module
from .client import cli as client_cli
from .settings import Settings, SettingsError

EXIT_CONFIG = 2
# The variable list lives once, in service/settings.py's docstring.
_VARIABLES = (settings_module.__doc__ or "").split("Variables (required ones first):\n", 1)[-1]
ENV_HELP = "environment:\n" + _VARIABLES


def _settings() -> Settings | None:
    try:
        return Settings.from_env()
    except SettingsError as err:
        print(f"zipjobs: {err}", file=sys.stderr)
        return None


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from .api import open_api_warning, run_server
    from .aws import INTERACTIVE
    from .jobs import JobService
    from .process import setup_logging, stop_on_signals
    from .worker import Worker

    setup_logging()
    if (warning := open_api_warning(args.host, settings.api_token)) is not None:
        logging.getLogger("zipjobs.serve").warning(warning)
    stop = stop_on_signals()
    async with AsyncExitStack() as stack:
        # The API's clients give up quickly (docs/lifecycle.md); a worker in
        # the same process keeps its own, patient ones.
        svc = await stack.enter_async_context(JobService.open(settings, limits=INTERACTIVE))
        worker = None
        if args.with_worker:
            worker_svc = await stack.enter_async_context(JobService.open(settings))
            worker = Worker(
                worker_svc, poll_seconds=args.poll_seconds, grace_seconds=args.grace_seconds
            )
        await run_server(
            svc,
            args.host,
            args.port,
            stop=stop,
            worker=worker,
            on_ready=lambda url: print(f"zipjobs serve: listening on {url}", flush=True),
        )
    return 0


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from .jobs import JobService
    from .process import setup_logging, stop_on_signals
    from .worker import Worker

    setup_logging()
    stop = stop_on_signals()
    async with JobService.open(settings) as svc:
        worker = Worker(svc, poll_seconds=args.poll_seconds, grace_seconds=args.grace_seconds)
        task = asyncio.create_task(worker.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        worker.stop()
        stopper.cancel()
        await task
    return 0


def run_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    return EXIT_CONFIG if settings is None else asyncio.run(_serve(settings, args))


def run_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    return EXIT_CONFIG if settings is None else asyncio.run(_worker(settings, args))


def run_dev(args: argparse.Namespace) -> int:
    from .local.dev import run_dev as dev

    return asyncio.run(dev(args.host, args.port, args.moto_port, args.poll_seconds))


def run_demo(args: argparse.Namespace) -> int:
    from .local.demo import run_demo as demo

    return asyncio.run(demo(args.files, args.total_mb))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zipjobs",
        description="Zip many S3 objects into one S3 archive under a fixed memory budget.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a whole job end to end on an embedded local AWS")
    demo.add_argument("--files", type=int, default=64, help="sample PDFs (default 64)")
    demo.add_argument("--total-mb", type=int, default=40, help="their total size (default 40)")
    demo.set_defaults(handler=run_demo)

    dev = sub.add_parser("dev", help="API + worker on an embedded local AWS, until Ctrl-C")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080, help="API port (0 = any free port)")
    dev.add_argument("--moto-port", type=int, default=0, help="local AWS port (0 = any free)")
    dev.add_argument("--poll-seconds", type=int, default=2, help="SQS long-poll wait")
    dev.set_defaults(handler=run_dev)

    serve = sub.add_parser(
        "serve",
        help="the HTTP API against AWS (ZIPJOBS_* variables)",
        description="Serve the job API against AWS, configured by environment variables.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a service in a container
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--with-worker", action="store_true", help="also run a worker")
    serve.add_argument("--poll-seconds", type=int, default=20, help="SQS long-poll wait")
    serve.add_argument("--grace-seconds", type=float, default=30.0)
    serve.set_defaults(handler=run_serve)

    worker = sub.add_parser(
        "worker",
        help="the SQS worker against AWS (ZIPJOBS_* variables)",
        description="Run jobs from the SQS queue, configured by environment variables.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("--poll-seconds", type=int, default=20, help="SQS long-poll wait")
    worker.add_argument(
        "--grace-seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, how long running jobs may finish before they are released",
    )
    worker.set_defaults(handler=run_worker)

    engine_cli.register(sub)
    client_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
