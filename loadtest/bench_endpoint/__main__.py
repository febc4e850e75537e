"""``python -m loadtest.bench_endpoint [--port N]``: prints ``PORT <n>`` once listening."""

from .server import main

main()
