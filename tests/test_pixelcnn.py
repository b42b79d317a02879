"""PixelCNN++ prior: causality, likelihood, sampling, training engine, export, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mriprior.errors import InputError
from mriprior.priors.config import load_config, validate_config
from mriprior.priors.export import load_prior, save_prior
from mriprior.priors.networks import PRESETS, count_parameters, network_from_config
from mriprior.priors.pixelcnn import (HALF_BIN, PixelCNNPP, conditional_means,
                                      discretized_logistic_mixture_nll, image_bpd, image_nll,
                                      likelihood_meta, sample_pixelcnn, split_params,
                                      to_network_scale)
from mriprior.priors.sampling import sample_prior
from mriprior.engine import latest_checkpoint
from mriprior.priors.train import train
from tiny_data import write_blob_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = {"type": "pixelcnn", "filters": 8, "n_resnet": 1, "n_mix": 2, "n_levels": 2,
        "dropout": 0.0}
GRID = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 256 bin centres


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks run fastest on one thread (no OpenMP start-up per convolution)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(in_channels=2, **over) -> PixelCNNPP:
    torch.manual_seed(0)
    return network_from_config({**TINY, "in_channels": in_channels, **over}).eval()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 train + 4 val complex 16 x 16 slices (smooth blobs with a phase ramp, max |x| = 1)."""
    return write_blob_dataset(tmp_path_factory.mktemp("pixelcnn") / "ds", 16, shard_size=8,
                              unit_peak=True)


def _raw(dataset, output, **over) -> dict:
    raw = {
        "model": {**TINY, "in_channels": 2},
        "data": {"path": str(dataset), "crop": 8, "channels": "complex", "num_workers": 0},
        "optim": {"lr": 5e-3, "warmup_steps": 2, "grad_clip": 1.0, "min_lr": 1e-4},
        "train": {"batch_size": 4, "steps": 8, "save_every": 4, "keep_last": 2,
                  "ema_decay": 0.9, "seed": 3, "log_every": 2, "output": str(output),
                  "device": "cpu"},
        "heldout": {"every": 4, "n_images": 4},
    }
    for dotted, value in over.items():
        section, key = dotted.split(".")
        raw.setdefault(section, {})[key] = value
    return raw


