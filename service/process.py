"""Process plumbing for every long-running command (``zipjobs serve|worker|dev|demo``).

Logging set-up and SIGINT/SIGTERM handling. It lives at the top of the
package, not under ``local/``, because the production ``serve`` and
``worker`` commands use it as much as the local ones.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

QUIET_LOGGERS = ("werkzeug", "botocore", "aiobotocore", "aioboto3", "urllib3", "moto")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (Ctrl-C, docker stop, ECS)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def freeze_startup_objects() -> None:
    """Keep the objects made by start-up (modules, the SDK's models) out of every
    later garbage collection.

    A one-shot run imports about 560 modules and loads botocore's models
    before its job starts; each full collection during the job would walk
    all of them again, though none becomes garbage (about 20 ms of CPU per
    full collection on the benchmark machine; docs/performance.md).
    ``gc.freeze`` moves them to a permanent generation that collections
    skip; collection itself stays on for everything made afterwards.
    """
    gc.freeze()


def skip_final_collection() -> None:
    """A one-shot command that is about to exit: leave its objects to the OS.

    Python's shutdown ends with a full garbage collection over every object
    still tracked; after a 2,000-object run that walk took about 30 ms of the
    command's wall time, and at 533e02f, before ``freeze_startup_objects``, about
    0.2 s (docs/performance.md). Frozen objects are skipped by it; nothing the
    command still holds needs collecting (files, sockets and the client were
    closed by their owners, and standard streams are flushed at exit anyway).
    """
    gc.freeze()
