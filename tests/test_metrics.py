"""Metrics: closed-form values, agreement with scikit-image, CLI."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl
from mriprior.metrics import evaluate, nmse, psnr, ssim

rng = np.random.default_rng(0)


def test_identical():
    x = rng.random((32, 32)) + 0.1
    assert psnr(x, x) == math.inf
    assert ssim(x, x) == pytest.approx(1.0)
    assert nmse(x, x) == 0.0


def test_known_psnr_and_nmse():
    ref = rng.random((2, 40, 30)) + 0.5
    noise = 0.05 * rng.standard_normal(ref.shape)
    rec = ref + noise
    mse = np.mean(noise ** 2, axis=(1, 2))
    want = np.mean(20 * np.log10(ref.max(axis=(1, 2))) - 10 * np.log10(mse))
    assert psnr(ref, rec) == pytest.approx(want, rel=1e-10)
    assert nmse(ref, 2 * ref) == pytest.approx(1.0)


def test_ssim_is_skimage_with_fastmri_range():
    ref = rng.random((48, 48))
    rec = ref + 0.1 * rng.standard_normal(ref.shape)
    want = structural_similarity(ref, np.abs(rec), data_range=ref.max())
    assert ssim(ref, rec) == pytest.approx(want, rel=1e-12)


def test_complex_inputs_use_magnitudes_and_torch_works():
    ref = rng.random((16, 16)) * np.exp(1j * rng.random((16, 16)))
    rec = np.abs(ref) * np.exp(-1j * 3 * rng.random((16, 16)))  # same magnitude, other phase
    assert nmse(ref, rec) == pytest.approx(0.0, abs=1e-24)
    t = torch.from_numpy(ref.astype(np.complex64))
    assert psnr(t, t * 1.0) == math.inf


def test_lsq_scaling_and_mask():
    x = rng.random((24, 24)) + 0.2
    assert psnr(x, 3.7 * x, scale="lsq") > 250  # exact up to float64 rounding
    assert psnr(x, 3.7 * x) < 0
    rec = x.copy()
    rec[:4] = 0  # damage outside the region of interest
    roi = np.zeros((24, 24), bool)
    roi[8:] = True
    assert nmse(x, rec, mask=roi) == 0.0
    assert nmse(x, rec) > 0
    r = evaluate(x, rec, mask=roi)
    assert set(r) == {"psnr", "ssim", "nmse"} and r["psnr"] == math.inf


def test_bad_input():
    with pytest.raises(InputError, match="shape mismatch"):
        psnr(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(InputError, match="NaN"):
        psnr(np.ones((4, 4)), np.full((4, 4), np.nan))
    with pytest.raises(InputError, match="scale"):
        psnr(np.ones((4, 4)), np.ones((4, 4)), scale="max")


def test_cli(tmp_path, capsys):
    ref = (rng.random((20, 16)) + 0.5).astype(np.complex64)
    write_cfl(tmp_path / "ref", ref)
    write_cfl(tmp_path / "rec", 2 * ref)
    assert main(["metrics", "--json", "--scale", "lsq", str(tmp_path / "ref"),
                 str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out
    assert '"psnr": Infinity' in out
    write_cfl(tmp_path / "other", np.ones((20, 15), np.complex64))
    assert main(["metrics", str(tmp_path / "ref"), str(tmp_path / "other")]) == 2
    assert "20 x 15" in capsys.readouterr().err


def test_degenerate_inputs_raise_input_error():
    with pytest.raises(InputError, match="at least 7 x 7"):
        evaluate(np.ones((4, 4)), np.ones((4, 4)))
    assert psnr(np.ones((4, 4)), np.ones((4, 4))) == math.inf  # PSNR needs no window
    with pytest.raises(InputError, match="zero everywhere"):
        psnr(np.zeros((2, 8, 8)) + np.arange(2)[:, None, None], np.ones((2, 8, 8)))
