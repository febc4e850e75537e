"""The fast GET path verifies TLS exactly as the botocore client does (its CA bundle).

It sends on the client's own aiohttp session, so the CA bundle given to the
client (``AWS_CA_BUNDLE`` here, as for a private CA) is what it trusts: a
server certified by that CA is read, and a server certified by another CA is
refused with the same botocore ``SSLError`` as botocore's own path raises.
Checked over real TLS against the benchmark endpoint.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import trustme
from botocore.exceptions import SSLError
from botocore.retries import standard

from loadtest.bench_endpoint.server import add_tls_port, start_endpoint
from loadtest.bench_keys import seed_keys
from service.aws import AwsSettings, aws_client
from service.s3_ranged_get import (
    BotocoreRangedGet,
    FastRangedGet,
    RangedAnswer,
    RangedGet,
    ranged_get_for,
)

BUCKET = "tls-bucket"
KEY = seed_keys("src/", 1)[0]


@pytest_asyncio.fixture
async def tls_url() -> AsyncIterator[tuple[str, trustme.CA]]:
    """The benchmark endpoint on HTTPS with a certificate from a CA made for the test,
    holding one virtual 10,000-byte source, ``KEY`` in ``BUCKET``."""
    runner, port = await start_endpoint()
    try:
        async with aiohttp.ClientSession() as http:
            seed = {"bucket": BUCKET, "prefix": "src/", "count": 1, "size": 10_000}
            async with http.put(f"http://127.0.0.1:{port}/_bench/seed", json=seed) as resp:
                assert resp.status == 200
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        yield f"https://127.0.0.1:{await add_tls_port(runner, context)}", ca
    finally:
        await runner.cleanup()


async def read_all(answer: RangedAnswer) -> bytes:
    buf = bytearray(int(answer.fields["ContentLength"]))
    filled = 0
    while filled < len(buf):
        n = await answer.body.readinto(memoryview(buf)[filled:])
        assert n > 0
        filled += n
    answer.body.release()
    return bytes(buf)


async def test_trusted_ca_is_read_another_ca_is_refused_like_botocore(
    tls_url: tuple[str, trustme.CA], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_url
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    trusted, other = tmp_path / "ca.pem", tmp_path / "other.pem"
    ca.cert_pem.write_to_path(str(trusted))
    trustme.CA().cert_pem.write_to_path(str(other))
    settings = AwsSettings(
        region="us-east-1", endpoint_url=url, access_key_id="b", secret_access_key="b"
    )

    monkeypatch.setenv("AWS_CA_BUNDLE", str(trusted))
    read = {}
    for fast_get in (True, False):
        async with aws_client("s3", dataclasses.replace(settings, fast_get=fast_get)) as s3:
            etag = (await s3.head_object(Bucket=BUCKET, Key=KEY))["ETag"]
            transport = ranged_get_for(s3)
            read[fast_get] = await read_all(await transport.get(BUCKET, KEY, 100, 1099, etag))
            if isinstance(transport, FastRangedGet):
                assert transport.sent == 1
    assert read[True] == read[False] and len(read[True]) == 1000

    monkeypatch.setenv("AWS_CA_BUNDLE", str(other))
    refused = {}
    for fast_get in (True, False):
        async with aws_client("s3", dataclasses.replace(settings, fast_get=fast_get)) as s3:
            transport: RangedGet = ranged_get_for(s3)
            assert isinstance(transport, FastRangedGet if fast_get else BotocoreRangedGet)
            with pytest.raises(SSLError) as info:
                await transport.get(BUCKET, KEY, 0, 9, '"e"')
            refused[fast_get] = type(info.value)
    assert refused[True] is refused[False] is SSLError
