"""EDM (denoiser-parameterised) priors: preconditioning identities, the score / denoiser
interface, the loss at its analytic minimum, config, EMA ramp-up and a tiny training run whose
exported prior reconstructs through the common prior interface."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import mriprior.diffusion as d
from mriprior.errors import InputError
from mriprior.priors.config import validate_config
from mriprior.priors.export import load_prior
from mriprior.priors.train import train
from mriprior.recon.priors import load_image_prior

from tiny_data import prior_config as _raw

S = 0.3  # data standard deviation per real component
DIM = 64
MU = torch.linspace(-0.2, 0.4, DIM, dtype=torch.float64)


class ExactF(nn.Module):
    """The optimal EDM network F for Gaussian data N(MU, S^2 I): given (c_in x, exp(c_noise)),
    F = (D*(x, sigma) - c_skip x) / c_out with D* the Tweedie denoiser."""

    def __init__(self, sigma_data):
        super().__init__()
        self.sd = sigma_data

    def forward(self, y, t):
        sigma = d.append_dims(t ** 4, y.ndim)  # exp(c_noise) = sigma^(1/4)
        c_skip, c_out, c_in, _ = d.edm_preconditioning(sigma, self.sd)
        x = y / c_in
        den = MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)
        return (den - c_skip * x) / c_out


def test_preconditioning_identities():
    sigma = torch.logspace(-3, 1, 50, dtype=torch.float64)
    for sd in (0.1, 0.5, 1.0):
        c_skip, c_out, c_in, c_noise = d.edm_preconditioning(sigma, sd)
        # unit input variance: c_in^2 (sd^2 + sigma^2) = 1
        assert torch.allclose(c_in ** 2 * (sd ** 2 + sigma ** 2), torch.ones_like(sigma))
        # unit target variance for x0 ~ N(0, sd^2): ((1 - c_skip)^2 sd^2 + c_skip^2 sigma^2) / c_out^2
        target = ((1 - c_skip) ** 2 * sd ** 2 + c_skip ** 2 * sigma ** 2) / c_out ** 2
        assert torch.allclose(target, torch.ones_like(sigma))
        assert torch.allclose(c_noise, torch.log(sigma) / 4)
        # c_out ~ sigma as sigma -> 0: the network's error is scaled down at small noise
        assert torch.allclose(c_out[:3] / sigma[:3], torch.ones(3, dtype=torch.float64), rtol=1e-3)


def test_edm_score_is_denoiser_residual_over_sigma_squared():
    x = MU + 0.7 * torch.randn(5, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.005, 0.05, 0.3, 1.0, 4.0], dtype=torch.float64)
    model = d.ScoreModel(ExactF(0.5), "edm", sigma_data=0.5)
    sg = d.append_dims(sigma, 2)
    exact = -(x - MU) / (S ** 2 + sg ** 2)
    assert torch.allclose(model.score(x, sigma), exact)
    assert torch.allclose(model.denoise(x, sigma), x + sg ** 2 * exact)
    assert torch.allclose(model.score(x, sigma), (model.denoise(x, sigma) - x) / sg ** 2)
    assert torch.allclose(model.scaled_score(x, sigma), sg * exact)
    # complex images: two channels at the network's edge, the score comes back complex
    seen = {}

    class Chan(nn.Module):
        def forward(self, v, t):
            seen["shape"] = tuple(v.shape)
            return torch.zeros_like(v)
    xc = torch.randn(2, 4, 4, dtype=torch.complex64)
    out = d.ScoreModel(Chan(), "edm", sigma_data=0.5).score(xc, 0.5)
    assert seen["shape"] == (2, 2, 4, 4) and out.dtype == torch.complex64
    c_skip = 0.25 / (0.25 + 0.25)
    assert torch.allclose(out, (c_skip - 1) * xc / 0.25)
    with pytest.raises(InputError, match="sigma_data"):
        d.ScoreModel(Chan(), "edm")


def test_from_meta_checks_the_sidecar():
    net = ExactF(0.5)
    m = d.ScoreModel.from_meta(net, {"parametrisation": "edm",
                                     "diffusion": {"type": "edm", "sigma_data": 0.5}})
    assert m.parametrisation == "edm" and m.sigma_data == 0.5
    with pytest.raises(InputError, match="unknown diffusion type 'xx'"):
        d.ScoreModel.from_meta(net, {"parametrisation": "edm", "diffusion": {"type": "xx"}})
    with pytest.raises(InputError, match="trained as 'score'"):
        d.ScoreModel.from_meta(net, {"parametrisation": "eps", "diffusion": {"type": "ve"}})


def test_edm_loss_of_exact_denoiser_is_one():
    """With sigma_data = S the weighted loss of the Tweedie denoiser is exactly 1 per level."""
    g = torch.Generator().manual_seed(1)
    x0 = MU + S * torch.randn(4096, DIM, dtype=torch.float64, generator=g)
    model = d.ScoreModel(ExactF(S), "edm", sigma_data=S)
    loss, sigma = d.edm_loss(model, x0, g, p_mean=-1.5, p_std=1.2)
    assert loss.shape == sigma.shape == (4096,)
    assert abs(float(sigma.log().mean()) + 1.5) < 0.1 and abs(float(sigma.log().std()) - 1.2) < 0.1
    se = loss.std().item() / math.sqrt(len(loss))
    assert abs(loss.mean().item() - 1.0) < 5 * se, (loss.mean().item(), se)
    # a worse denoiser (10 % shrinkage of the network output) scores measurably worse
    g = torch.Generator().manual_seed(1)
    x0 = MU + S * torch.randn(4096, DIM, dtype=torch.float64, generator=g)

    class Worse(ExactF):
        def forward(self, y, t):
            return 0.9 * super().forward(y, t)
    worse, _ = d.edm_loss(d.ScoreModel(Worse(S), "edm", sigma_data=S), x0, g, p_mean=-1.5,
                          p_std=1.2)
    diff = worse - loss
    assert diff.mean() > 5 * diff.std() / math.sqrt(len(diff))
    with pytest.raises(InputError, match="parametrisation 'edm'"):
        d.edm_loss(d.ScoreModel(ExactF(S), "score"), x0, g)


def test_ema_ramp():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = d.EMA(net, 0.999, ramp=True)
    assert ema.current_decay == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update()
    assert float(ema.shadow["weight"]) == pytest.approx(0.9)  # 0.1 * 0 + 0.9 * 1
    for _ in range(100000):
        ema.num_updates += 1
    assert ema.current_decay == 0.999
    assert d.EMA(net, 0.999).current_decay == 0.999


def test_config_edm_section(dataset):  # noqa: F811
    raw = _raw(dataset, "out")
    raw["diffusion"] = {"type": "edm", "sigma_data": 0.25}
    cfg = validate_config(raw)
    assert cfg["diffusion"] == {"type": "edm", "sigma_min": 0.01, "sigma_max": 1.0,
                                "sigma_data": 0.25, "p_mean": -2.0, "p_std": 1.2}
    assert validate_config(cfg) == cfg
    raw["diffusion"] = {"type": "edm", "beta_min": 0.1}
    with pytest.raises(InputError, match="diffusion.beta_min: not used by diffusion type 'edm'"):
        validate_config(raw)
    raw["diffusion"] = {"type": "ve", "sigma_data": 0.5}
    with pytest.raises(InputError, match="diffusion.sigma_data: not used by diffusion type 've'"):
        validate_config(raw)
    raw["diffusion"] = {"type": "edm", "sigma_min": 1.0, "sigma_max": 0.1}
    with pytest.raises(InputError, match="sigma_min: must be <"):
        validate_config(raw)


def test_tiny_edm_run_exports_a_usable_prior(tmp_path, dataset):  # noqa: F811
    out = tmp_path / "edm"
    raw = _raw(dataset, out, **{"train.steps": 24, "train.save_every": 12, "heldout.every": 12,
                                "train.ema_ramp": True})
    raw["diffusion"] = {"type": "edm", "sigma_data": 0.3, "p_mean": -1.5, "p_std": 1.2,
                        "sigma_min": 0.01, "sigma_max": 1.0}
    res = train(raw)
    assert res["step"] == 24
    net, meta = load_prior(out / "prior")
    assert meta["parametrisation"] == "edm" and meta["diffusion"]["type"] == "edm"
    assert meta["diffusion"]["sigma_data"] == 0.3
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    held = [r["heldout"] for r in records if "heldout" in r]
    assert len(held) == 2 and all(math.isfinite(v) for v in held[-1].values())
    prior = load_image_prior(out / "prior")
    assert (prior.sigma_min, prior.sigma_max) == (0.01, 1.0)
    x = torch.randn(2, 16, 16, dtype=torch.complex64)
    s = prior.score(x, 0.1)
    den = prior.model.denoise(x, 0.1)
    assert torch.allclose(s, (den - x) / 0.01, atol=1e-3)
    assert torch.isfinite(prior.reg_grad(x)).all()


# ----------------------------------------------------------------------------- sidecar checks
def _saved_prior(tmp_path):
    from mriprior.priors.export import save_prior
    from mriprior.priors.networks import network_from_preset

    torch.manual_seed(0)
    net = network_from_preset("cpu-small", base_channels=8, channel_mults=[1, 2],
                              attention_levels=[])
    meta = {"network": net.config, "parametrisation": "edm",
            "diffusion": {"type": "edm", "sigma_data": 0.3, "sigma_min": 0.01, "sigma_max": 1.0},
            "data": {"channels": "complex"}}
    save_prior(tmp_path / "p", net, meta)
    return tmp_path / "p"


@pytest.mark.parametrize("edit, message", [
    (lambda m: [m], "expected a JSON object, got list"),
    (lambda m: {**m, "diffusion": {**m["diffusion"], "type": "xx"}}, "diffusion.type 'xx'"),
    (lambda m: {**m, "parametrisation": "score"}, "does not match diffusion.type 'edm'"),
    (lambda m: {**m, "diffusion": {**m["diffusion"], "sigma_data": -1}},
     "diffusion.sigma_data must be a positive number"),
    (lambda m: {**m, "network": "unet"}, "'network' must be a mapping"),
    # a sidecar asking for a huge network is refused from the file header, before allocation
    (lambda m: {**m, "network": {**m["network"], "base_channels": 8192}},
     "weights do not match the network"),
])
def test_sidecar_is_checked_before_building(tmp_path, edit, message):
    path = _saved_prior(tmp_path)
    side = path.with_suffix(".json")
    side.write_text(json.dumps(edit(json.loads(side.read_text()))))
    with pytest.raises(InputError, match=message) as e:
        load_prior(path)
    assert "p.json" in str(e.value) or "p.safetensors" in str(e.value)


def test_non_finite_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _saved_prior(tmp_path)
    w = path.with_suffix(".safetensors")
    state = load_file(str(w))
    state["conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(w))
    with pytest.raises(InputError, match="'conv_in.weight' holds NaN or Inf"):
        load_prior(path)


def test_prior_files_keep_dotted_names_and_find_bundled_priors(tmp_path, monkeypatch):
    from mriprior.priors.export import ASSETS, prior_files

    assert prior_files(tmp_path / "prior-v1.5") == (tmp_path / "prior-v1.5.safetensors",
                                                    tmp_path / "prior-v1.5.json")
    assert prior_files(tmp_path / "p.json") == (tmp_path / "p.safetensors", tmp_path / "p.json")
    monkeypatch.chdir(tmp_path)
    w, s = prior_files("prior-ve-cpu")  # a bare bundled name, nothing of that name here
    assert (w, s) == (ASSETS / "prior-ve-cpu.safetensors", ASSETS / "prior-ve-cpu.json")
    net, meta = load_prior("prior-ve-cpu")
    assert meta["parametrisation"] == "score"
    (tmp_path / "prior-ve-cpu.json").write_text("{}")  # a local file of that name wins
    assert prior_files("prior-ve-cpu")[1] == Path("prior-ve-cpu.json")
