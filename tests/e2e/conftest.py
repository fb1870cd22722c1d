"""End-to-end tests: `prefect deploy`, real workers, live endpoints, a fresh clone (slow)."""
from tests.helpers import mark_folder


def pytest_collection_modifyitems(items):
    mark_folder(items, __file__, "e2e")
