"""A fast S3-protocol endpoint for benchmarks: virtual sources, verified-and-discarded uploads.

A benchmark endpoint, not a test double: it implements only the calls the
engine and the baselines make, accepts any signature, and keeps no bytes.
"""

from .content import content_crc32, iter_content, read_content
from .server import Endpoint, create_app, start_endpoint
from .store import Store
from .zipcheck import ZipChecker, ZipReport, names_digest

__all__ = [
    "Endpoint",
    "Store",
    "ZipChecker",
    "ZipReport",
    "content_crc32",
    "create_app",
    "iter_content",
    "names_digest",
    "read_content",
    "start_endpoint",
]
