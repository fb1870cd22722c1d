"""Unit tests: the domain in `retrainer/` and the CLI, no Prefect server (run in parallel with
pytest-xdist)."""
import pytest

from tests.helpers import mark_folder


def pytest_collection_modifyitems(items):
    mark_folder(items, __file__, "unit")


@pytest.fixture(scope="session")
def months(tmp_path_factory):
    """Six clean months, 3000 admissions each (seed 3)."""
    from retrainer.datagen import GenerationSpec, generate

    out = tmp_path_factory.mktemp("data")
    generate(out, GenerationSpec(months=6, rows_per_month=3000, seed=3))
    return out
