"""Our botocore data loader loads exactly what botocore's own loader loads.

``service/sdk_loader.py`` skips botocore's listing of every service and parses
JSON into plain dicts; neither may change a byte of what a client gets.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import DataNotFoundError, UnknownServiceError
from botocore.loaders import Loader, create_loader

from service.aws import AwsSettings
from service.sdk_loader import StartupLoader, startup_loader


def _plain(data: object) -> object:
    """Order-sensitive comparison of nested dicts: through JSON text."""
    return json.dumps(data)


@pytest.mark.parametrize("service", ["s3", "dynamodb", "sqs", "sts", "secretsmanager", "ssm"])
@pytest.mark.parametrize("type_name", ["service-2", "endpoint-rule-set-1", "paginators-1"])
def test_every_model_a_client_of_ours_loads_is_botocores(service: str, type_name: str) -> None:
    ours, theirs = StartupLoader(), Loader()
    assert _plain(ours.load_service_model(service, type_name)) == _plain(
        theirs.load_service_model(service, type_name)
    )


@pytest.mark.parametrize("name", ["endpoints", "partitions", "sdk-default-configuration", "_retry"])
def test_data_files_are_botocores_in_the_same_order(name: str) -> None:
    assert _plain(StartupLoader().load_data(name)) == _plain(Loader().load_data(name))


def test_an_unknown_service_or_type_fails_as_botocore_says() -> None:
    with pytest.raises(UnknownServiceError) as ours:
        StartupLoader().load_service_model("no-such-service", "service-2")
    with pytest.raises(UnknownServiceError) as theirs:
        Loader().load_service_model("no-such-service", "service-2")
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(DataNotFoundError):
        StartupLoader().load_service_model("s3", "service-2", api_version="1999-01-01")


def test_aws_data_path_is_searched_as_botocore_searches_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = f"{tmp_path}/a:{tmp_path}/b"
    assert startup_loader(path).search_paths == create_loader(path).search_paths
    assert startup_loader(None).search_paths == create_loader(None).search_paths


def test_sessions_of_ours_use_it() -> None:
    session = AwsSettings(access_key_id="a", secret_access_key="b").session()
    assert isinstance(session.get_component("data_loader"), StartupLoader)
