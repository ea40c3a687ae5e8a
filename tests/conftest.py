"""Shared test configuration: environment isolation and the ``gpu`` marker."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _no_streamlearn_env(monkeypatch):
    """Settings read STREAMLEARN_* variables; a developer's shell must not change test results."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMLEARN_"):
            monkeypatch.delenv(name)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