# ----------------------------------------------------------------------------- network
@pytest.mark.parametrize("in_channels, n_levels", [(2, 2), (2, 3), (1, 3)])
def test_causality_in_raster_order(in_channels, n_levels):
    """d params(i, j) / d x(i', j') = 0 for (i', j') at or after (i, j) in raster order."""
    net = tiny(in_channels, n_levels=n_levels).double()
    h = w = 8
    x = torch.rand(1, in_channels, h, w, dtype=torch.float64) * 2 - 1
    order = torch.arange(h * w).view(h, w)
    probe = torch.randn(net.out_params, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            xx = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(net(xx)[0, :, i, j] @ probe, xx)
            dep = g[0].abs().sum(0)
            assert dep[order >= i * w + j].max() == 0, (i, j)
            if j > 0:
                assert dep[i, j - 1] > 0  # the pixel to the left is seen
            if i > 0:
                assert dep[i - 1, j] > 0  # and the one above


def test_imag_mean_conditioned_on_real_at_same_pixel():
    net = tiny(2).double()
    x = (torch.rand(1, 2, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    _, means, log_scales, coeffs = split_params(net(x), 2)
    m = conditional_means(means, coeffs, x)  # (1, 2, K, 8, 8)
    i, j = 3, 5
    (g_imag,) = torch.autograd.grad(m[0, 1, :, i, j].sum(), x, retain_graph=True)
    assert g_imag[0, 0, i, j].abs() > 0  # imag mean depends on the real value here
    assert torch.allclose(g_imag[0, 0, i, j], coeffs[0, :, i, j].sum())
    assert g_imag[0, 1, i, j] == 0  # but not on its own value
    real_params = torch.cat([m[0, 0, :, i, j], log_scales[0, 0, :, i, j]])
    (g_real,) = torch.autograd.grad(real_params.sum(), x)
    assert g_real[0, :, i, j].abs().sum() == 0  # real parameters: neither channel of this pixel


def test_preset_parameter_counts():
    counts = {name: count_parameters(network_from_config(PRESETS[name]))
              for name in ("pixelcnn-cpu", "pixelcnn-published")}
    assert counts == {"pixelcnn-cpu": 1_515_940, "pixelcnn-published": 21_745_912}


def test_network_input_errors():
    net = tiny(2)
    with pytest.raises(InputError, match="channels"):
        net(torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match="not divisible by 2"):
        net(torch.zeros(1, 2, 7, 8))
    with pytest.raises(InputError, match="in_channels must be 1"):
        network_from_config({**TINY, "in_channels": 3})
    with pytest.raises(InputError, match="'filtres'"):
        network_from_config({**TINY, "filtres": 8})


# ----------------------------------------------------------------------------- likelihood
def _random_params(k: int, c: int, seed: int, n: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, k * (1 + 2 * c + c * (c - 1) // 2), 1, 1, generator=g)
    p[:, k: k + c * k] = torch.rand(n, c * k, 1, 1, generator=g) * 2.4 - 1.2  # means
    p[:, k + c * k: k + 2 * c * k] = torch.rand(n, c * k, 1, 1, generator=g) * 6 - 5.5
    return p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_likelihood_sums_to_one_over_the_bins(seed):
    k = 3
    p1 = _random_params(k, 1, seed)
    x = GRID.float().view(256, 1, 1, 1)
    total = torch.exp(-discretized_logistic_mixture_nll(p1.expand(256, -1, -1, -1), x)).sum()
    assert abs(float(total) - 1) < 1e-5
    # Two channels: the joint over the 256 x 256 (real, imag) bins, imag conditioned on real.
    p2 = _random_params(k, 2, seed)
    re, im = torch.meshgrid(GRID.float(), GRID.float(), indexing="ij")
    x2 = torch.stack([re.reshape(-1), im.reshape(-1)], 1).view(-1, 2, 1, 1)
    probs = torch.exp(-discretized_logistic_mixture_nll(p2.expand(len(x2), -1, -1, -1), x2))
    assert abs(float(probs.sum()) - 1) < 1e-5
    # Summed over images: the NLL of an image is the sum of per-pixel NLLs.
    img = torch.rand(2, 2, 3, 4) * 2 - 1
    params = torch.randn(2, 6 * k, 3, 4)
    per_pixel = [discretized_logistic_mixture_nll(params[:, :, i:i + 1, j:j + 1],
                                                  img[:, :, i:i + 1, j:j + 1])
                 for i in range(3) for j in range(4)]
    torch.testing.assert_close(discretized_logistic_mixture_nll(params, img),
                               torch.stack(per_pixel).sum(0))


def test_nll_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    params = torch.randn(2, 12, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(2, 2, 4, 4, generator=g, dtype=torch.float64) * 1.6 - 0.8
    x[0, 0, 0, 0], x[1, 1, 2, 3] = -1.0 - 0.3, 1.0 + 0.2  # open edge bins, outside [-1, 1]
    x.requires_grad_(True)
    params.requires_grad_(True)
    assert torch.autograd.gradcheck(discretized_logistic_mixture_nll, (params, x))
    # Through the network (image_nll) w.r.t. the image.
    net = tiny(2).double()
    xi = (torch.rand(1, 2, 4, 4, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: image_nll(net, v), (xi,))
    # Sharp components far from the value: still finite (stable log-sigmoid forms).
    sharp = torch.zeros(1, 6, 1, 1, dtype=torch.float64)
    sharp[0, 1], sharp[0, 2] = 0.9, -20.0  # mean 0.9, log-scale -20 (clamped to -7)
    xs = torch.tensor([[[[-0.9]]]], dtype=torch.float64, requires_grad=True)
    nll = discretized_logistic_mixture_nll(sharp, xs)
    (gx,) = torch.autograd.grad(nll.sum(), xs)
    assert torch.isfinite(nll).all() and torch.isfinite(gx).all() and gx < 0


def test_image_nll_forms_and_errors():
    net = tiny(2)
    x = torch.randn(2, 8, 8, dtype=torch.complex64) * 0.3
    chans = torch.stack([x.real, x.imag], 1)
    torch.testing.assert_close(image_nll(net, x), image_nll(net, chans))
    # For a complex image the gradient is d/dRe + i d/dIm (what a PICS regulariser needs).
    xc, ch = x.clone().requires_grad_(True), chans.clone().requires_grad_(True)
    image_nll(net, xc).sum().backward()
    image_nll(net, ch).sum().backward()
    torch.testing.assert_close(xc.grad, torch.complex(ch.grad[:, 0], ch.grad[:, 1]))
    bpd = image_bpd(net, x)
    torch.testing.assert_close(bpd, image_nll(net, x) / (2 * 64 * math.log(2)))
    with pytest.raises(InputError, match="magnitude"):
        image_nll(net, x.abs())
    mag_net = tiny(1)
    m = torch.rand(2, 8, 8)
    torch.testing.assert_close(image_nll(mag_net, m), image_nll(mag_net, m[:, None]))
    torch.testing.assert_close(to_network_scale(m, 1), 2 * m[:, None] - 1)
    with pytest.raises(InputError, match="needs a 2-channel"):
        image_nll(mag_net, x)
    with pytest.raises(InputError, match="not divisible"):
        image_nll(net, x[:, :7])


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("in_channels", [2, 1])
def test_sampling_range_shape_seed(in_channels):
    net = tiny(in_channels)
    a = sample_pixelcnn(net, n=3, size=(8, 4), seed=1)
    b = sample_pixelcnn(net, n=3, size=(8, 4), seed=1)
    c = sample_pixelcnn(net, n=3, size=(8, 4), seed=2)
    assert a.shape == (3, in_channels, 8, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    lo = -1.0 if in_channels == 2 else 0.0
    assert a.min() >= lo and a.max() <= 1.0
    # Values on the 256-bin grid (magnitude: steps of 1 / 255).
    k = (a + 1) * 127.5 if in_channels == 2 else a * 255
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert sample_pixelcnn(net, n=2, size=8, seed=0, temperature=0.5).shape[2:] == (8, 8)
    with pytest.raises(InputError, match="not divisible"):
        sample_pixelcnn(net, n=1, size=(7, 8))


def test_sampler_draws_from_the_likelihood():
    """1 x 1 images: the network's parameters are fixed, so the sample mean must match the mean
    of the discrete distribution that the NLL defines (joint over real, imag)."""
    net = tiny(2, n_levels=1, n_mix=3)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([0.5, -0.3, 0.1, 0.4, -0.6, 0.0, -0.2, 0.3, 0.1,
                                         -2.0, -1.5, -1.0, -1.5, -2.5, -1.0, 0.8, -0.5, 0.2]))
        params = net(torch.zeros(1, 2, 1, 1))
        re, im = torch.meshgrid(GRID.float(), GRID.float(), indexing="ij")
        x2 = torch.stack([re.reshape(-1), im.reshape(-1)], 1).view(-1, 2, 1, 1)
        p = torch.exp(-discretized_logistic_mixture_nll(params.expand(len(x2), -1, -1, -1), x2))
    mean = (p[:, None] * x2[:, :, 0, 0]).sum(0)
    s = sample_pixelcnn(net, n=20000, size=1, seed=0)[:, :, 0, 0]
    torch.testing.assert_close(s.mean(0), mean, atol=0.012, rtol=0)
    var = (p[:, None] * (x2[:, :, 0, 0] - mean) ** 2).sum(0)
    torch.testing.assert_close(s.var(0), var, atol=0.01, rtol=0.05)


# ----------------------------------------------------------------------------- config
def test_shipped_configs_validate():
    cpu = load_config(REPO / "configs" / "pixelcnn-cpu.yaml")
    gpu = load_config(REPO / "configs" / "pixelcnn-gpu.yaml")
    for cfg in (cpu, gpu):
        assert cfg["model"]["type"] == "pixelcnn" and cfg["diffusion"] == {"type": "none"}
        assert "sigmas" not in cfg["heldout"] and cfg["model"]["in_channels"] == 2
        assert Path(cfg["data"]["path"]) == (REPO / "data" / "open256-complex").resolve()
        assert validate_config(json.loads(json.dumps(cfg))) == cfg  # idempotent


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(diffusion={"type": "ve"}), "diffusion.type: a pixelcnn model"),
    (lambda r: r.update(diffusion={"sigma_min": 0.1}), "diffusion.sigma_min: a pixelcnn model"),
    (lambda r: r.update(diffusion={"type": "none", "beta_min": 0.1}),
     "diffusion.beta_min: not used by diffusion type 'none'"),
    (lambda r: r["heldout"].update(sigmas=[0.1]), "heldout.sigmas: not used by a pixelcnn"),
    (lambda r: r["heldout"].update(sample_grid={"n": 2, "steps": 5}),
     "heldout.sample_grid.steps: not used by a pixelcnn"),
    (lambda r: r["heldout"].update(sample_grid={"n": 2, "sise": 8}),
     "heldout.sample_grid.sise: unknown key"),
    (lambda r: r["heldout"].update(sample_grid={"n": "2"}),
     "heldout.sample_grid.n: expected int, got str"),
    (lambda r: r["heldout"].update(sample_grid={"size": 9}),
     "heldout.sample_grid.size: .* not divisible by 2"),
    (lambda r: r["heldout"].update(sample_grid=[4]), "heldout.sample_grid: expected null or"),
    (lambda r: r["model"].update(filtres=8), "model.filtres: unknown key"),
    (lambda r: r["model"].update(filters="8"), "model: filters must be"),
    (lambda r: r["model"].update(n_mix=0), "model: n_mix must be"),
    (lambda r: r["model"].update(in_channels=1), "model.in_channels:"),
    (lambda r: r.update(model={"preset": "pixelcnn-cpu", "type": "unet"}),
     "model.type: 'unet' contradicts preset"),
    (lambda r: r.update(model={"preset": "cpu-small"}, diffusion={"type": "none"}),
     "diffusion.type: 'none' is only for likelihood models"),
])
def test_config_errors_name_the_key(tmp_path, dataset, mutate, message):
    raw = _raw(dataset, tmp_path / "run")
    mutate(raw)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        validate_config(raw)


def test_config_resolution(tmp_path, dataset):
    cfg = validate_config(_raw(dataset, tmp_path / "r", **{
        "heldout.sample_grid": {"n": 2}, "diffusion.type": "none"}))
    assert cfg["diffusion"] == {"type": "none"}
    assert cfg["heldout"]["sample_grid"] == {"n": 2, "size": [64, 64]}
    assert cfg["model"] == {**TINY, "in_channels": 2}
    mag = _raw(dataset, tmp_path / "r", **{"data.channels": "magnitude"})
    mag["model"] = {"preset": "pixelcnn-cpu", "in_channels": 1}
    assert validate_config(mag)["model"]["in_channels"] == 1


# ----------------------------------------------------------------------------- engine
def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_training_reduces_heldout_nll_and_exports(tmp_path, dataset):
    out = tmp_path / "run"
    res = train(_raw(dataset, out, **{"train.steps": 40, "train.save_every": 20,
                                      "heldout.every": 10}))
    held = [r["heldout"]["nll_bpd"] for r in _log(out) if "heldout" in r]
    assert len(held) == 4 and all(np.isfinite(held))
    assert held[-1] < held[0] - 0.3, held
    assert res["heldout"] == {"nll_bpd": held[-1]}
    losses = [r["loss"] for r in _log(out) if "loss" in r]
    assert losses[-1] < losses[0]
    # Export: the sidecar rebuilds the net, the weights are the EMA weights.
    net, meta = load_prior(out / "prior")
    assert meta["prior_type"] == "pixelcnn" and meta["parametrisation"] == "nll"
    assert meta["likelihood"] == "discretized_logistic_mixture" and "diffusion" not in meta
    assert meta["quantisation"]["bins"] == 256 and meta["data"]["channels"] == "complex"
    assert meta["config"]["diffusion"] == {"type": "none"}
    ck = torch.load(latest_checkpoint(out), weights_only=True)
    for name, p in net.named_parameters():
        assert torch.equal(p, ck["ema"]["shadow"][name])
    # The exported prior scores the held-out images as the last evaluation did.
    from mriprior.data.loader import SliceDataset

    hs = SliceDataset(dataset, split="val", crop=8, flips=False, seed=3)
    x = torch.stack([hs[i] for i in range(4)])
    with torch.no_grad():
        assert abs(float(image_bpd(net, x).double().mean()) - held[-1]) < 1e-5


def test_export_round_trip_and_sidecars(tmp_path):
    net = tiny(2)
    meta = {**likelihood_meta(2), "network": net.config, "data": {"channels": "complex"}}
    save_prior(tmp_path / "p", net, meta)
    loaded, side = load_prior(tmp_path / "p")
    assert isinstance(loaded, PixelCNNPP) and not loaded.training
    x = torch.rand(2, 2, 8, 8) * 2 - 1
    assert torch.equal(loaded(x), net(x))
    assert side["channel_map"].startswith("complex") and side["quantisation"]["edges"] == "open"
    # A pixelcnn sidecar must carry its likelihood; types must agree.
    with pytest.raises(InputError, match=r"lacks \['likelihood'\]"):
        save_prior(tmp_path / "q", net, {k: v for k, v in meta.items() if k != "likelihood"})
    bad = json.loads((tmp_path / "p.json").read_text())
    bad["prior_type"] = "diffusion"
    bad["diffusion"] = {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0}
    (tmp_path / "p.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="does not match network type 'pixelcnn'"):
        load_prior(tmp_path / "p")
    # An older diffusion sidecar (no prior_type key) still loads.
    from mriprior.priors.networks import network_from_preset

    torch.manual_seed(0)
    unet = network_from_preset("cpu-small", base_channels=8, channel_mults=[1, 2],
                               attention_levels=[])
    save_prior(tmp_path / "d", unet, {"network": unet.config, "parametrisation": "score",
                                      "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                    "sigma_max": 1.0},
                                      "data": {"channels": "complex"}})
    side = json.loads((tmp_path / "d.json").read_text())
    assert "prior_type" not in side
    _, m = load_prior(tmp_path / "d")
    assert m["parametrisation"] == "score"


def test_exact_resume_pixelcnn(tmp_path, dataset):
    over = {"train.steps": 6, "train.save_every": 3, "heldout.every": 3}
    raw = lambda out: (lambda r: (r["model"].update(dropout=0.3), r)[1])(  # noqa: E731
        _raw(dataset, out, **over))
    straight = train(raw(tmp_path / "a"))
    code = ("import json, os, sys; from mriprior.priors.train import train; "
            "train(json.loads(sys.argv[1]), stop_at=3); os._exit(0)")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(raw(tmp_path / "b"))],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert latest_checkpoint(tmp_path / "b").name == "ckpt-00000003.pt"
    resumed = train(raw(tmp_path / "b"), resume=True)
    assert resumed["step"] == 6
    assert straight["weights_sha256"] == resumed["weights_sha256"]
    assert straight["loss"] == resumed["loss"] and straight["heldout"] == resumed["heldout"]


class _FakeWriter:
    images: list = []
    fail = False

    def __init__(self, logdir):
        pass

    def add_scalar(self, *a):
        pass

    def add_image(self, tag, img, step):
        if _FakeWriter.fail:
            raise RuntimeError("tensorboard broke")
        _FakeWriter.images.append((tag, tuple(img.shape), float(img.min()), float(img.max()),
                                   step))

    def close(self):
        pass


@pytest.mark.parametrize("kind", ["pixelcnn", "unet"])
def test_tensorboard_sample_grids(tmp_path, dataset, monkeypatch, kind):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=_FakeWriter))
    _FakeWriter.images, _FakeWriter.fail = [], False
    grid = {"n": 3, "size": 8}
    raw = _raw(dataset, tmp_path / "run", **{"train.steps": 4, "heldout.every": 2,
                                             "heldout.sample_grid": grid})
    if kind == "unet":
        raw["model"] = {"type": "unet", "base_channels": 8, "channel_mults": [1, 2],
                        "num_res_blocks": 1, "attention_levels": []}
        raw["diffusion"] = {"type": "ve"}
        grid["steps"] = 3
    train(raw)
    tags = [(t, shape, step) for t, shape, *_, step in _FakeWriter.images]
    assert tags == [("samples/magnitude", (1, 16, 16), 2), ("samples/phase", (1, 16, 16), 2),
                    ("samples/magnitude", (1, 16, 16), 4), ("samples/phase", (1, 16, 16), 4)]
    assert all(0 <= lo <= hi <= 1 for _, _, lo, hi, _ in _FakeWriter.images)
    # A failing writer costs a warning, never the run.
    _FakeWriter.fail = True
    with pytest.warns(UserWarning, match="TensorBoard image logging failed"):
        res = train(_raw(dataset, tmp_path / "run2", **{
            "train.steps": 2, "heldout.every": 2, "heldout.sample_grid": {"n": 1, "size": 8}}))
    assert res["step"] == 2


def test_sample_grid_without_tensorboard(tmp_path, dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    res = train(_raw(dataset, tmp_path / "run", **{
        "train.steps": 2, "heldout.every": 2, "heldout.sample_grid": {"n": 1, "size": 8}}))
    assert res["step"] == 2 and "nll_bpd" in res["heldout"]


# ----------------------------------------------------------------------------- CLI
def test_cli_sample_pixelcnn(tmp_path):
    from mriprior.cli.main import main

    net = tiny(2)
    save_prior(tmp_path / "p", net, {**likelihood_meta(2), "network": net.config,
                                     "data": {"channels": "complex"}})
    out, arr = tmp_path / "grid.png", tmp_path / "s.npy"
    assert main(["sample", "--prior", str(tmp_path / "p"), "--n", "2", "--size", "8",
                 "--seed", "3", "--save", str(arr), "--out", str(out)]) == 0
    s = np.load(arr)
    assert out.stat().st_size > 500 and s.shape == (2, 2, 8, 8)
    assert np.array_equal(s, sample_prior(*load_prior(tmp_path / "p"), n=2, size=8,
                                          seed=3).numpy())
    assert np.abs(s).max() <= 1
    assert main(["sample", "--prior", str(tmp_path / "p"), "--sampler", "pc", "--size", "8",
                 "--out", str(out)]) == 2
    assert main(["sample", "--prior", str(tmp_path / "p"), "--size", "7",
                 "--out", str(out)]) == 2


def test_config_yaml_round_trip(tmp_path, dataset):
    raw = _raw(dataset, tmp_path / "out")
    raw["model"] = {"preset": "pixelcnn-cpu", "filters": 8}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "c.yaml", {"train.steps": 3})
    assert cfg["model"]["filters"] == 8 and cfg["model"]["n_mix"] == 5
    assert cfg["train"]["steps"] == 3 and cfg["diffusion"] == {"type": "none"}
    assert HALF_BIN == 1 / 255
