"""Shared test fixtures.

``bart``: runs BART 0.8 commands in a temporary folder; tests that use it are skipped, with the
reason shown in pytest's summary (``-ra``), when ``bart`` is not on PATH.
``dataset``: a tiny complex training dataset (:func:`tiny_data.write_blob_dataset`), one per
test module.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tiny_data import write_blob_dataset


class Bart:
    def __init__(self, workdir):
        self.dir = workdir

    def __call__(self, *args: str) -> str:
        cmd = ["bart", *map(str, args)]
        r = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def path(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture
def bart(tmp_path):
    if shutil.which("bart") is None:
        pytest.skip("BART not installed (apt-get install -y bart): BART interop test not run")
    return Bart(tmp_path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 train + 4 val complex slices of 20 x 20 (smooth blobs with a phase ramp)."""
    return write_blob_dataset(tmp_path_factory.mktemp("train") / "ds", 20)
