"""The streaming ZIP engine: many S3 objects in, one S3 archive out, bounded memory.

Read ``pipeline.py`` first: it joins the stages in the order bytes flow.
"""

from ..units import MiB
from .budget import Budget
from .models import (
    ArchiveTooLargeError,
    BudgetTooSmallError,
    Compression,
    Destination,
    EmptyArchiveError,
    LengthMismatchError,
    MissingPolicy,
    MissingSourcesError,
    Progress,
    RangeNotHonouredError,
    ReadFailedError,
    SourceChangedError,
    SourceObject,
    TooManySourcesError,
    ZipJobError,
    ZipOptions,
    ZipResult,
)
from .pipeline import build_zip
from .planner import list_prefix
from .uploader import content_disposition

__all__ = [
    "ArchiveTooLargeError",
    "Budget",
    "BudgetTooSmallError",
    "Compression",
    "Destination",
    "EmptyArchiveError",
    "LengthMismatchError",
    "MiB",
    "MissingPolicy",
    "MissingSourcesError",
    "Progress",
    "RangeNotHonouredError",
    "ReadFailedError",
    "SourceChangedError",
    "SourceObject",
    "TooManySourcesError",
    "ZipJobError",
    "ZipOptions",
    "ZipResult",
    "build_zip",
    "content_disposition",
    "list_prefix",
]
