"""Prior export: safetensors + JSON sidecar round trip and errors."""

import json

import pytest
import torch

from mriprior.errors import InputError
from mriprior.priors.export import load_prior, save_prior
from mriprior.priors.networks import network_from_preset

META = {"parametrisation": "score", "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                  "sigma_max": 1.0},
        "data": {"channels": "complex", "normalisation": "max"}}


def small():
    torch.manual_seed(0)
    return network_from_preset("cpu-small", base_channels=8, channel_mults=[1, 2],
                               attention_levels=[])


def test_round_trip(tmp_path):
    net = small().eval()
    w, s = save_prior(tmp_path / "p", net, {**META, "network": net.config})
    assert w.suffix == ".safetensors" and s.suffix == ".json"
    loaded, meta = load_prior(tmp_path / "p.safetensors")
    x = torch.randn(2, 2, 16, 16)
    assert torch.equal(loaded(x, torch.tensor([0.1, 0.5])), net(x, torch.tensor([0.1, 0.5])))
    assert meta["diffusion"]["sigma_max"] == 1.0 and meta["format"] == "mriprior-prior"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_errors(tmp_path):
    net = small()
    with pytest.raises(InputError, match="lacks"):
        save_prior(tmp_path / "p", net, {"network": net.config})
    save_prior(tmp_path / "p", net, {**META, "network": net.config})
    with pytest.raises(InputError, match="not found"):
        load_prior(tmp_path / "q")
    side = json.loads((tmp_path / "p.json").read_text())
    side["network"]["base_channels"] = 16  # sidecar no longer matches the weights
    (tmp_path / "p.json").write_text(json.dumps(side))
    with pytest.raises(InputError, match="do not match"):
        load_prior(tmp_path / "p")
    (tmp_path / "p.safetensors").write_bytes(b"not a safetensors file")
    side["network"]["base_channels"] = 8
    (tmp_path / "p.json").write_text(json.dumps(side))
    with pytest.raises(InputError, match="unreadable"):
        load_prior(tmp_path / "p")
