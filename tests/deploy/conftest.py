"""Fixtures of the deployment tests (helpers: deploy_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import helm_python as helm
import pytest
from deploy_support import CHART


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    """The chart, loaded once by the real Helm engine (helm-python-sdk)."""
    with helm.Chart.load(CHART) as loaded:
        yield loaded
