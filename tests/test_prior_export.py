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


def test_prior_folder_user_dir_and_no_absolute_paths(tmp_path, monkeypatch, capsys):
    """A prior exported as a folder (weights, config.json, model card) loads by path and, in
    the user prior directory, by name; sidecars never carry absolute paths."""
    from mriprior.cli.main import main as cli
    from mriprior.priors.export import prior_files

    torch.manual_seed(0)
    net = network_from_preset("cpu-small", base_channels=8, channel_mults=[1, 2], attention_levels=[])
    save_prior(tmp_path / "p", net, {"network": net.config, "parametrisation": "score",
                                    "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                  "sigma_max": 1.0},
                                    "data": {"channels": "complex",
                                             "dataset": str(tmp_path / "data" / "open256")},
                                    "config": {"train": {"output": "/home/someone/runs/p"}}})
    side = json.loads((tmp_path / "p.json").read_text())
    assert side["data"]["dataset"] == "open256" and side["config"]["train"]["output"] == "p"
    users = tmp_path / "priors"
    monkeypatch.setenv("MRIPRIOR_PRIORS", str(users))
    assert cli(["export", str(tmp_path / "p"), str(users / "mine"), "--format", "folder"]) == 0
    folder = users / "mine"
    assert sorted(x.name for x in folder.iterdir()) == ["README.md", "config.json",
                                                       "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "Training data" in card and "open256" in card and "parameters" in card
    assert "/" + "home" not in (folder / "config.json").read_text()
    monkeypatch.chdir(tmp_path)
    for name in (str(folder), "mine"):  # by path, and by name from the user directory
        assert prior_files(name) == (folder / "model.safetensors", folder / "config.json")
        loaded, meta = load_prior(name)
        for k, v in net.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)
    assert prior_files("bundled")[1].name == "prior-edm-cpu.json"
    # a second export onto a user's non-prior folder is refused, nothing deleted
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("x")
    assert cli(["export", "mine", str(tmp_path / "keep"), "--format", "folder"]) == 2
    assert (tmp_path / "keep" / "notes.txt").exists()


def test_bundled_sidecar_is_portable():
    from mriprior.priors.export import prior_files
    text = prior_files("bundled")[1].read_text()
    def walk(v):
        if isinstance(v, dict):
            return any(walk(x) for x in v.values())
        if isinstance(v, list):
            return any(walk(x) for x in v)
        return isinstance(v, str) and v.startswith("/")
    assert not walk(json.loads(text))
