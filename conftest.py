"""Docstring examples (``--doctest-modules keras_ssm``): the data examples read MNIST from
``KERAS_SSM_DATA_DIR``; without it they get the shared offline copy, or a tiny synthetic one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _doctest_data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if not isinstance(request.node, pytest.DoctestItem) or os.environ.get("KERAS_SSM_DATA_DIR"):
        yield
        return
    if (SHARED / "mnist").is_dir():
        folder = SHARED
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from fixtures import write_mnist

        folder = write_mnist(tmp_path_factory.mktemp("doctest-data"))
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_SSM_DATA_DIR", str(folder))
    yield
    mp.undo()
