"""Shared test configuration: environment isolation, the ``gpu`` marker, the kernels."""

import os
import shutil

import pytest
import torch

from streamlearn.kernels.cpu import binding


@pytest.fixture(autouse=True)
def _no_streamlearn_env(monkeypatch):
    """Settings read STREAMLEARN_* variables; a developer's shell must not change test results."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMLEARN_"):
            monkeypatch.delenv(name)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")


def _compiled_library():
    """The compiled kernels, which installing the package builds; the test is skipped only
    where none was built and no C compiler exists (`make install-test` installs one before the
    package): with a compiler, an install that did not build them fails it."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not binding.built() and compiler is None:
        pytest.skip("no compiled kernels built (no C compiler): the numpy and torch forms run")
    return binding.load()


@pytest.fixture(scope="module")
def compiled():
    """The compiled kernels (`pytest.mark.usefixtures("compiled")` for a whole module)."""
    return _compiled_library()


@pytest.fixture(params=["numpy", "compiled"])
def library(request):
    """A test taking it runs on the numpy/torch form (None) and on the compiled kernels."""
    return None if request.param == "numpy" else _compiled_library()
