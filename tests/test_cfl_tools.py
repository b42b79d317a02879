"""Small cfl tools (fmac, transpose, slice, toimg) against numpy and, where installed, BART."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mriprior.cli.main import main
from mriprior.io.cfl import read_cfl, write_cfl

BART = shutil.which("bart")


def _rand(shape, seed):
    g = np.random.default_rng(seed)
    return (g.standard_normal(shape) + 1j * g.standard_normal(shape)).astype(np.complex64)


@pytest.fixture
def files(tmp_path):
    write_cfl(tmp_path / "a", _rand((6, 5, 1, 3), 0))
    write_cfl(tmp_path / "b", _rand((6, 5, 1, 3), 1))
    write_cfl(tmp_path / "m", _rand((6, 5), 2).real.astype(np.complex64))
    return tmp_path


def test_fmac_broadcast_conj_and_sum(files):
    a, b, m = (read_cfl(files / n, squeeze=False) for n in "abm")
    assert main(["fmac", str(files / "a"), str(files / "m"), str(files / "am")]) == 0
    np.testing.assert_allclose(read_cfl(files / "am", squeeze=False), a * m, rtol=1e-6)
    assert main(["fmac", "-C", "-s", "8", str(files / "a"), str(files / "b"),
                 str(files / "ab")]) == 0
    want = (a * np.conj(b)).sum(axis=3, keepdims=True)
    np.testing.assert_allclose(read_cfl(files / "ab", squeeze=False), want, rtol=1e-5, atol=1e-6)


def test_transpose_and_slice(files):
    a = read_cfl(files / "a", squeeze=False)
    assert main(["transpose", "0", "3", str(files / "a"), str(files / "t")]) == 0
    np.testing.assert_array_equal(read_cfl(files / "t", squeeze=False), np.swapaxes(a, 0, 3))
    assert main(["slice", "3", "2", "0", "4", str(files / "a"), str(files / "s")]) == 0
    np.testing.assert_array_equal(read_cfl(files / "s", squeeze=False),
                                  a[4:5, :, :, 2:3])


def test_toimg_png(files):
    assert main(["toimg", str(files / "m"), str(files / "m.png")]) == 0
    png = np.asarray(Image.open(files / "m.png"))
    m = np.abs(read_cfl(files / "m"))
    assert png.shape == (5, 6)  # rows = BART dim 1
    np.testing.assert_allclose(png, np.round(m.T / m.max() * 255), atol=1)


@pytest.mark.skipif(BART is None, reason="BART not installed (apt-get install bart)")
@pytest.mark.parametrize("args", [["fmac", "a", "m"], ["fmac", "-C", "-s", "8", "a", "b"],
                                  ["transpose", "0", "3", "a"], ["slice", "3", "2", "a"]],
                         ids=["fmac", "fmac-C-s", "transpose", "slice"])
def test_same_as_bart(files, args):
    ours, theirs = files / "ours", files / "theirs"
    paths = [str(files / w) if w in ("a", "b", "m") else w for w in args]
    assert main(paths + [str(ours)]) == 0
    subprocess.run([BART, *paths, str(theirs)], check=True, capture_output=True)
    np.testing.assert_allclose(read_cfl(ours, squeeze=False), read_cfl(theirs, squeeze=False),
                               rtol=1e-5, atol=1e-6)
