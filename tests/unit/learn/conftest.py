"""Fixtures of the compiled kernels' tests (`pytest.mark.usefixtures("compiled")`)."""

import os
import shutil

import pytest

from streamlearn.learn import native


@pytest.fixture(scope="module")
def compiled() -> None:
    """Skipped only where no C compiler exists (`make install-test` installs one); a build
    that fails with a compiler present fails the tests."""
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the learner runs the torch step here")
    native.load()
