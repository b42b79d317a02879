"""Calibrated uncertainty maps (mriprior.recon.calibration): pooling, the validation scale and
when a calibration applies (the sidecar record and `mriprior recon`'s use of it:
tests/test_cli_recon.py)."""

import math

import pytest
import torch

from mriprior.errors import InputError
from mriprior.recon.calibration import (calibrated_std, calibration_for, fit_scale,
                                        pool_variance)
from mriprior.recon.posterior import interval_radius


def test_pool_variance_averages_variance_in_a_window():
    std = torch.zeros(1, 5, 5)
    std[0, 2, 2] = 3.0  # variance 9 in one pixel
    p = pool_variance(std, 3)
    assert torch.allclose(p[0, 1:4, 1:4], torch.full((3, 3), 1.0))  # 9 / 9 in each window
    assert p[0, 0, 0] == 0 and p[0, 4, 4] == 0
    corner = torch.zeros(1, 4, 4)
    corner[0, 0, 0] = 2.0  # edge windows average over the pixels inside the image only
    assert math.isclose(float(pool_variance(corner, 3)[0, 0, 0]), 2.0 / 2.0, rel_tol=1e-6)
    const = torch.full((2, 6, 7), 0.5)
    assert torch.allclose(pool_variance(const, 5), const)
    assert pool_variance(std, 1) is std
    for bad in (0, 2, -3):
        with pytest.raises(InputError, match="odd"):
            pool_variance(std, bad)


def test_fit_scale_recovers_an_overconfident_map():
    """Errors drawn from a circular complex Gaussian of std 2.5 x the map: the fitted scale is
    2.5, and the calibrated map's 90 % interval covers 90 % of fresh errors."""
    g = torch.Generator().manual_seed(0)
    true_std = 0.5 + torch.rand(4, 64, 64, generator=g)
    def draw():
        return (true_std * torch.randn(4, 64, 64, dtype=torch.complex64, generator=g)).abs()
    map_std = true_std / 2.5
    inside = torch.ones(4, 64, 64, dtype=torch.bool)
    inside[:, :8] = False  # outside pixels do not count
    scale = fit_scale(list(draw()), list(map_std), list(inside), level=0.9, pool=1)
    assert scale == pytest.approx(2.5, rel=0.03)
    cal = {"scale": scale, "pool": 1}
    cs = calibrated_std(map_std, cal)
    cover = float((draw() <= interval_radius(cs, 0.9)).float().mean())
    assert cover == pytest.approx(0.9, abs=0.01)
    with pytest.raises(InputError, match="one shape"):
        fit_scale([draw()[0]], [map_std[0, :10]], [inside[0]])
    with pytest.raises(InputError, match="no pixels inside"):
        fit_scale([draw()[0]], [map_std[0]], [torch.zeros(64, 64, dtype=torch.bool)])


class _Prior:
    def __init__(self, rd):
        self.recon_defaults = rd


def test_calibration_applies_only_to_its_settings():
    settings = {"chains": 4, "nfe": 20, "sigma_start": 0.03, "noise_var": "auto",
                "draws": False, "eta": 0.85}
    cal = {"scale": 1.5, "pool": 5, "settings": settings}
    prior = _Prior({"fast": {"nfe": 20, "calibration": cal}})
    run = {**settings, "cg_iters": 5}
    assert calibration_for(prior, "fast", run) is cal
    assert calibration_for(prior, "fast", {**run, "cg_iters": 9}) is cal  # not a recorded key
    for key, other in (("chains", 8), ("nfe", 10), ("sigma_start", 0.1), ("noise_var", None),
                       ("draws", True)):
        assert calibration_for(prior, "fast", {**run, key: other}) is None
    assert calibration_for(prior, "langevin", run) is None
    assert calibration_for(_Prior({}), "fast", run) is None
