"""End-to-end fixtures: real control plane, real secret managers, real MLflow.

Each part's fixtures live in their own module; this file only gathers them.
"""
import pytest

from tests.e2e.fixtures_kube import *  # noqa: F401,F403
from tests.e2e.fixtures_services import *  # noqa: F401,F403
from tests.e2e.fixtures_operator import *  # noqa: F401,F403
from tests.e2e.fixtures_webhook import *  # noqa: F401,F403


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
