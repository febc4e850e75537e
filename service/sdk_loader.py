"""botocore's data loader without two start-up costs that are ours to cut (docs/performance.md).

Every process that makes a client pays for botocore's data files before its
first request: the service model, the endpoint ruleset and endpoints.json,
about 3 MB of JSON for S3. Two costs in how botocore loads them are not
needed, and together they were about a tenth of a one-shot run's start-up
(about 50 ms of CPU on the benchmark machine):

- **The list of every service, to check one name.** ``Loader.load_service_model``
  first lists every service directory botocore knows (about 400, each
  ``stat``-ed for the model type) just to check that the one asked for is
  among them, once for the service model and again for the endpoint
  ruleset (about 30 ms). Here a service whose model is found is loaded
  without that list; one that is not found goes to botocore's own method,
  which raises its own ``UnknownServiceError``.
- **OrderedDict for every JSON object.** botocore parses its files with
  ``object_pairs_hook=OrderedDict`` (a Python call per object; about 30 ms
  for S3's three files against 12 ms with plain dicts). Python dicts keep
  insertion order, which is all botocore relies on (its models build their
  own ordered maps from them).

The data loaded is the same: a test compares every model and file a client
of ours loads with what botocore's own loader gives.
"""

from __future__ import annotations

import json
import os
from typing import Any

from botocore.exceptions import DataNotFoundError
from botocore.loaders import JSONFileLoader, Loader, instance_cache


class PlainJSONFileLoader(JSONFileLoader):
    """botocore's JSON file loader with plain dicts (which keep insertion order)."""

    def _load_file(self, full_path: str, open_method: Any) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            return json.loads(fp.read().decode("utf-8"))


class StartupLoader(Loader):
    """A botocore ``Loader`` that checks only the service it is asked for."""

    FILE_LOADER_CLASS = PlainJSONFileLoader

    @instance_cache
    def load_service_model(
        self, service_name: str, type_name: str, api_version: str | None = None
    ) -> Any:
        # What botocore's method does after its check: the SDK's extras on top.
        find_extras = getattr(self, "_find_extras", None)
        processor = getattr(self, "_extras_processor", None)
        if find_extras is None or processor is None:  # another botocore: its own method
            return super().load_service_model(service_name, type_name, api_version)
        try:
            version = api_version or self.determine_latest_version(service_name, type_name)
            model = self.load_data(os.path.join(service_name, version, type_name))
        except DataNotFoundError:
            # Unknown service, type or version: botocore's own method says which.
            return super().load_service_model(service_name, type_name, api_version)
        processor.process(model, find_extras(service_name, type_name, version))
        return model


def startup_loader(data_path: str | None) -> StartupLoader:
    """The loader botocore's ``create_loader`` makes for ``data_path`` (AWS_DATA_PATH), as ours."""
    if data_path is None:
        return StartupLoader()
    paths = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
    return StartupLoader(extra_search_paths=paths)


def use_startup_loader(session: Any) -> bool:
    """Give a (aio)botocore session our loader before it loads anything; True if applied."""
    register = getattr(session, "register_component", None)
    get_config = getattr(session, "get_config_variable", None)
    if register is None or get_config is None:
        return False
    register("data_loader", startup_loader(get_config("data_path")))
    return True
