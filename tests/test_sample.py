"""mriprior sample: prior loading, determinism, shapes, errors."""

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.priors.export import load_prior, save_prior
from mriprior.priors.networks import network_from_preset
from mriprior.priors.sampling import sample_prior


def export(tmp_path, diffusion, channels=2, param="score"):
    torch.manual_seed(0)
    net = network_from_preset("cpu-small", in_channels=channels, base_channels=8,
                              channel_mults=[1, 2], attention_levels=[])
    save_prior(tmp_path / "p", net, {"network": net.config, "parametrisation": param,
                                     "diffusion": diffusion,
                                     "data": {"channels": "complex" if channels == 2 else
                                              "magnitude"}})
    return tmp_path / "p"


VE = {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0}


@pytest.mark.parametrize("sampler", ["ancestral", "pc", "langevin"])
def test_sampling_is_seeded_and_shaped(tmp_path, sampler):
    net, meta = load_prior(export(tmp_path, VE))
    a = sample_prior(net, meta, n=3, size=(16, 8), sampler=sampler, steps=5, seed=1)
    b = sample_prior(net, meta, n=3, size=(16, 8), sampler=sampler, steps=5, seed=1)
    c = sample_prior(net, meta, n=3, size=(16, 8), sampler=sampler, steps=5, seed=2)
    assert a.shape == (3, 2, 16, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_vp_eps_prior(tmp_path):
    net, meta = load_prior(export(tmp_path, {"type": "vp", "beta_min": 0.1, "beta_max": 20.0},
                                  channels=1, param="eps"))
    x = sample_prior(net, meta, n=2, size=16, steps=4)
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()


def test_cli_writes_grid_and_array(tmp_path):
    p = export(tmp_path, VE)
    out, arr = tmp_path / "grid.png", tmp_path / "s.npy"
    assert main(["sample", "--prior", str(p), "--n", "4", "--size", "16", "--steps", "3",
                 "--save", str(arr), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and np.load(arr).shape == (4, 2, 16, 16)
    assert main(["sample", "--prior", str(p), "--size", "15", "--out", str(out)]) == 2
    assert main(["sample", "--prior", str(tmp_path / "missing"), "--out", str(out)]) == 2
    with pytest.raises(InputError):
        sample_prior(*load_prior(p), n=0)
