"""End-to-end tests: `prefect deploy`, real workers, live endpoints, a fresh clone (slow)."""
import pytest

from tests.helpers import mark_folder

# Two xdist groups, each run one test after another on one worker (sharing that worker's Prefect
# server): the modules with their own work pool and automations chain go to the second group, so
# the two halves of the slowest folder run side by side.
SECOND_GROUP = {"test_e2e_closed_loop.py", "test_e2e_evidence.py"}


def pytest_collection_modifyitems(items):
    mark_folder(items, __file__, "e2e")
    for item in items:
        if "e2e" in item.keywords and item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.xdist_group("e2e-2" if item.path.name in SECOND_GROUP else "e2e"))
