"""Flow tests: real Prefect flows against one shared test server (`prefect_api`)."""
from tests.helpers import mark_folder


def pytest_collection_modifyitems(items):
    # One xdist group: these tests run one after another on one worker (and share its server).
    mark_folder(items, __file__, "flow", xdist_group="flows")
