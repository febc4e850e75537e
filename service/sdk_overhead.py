"""Cuts to botocore's per-request CPU that are ours to make (docs/performance.md).

The engine is CPU-bound on many small objects (about 1.5 ms of CPU per
object, most of it in the SDK), so two known costs are removed here, each
guarded so a botocore that changes shape simply keeps its own behaviour:

- **Endpoint resolution per key.** botocore hands the S3 endpoint ruleset
  every parameter the ruleset declares, including ``Key``, ``Prefix`` and
  ``CopySource``, and caches the resolution on all of them: every new key
  re-evaluates the whole ruleset (about 14% of the engine's CPU on 2,000
  small objects; boto/botocore#3528, fixed upstream by #3692, not in the
  botocore that aiobotocore pins). No rule reads those parameters (a test
  checks the ruleset botocore ships), so the client's resolver is given the
  parameter list without them and resolves once per bucket and operation.
- **Timestamps through dateutil.** Every response's ``Last-Modified`` /
  ``LastModified`` goes through ``dateutil.parser`` (about 4% of the CPU on
  small objects). S3 sends only two formats, RFC 7231 dates in headers and
  ISO 8601 in XML bodies, both parsed here by the standard library; anything
  else falls back to botocore's own parser.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from typing import Any

from botocore.utils import parse_timestamp as botocore_parse_timestamp

# Declared by the S3 endpoint ruleset, read by none of its rules.
UNUSED_S3_ENDPOINT_PARAMS = frozenset({"Key", "Prefix", "CopySource"})


def skip_unused_endpoint_params(client: Any) -> bool:
    """Resolve the client's endpoints without the per-key parameters; True if applied."""
    resolver = getattr(client, "_ruleset_resolver", None)
    params = getattr(resolver, "_param_definitions", None)
    if not isinstance(params, dict) or not UNUSED_S3_ENDPOINT_PARAMS & params.keys():
        return False
    # A new dict: the ruleset's own parameter table (used to validate input) stays whole.
    resolver._param_definitions = {  # type: ignore[union-attr]
        k: v for k, v in params.items() if k not in UNUSED_S3_ENDPOINT_PARAMS
    }
    return True


def parse_timestamp(value: Any) -> dt.datetime:
    """botocore's timestamp parser, without dateutil for the two formats S3 sends."""
    if isinstance(value, str):
        try:
            if len(value) >= 20 and value[10] == "T" and value.endswith("Z"):
                return dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=dt.UTC)
            if value.endswith(" GMT"):
                return email.utils.parsedate_to_datetime(value)
        except (ValueError, TypeError):
            pass
    return botocore_parse_timestamp(value)


def use_fast_timestamps(session: Any) -> bool:
    """Make clients of this (aio)botocore session parse timestamps with ``parse_timestamp``."""
    get_component = getattr(session, "get_component", None)
    if get_component is None:
        return False
    factory = get_component("response_parser_factory")
    setter = getattr(factory, "set_parser_defaults", None)
    if setter is None:
        return False
    setter(timestamp_parser=parse_timestamp)
    return True
