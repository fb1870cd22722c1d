"""Flow tests: real Prefect flows against one shared test server (`prefect_api`)."""
from tests.helpers import mark_folder


def pytest_collection_modifyitems(items):
    mark_folder(items, __file__, "flow")
