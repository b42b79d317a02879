"""Calibrated uncertainty maps (mriprior.recon.calibration): pooling, the validation scale, the
sidecar record and its use by `mriprior recon`."""

import math

import numpy as np
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


@pytest.fixture()
def tiny_prior(tmp_path):
    from mriprior.priors.export import save_prior
    from mriprior.priors.networks import network_from_preset

    torch.manual_seed(0)
    net = network_from_preset("cpu-small", in_channels=2, base_channels=8, channel_mults=[1, 2],
                              attention_levels=[])
    save_prior(tmp_path / "prior", net, {"network": net.config, "parametrisation": "score",
                                         "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                       "sigma_max": 1.0},
                                         "data": {"channels": "complex"}})
    return tmp_path / "prior"


def test_sidecar_checks_the_calibration(tiny_prior):
    from mriprior.priors.export import read_sidecar, set_recon_defaults
    from mriprior.recon.priors import load_image_prior

    good = {"scale": 1.4, "pool": 5, "level": 0.9, "settings": {"chains": 4},
            "validation": {"scale_poisson": 1.3}, "measured_on": "test"}
    set_recon_defaults(tiny_prior, {"fast": {"chains": 4, "calibration": good}})
    assert read_sidecar(tiny_prior)["recon_defaults"]["fast"]["calibration"] == good
    assert load_image_prior(tiny_prior).recon_defaults["fast"]["calibration"]["scale"] == 1.4
    for bad, match in (({**good, "scale": 0}, "calibration.scale"),
                       ({**good, "pool": 4}, "calibration.pool"),
                       ({**good, "level": 1.0}, "calibration.level"),
                       ({**good, "settings": [4]}, "calibration.settings"),
                       ({**good, "other": 1}, "calibration.other"),
                       ({"pool": 3}, "calibration.scale"),
                       ("1.4", "calibration")):
        with pytest.raises(InputError, match=match):
            set_recon_defaults(tiny_prior, {"fast": {"calibration": bad}})
    with pytest.raises(InputError, match="recon_defaults.pics.calibration"):
        set_recon_defaults(tiny_prior, {"pics": {"calibration": good}})


def test_recon_writes_the_calibrated_std_for_its_settings(tiny_prior, tmp_path, capsys):
    from mriprior.cli.main import main
    from mriprior.io.cfl import read_cfl, write_cfl
    from mriprior.physics.phantom import birdcage_maps, shepp_logan
    from mriprior.physics.sense import Sense
    from mriprior.priors.export import set_recon_defaults

    n = 24
    img = shepp_logan(n).to(torch.complex64)[None]
    maps = birdcage_maps(4, (n, n), normalize="rss")[None]
    mask = (torch.rand(n, n, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    mask[n // 2 - 4: n // 2 + 4, n // 2 - 4: n // 2 + 4] = 1
    write_cfl(tmp_path / "ksp", Sense(maps, mask).forward(img)[0].numpy()
              .transpose(2, 1, 0)[:, :, None, :])
    write_cfl(tmp_path / "sens", maps[0].numpy().transpose(2, 1, 0)[:, :, None, :, None])
    settings = {"chains": 2, "nfe": 3, "sigma_start": 0.3, "noise_var": "auto", "draws": False,
                "eta": 0.85}
    cal = {"scale": 2.0, "pool": 3, "settings": settings, "measured_on": "test"}
    set_recon_defaults(tiny_prior, {"fast": {"chains": 2, "nfe": 3, "sigma_start": 0.3,
                                             "calibration": cal}})

    def run(*args):
        capsys.readouterr()
        rc = main(["recon", "--prior", str(tiny_prior), "--quiet", *args, str(tmp_path / "ksp"),
                   str(tmp_path / "sens"), str(tmp_path / "out")])
        return rc, capsys.readouterr().err

    rc, err = run("--std", str(tmp_path / "cal"), "--var", str(tmp_path / "calvar"))
    assert rc == 0 and "calibrated (pool 3, scale 2" in err
    rc, err = run("--raw-std", "--std", str(tmp_path / "raw"))
    assert rc == 0 and "calibrated" not in err
    raw = torch.from_numpy(np.abs(read_cfl(tmp_path / "raw")).T.copy())[None]  # (1, y, x)
    want = calibrated_std(raw, cal)[0].numpy().T
    got = np.abs(read_cfl(tmp_path / "cal"))
    assert np.allclose(got, want, rtol=1e-4, atol=1e-7 * want.max())
    assert np.allclose(read_cfl(tmp_path / "calvar").real, got ** 2, rtol=1e-4,
                       atol=1e-10 * want.max() ** 2)
    rc, err = run("--nfe", "2", "--std", str(tmp_path / "other"))  # other settings: raw, said
    assert rc == 0 and "measured with other sampler settings" in err
