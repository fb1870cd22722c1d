"""End-to-end tests: `prefect deploy`, real workers, live endpoints, a fresh clone (slow)."""
from tests.helpers import mark_folder


def pytest_collection_modifyitems(items):
    # One xdist group: these tests run one after another on one worker (and share its server).
    mark_folder(items, __file__, "e2e", xdist_group="e2e")
