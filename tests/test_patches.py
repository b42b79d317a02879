"""Patch priors: position channels, patch extraction, the tiling of whole images, config checks,
a tiny training run (improving its loss, resuming exactly) whose exported prior reconstructs any
image size through the common prior interface."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mriprior.diffusion.losses import ScoreModel
from mriprior.errors import InputError
from mriprior.priors.config import validate_config
from mriprior.priors.export import load_prior
from mriprior.priors.patches import (PatchTiler, extract_patches, position_channels,
                                     tile_starts)
from mriprior.priors.train import train
from mriprior.recon.priors import FlipAveraged, flip_ensemble, load_image_prior

from tiny_data import prior_config as _raw

PATCHES = {"sizes": [8, 16], "area": 16}


def test_position_channels_are_centred_and_scaled_by_the_reference():
    pos = position_channels(torch.tensor([0]), torch.tensor([0]), (256, 256), (256, 256),
                            (256, 256))
    assert pos.shape == (1, 2, 256, 256)
    assert torch.allclose(pos[0, 0, :, 0], (torch.arange(256) + 0.5 - 128) / 128)
    assert torch.allclose(pos[0, 1, 0], (torch.arange(256) + 0.5 - 128) / 128)
    assert torch.allclose(pos[0, 0], -pos[0, 0].flip(0))  # symmetric about the centre
    # a larger image keeps the training slices' pixel scale: its centre pixels match
    big = position_channels(torch.tensor([32]), torch.tensor([32]), (256, 256), (320, 320),
                            (256, 256))
    assert torch.allclose(big, pos)


def test_extract_patches_cuts_where_the_positions_say():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 20, 24)
    patches, pos = extract_patches(x, 8, 5, (20, 24), g)
    assert patches.shape == (15, 2, 8, 8) and pos.shape == (15, 2, 8, 8)
    for i in range(15):  # invert the position channels to pixel indices
        y0 = round(float(pos[i, 0, 0, 0]) * 10 + 10 - 0.5)
        x0 = round(float(pos[i, 1, 0, 0]) * 12 + 12 - 0.5)
        assert 0 <= y0 <= 12 and 0 <= x0 <= 16
        assert torch.equal(patches[i], x[i // 5, :, y0:y0 + 8, x0:x0 + 8])
    with pytest.raises(InputError, match="patch size 32 is larger than the images 20 x 24"):
        extract_patches(x, 32, 1, (20, 24), g)


@pytest.mark.parametrize("length, tile", [(256, 64), (100, 32), (64, 64), (65, 64), (10, 16)])
def test_tiles_cover_the_image_from_inside_for_every_shift(length, tile):
    for shift in range(tile):
        starts = tile_starts(length, tile, shift)
        covered = torch.zeros(max(length, tile), dtype=torch.bool)
        for s in starts:
            assert 0 <= s <= max(length - tile, 0)
            covered[s:s + tile] = True
        assert covered[:length].all()
        assert len(starts) <= -(-length // tile) + 2


class _Echo(nn.Module):
    """A 'network' returning its input plus 10 x its position channels, to test the tiler's
    reassembly and the positions each tile gets (sizes must be multiples of 4, like a U-Net
    with 3 levels)."""

    config = {"type": "unet", "in_channels": 2, "cond_channels": 2}
    size_multiple = 4

    def forward(self, x, sigma, cond):
        assert cond.shape == (x.shape[0], 2, *x.shape[-2:]) and sigma.shape == (x.shape[0],)
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0
        return x + 10 * cond


@pytest.mark.parametrize("infer", [None, 16])
@pytest.mark.parametrize("h, w", [(40, 56), (16, 16), (10, 20), (15, 9)])
def test_tiler_reassembles_whole_images_with_consistent_positions(h, w, infer):
    tiler = PatchTiler(_Echo(), infer=infer, ref=(32, 32), seed=1)
    assert tiler.config["cond_channels"] == 0 and tiler.size_multiple == 1
    x = torch.randn(3, 2, h, w)
    whole = position_channels(torch.tensor([0]), torch.tensor([0]), (h, w), (h, w), (32, 32))
    for _ in range(5):  # a new shift at every call; the result does not depend on it
        out = tiler(x, torch.full((3,), 0.1))
        assert out.shape == x.shape
        assert torch.allclose(out, x + 10 * whole, atol=1e-5)


def test_config_patches_section(dataset):  # noqa: F811
    raw = _raw(dataset, "out", **{"data.crop": None, "data.patches": PATCHES})
    cfg = validate_config(raw)
    assert cfg["data"]["patches"] == {"sizes": [8, 16], "area": 16, "infer": None}
    assert cfg["model"]["cond_channels"] == 2 and cfg["model"]["in_channels"] == 2
    assert validate_config(raw) == cfg
    assert validate_config(cfg) == cfg  # a resolved config (config.json) validates unchanged
    cases = [
        ({"data.crop": 16}, "data.crop: a patch prior cuts its patches out of whole slices"),
        ({"data.patches": {"sizes": [7]}}, "patch size 7 is not a multiple of 2"),
        ({"data.patches": {"sizes": [8], "infer": 9}}, "patch size 9 is not a multiple of 2"),
        ({"data.patches": {"sizes": [8], "infer": 0}}, "infer: expected a positive int or null"),
        ({"data.patches": {"sizes": [8], "area": 4}}, "area: 4 is smaller than the largest"),
        ({"data.patches": {"sizes": []}}, "sizes: expected a non-empty list of positive ints"),
        ({"data.patches": {"sizes": [8], "stride": 2}}, r"patches.stride: unknown key"),
        ({"data.patches": [8]}, "expected null or a mapping"),
    ]
    for over, message in cases:
        bad = _raw(dataset, "out", **{"data.crop": None, "data.patches": PATCHES, **over})
        with pytest.raises(InputError, match=message):
            validate_config(bad)
    bad = _raw(dataset, "out", **{"data.crop": None, "data.patches": PATCHES})
    bad["model"]["cond_channels"] = 1
    with pytest.raises(InputError, match="model.cond_channels: set by data.patches"):
        validate_config(bad)


def _patch_run(dataset, out, **over):  # noqa: F811
    raw = _raw(dataset, out, **{"data.crop": None, "data.patches": PATCHES,
                                "train.ema_ramp": True, **over})
    raw["diffusion"] = {"type": "edm", "sigma_data": 0.3, "p_mean": -1.5, "p_std": 1.2,
                        "sigma_min": 0.01, "sigma_max": 1.0}
    return raw


def test_tiny_patch_run_trains_resumes_and_reconstructs_any_size(tmp_path, dataset):  # noqa
    over = {"train.steps": 24, "train.save_every": 12, "heldout.every": 12}
    res = train(_patch_run(dataset, tmp_path / "a", **over))
    assert res["step"] == 24
    records = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text()
               .splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]
    held = [r["heldout"] for r in records if "heldout" in r]
    assert len(held) == 2 and held[-1]["0.1"] < held[0]["0.1"]
    # exact resume: the patch sizes and positions come from the checkpointed noise stream
    train(_patch_run(dataset, tmp_path / "b", **over), stop_at=12)
    resumed = train(_patch_run(dataset, tmp_path / "b", **over), resume=True)
    assert resumed["weights_sha256"] == res["weights_sha256"]

    net, meta = load_prior(tmp_path / "a" / "prior")
    assert isinstance(net, PatchTiler) and net.infer is None and net.ref == (20, 20)
    assert meta["patches"] == {"sizes": [8, 16], "area": 16, "infer": None, "ref": [20, 20]}
    prior = load_image_prior(tmp_path / "a" / "prior")
    for shape in [(2, 20, 20), (1, 27, 33), (1, 9, 12)]:  # not multiples of the network's 2
        x = torch.randn(*shape, dtype=torch.complex64)
        s = prior.score(x, 0.1)
        assert s.shape == x.shape and torch.isfinite(s).all()
    # on a training-size image the whole-image denoiser is the network on the whole slice
    x = torch.randn(2, 20, 20, dtype=torch.complex64)
    full = position_channels(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                             (20, 20), (20, 20), (20, 20)).expand(2, -1, -1, -1)
    direct = prior.model.denoise(x, 0.1)
    by_hand = ScoreModel(lambda v, s: net.net(v, s, full), "edm", sigma_data=0.3).denoise(x, 0.1)
    assert torch.allclose(direct, by_hand, atol=1e-5)


def test_patch_prior_exports_to_torchscript_for_any_size(tmp_path, dataset):  # noqa: F811
    """The whole-image patch prior in BART 1.0's TorchScript convention: the scripted shell
    computes the position channels for each image size; plain torch.jit.load matches the
    in-process denoiser (sizes that need padding too). Tiled patch priors are refused."""
    import json as json_

    from mriprior.priors.deploy import export_torchscript
    from mriprior.priors.export import read_sidecar, save_prior

    train(_patch_run(dataset, tmp_path / "p", **{"train.steps": 4, "heldout.every": 0}))
    prior = tmp_path / "p" / "prior"
    with torch.no_grad():  # a network whose output depends visibly on the positions
        net, meta = load_prior(prior)
        net.net.conv_out.weight.normal_(0, 0.05)
        save_prior(tmp_path / "q", net.net, meta)
    info = export_torchscript(tmp_path / "q", tmp_path / "q.pt", size=(16, 16))
    assert info["size_multiple"] == 2 and info["max_abs_diff"] < 1e-4
    ts = torch.jit.load(str(tmp_path / "q.pt"))
    model = load_image_prior(tmp_path / "q").model
    g = torch.Generator().manual_seed(0)
    for batch, size in [(1, (20, 20)), (3, (17, 30))]:
        x = torch.randn(batch, *size, generator=g, dtype=torch.complex64) * 0.4
        sigma = torch.linspace(0.02, 0.5, batch)
        with torch.no_grad():
            want, got = model.denoise(x, sigma), ts(x, sigma.to(torch.complex64))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    meta = read_sidecar(tmp_path / "q")
    meta["patches"]["infer"] = 8
    (tmp_path / "q.json").write_text(json_.dumps(meta))
    with pytest.raises(InputError, match="a patch prior applied in tiles"):
        export_torchscript(tmp_path / "q", tmp_path / "r.pt")


def test_flip_ensemble_is_the_average_over_the_four_flips_and_flip_equivariant():
    def fn(x, sigma, cond):  # neither flip-equivariant nor linear
        return torch.tanh(x.cumsum(-1) * sigma) + cond.cumsum(-2) ** 2

    ens = flip_ensemble(fn)
    x, c = torch.randn(2, 1, 6, 7), torch.randn(2, 1, 6, 7)
    by_hand = sum(fn(x.flip(d), 0.5, c.flip(d)).flip(d) if d else fn(x, 0.5, c)
                  for d in [(), (-2,), (-1,), (-2, -1)]) / 4
    assert torch.allclose(ens(x, 0.5, c), by_hand, atol=1e-6)
    for d in [(-2,), (-1,), (-2, -1)]:
        assert torch.allclose(ens(x.flip(d), 0.5, c.flip(d)), ens(x, 0.5, c).flip(d), atol=1e-6)
    assert torch.allclose(flip_ensemble(lambda v, s: v * s)(x, 2.0), 2 * x)  # no extra images


def test_flip_averaged_prior_scores_the_flip_averaged_network():
    plain = load_image_prior("bundled")
    flipped = FlipAveraged(plain)
    assert flipped.sigma_min == plain.sigma_min and flipped.model is plain.model
    x = torch.randn(2, 24, 20, dtype=torch.complex64) * 0.3  # not the network's multiple
    s = flipped.score(x, 0.05)
    assert plain.nfe == 4 and flipped.nfe == 4  # four network evaluations, counted
    by_hand = sum(plain.score(x.flip(d), 0.05).flip(d) if d else plain.score(x, 0.05)
                  for d in [(), (-2,), (-1,), (-2, -1)]) / 4
    tol = 1e-5 * float(s.abs().max())
    assert torch.allclose(s, by_hand, atol=tol)
    assert torch.allclose(flipped.score(x.flip(-1), 0.05), s.flip(-1), atol=tol)
    assert not torch.allclose(plain.score(x.flip(-1), 0.05), plain.score(x, 0.05).flip(-1),
                              atol=100 * tol)  # the network alone is not flip-equivariant
    with pytest.raises(InputError, match="flip-averaged already"):
        FlipAveraged(flipped)


def test_recon_with_flips_is_unchanged_for_a_flip_invariant_prior():
    """A Gaussian prior's score is flip-equivariant: averaging changes nothing but the count."""
    from mriprior.physics.phantom import birdcage_maps, shepp_logan
    from mriprior.physics.sense import Sense
    from mriprior.recon.posterior import fast_posterior, prior_pics
    from mriprior.recon.priors import GaussianPrior

    n = 16
    maps = birdcage_maps(4, (n, n), normalize="rss")[None]
    mask = (torch.rand(n, n, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    ksp = Sense(maps, mask).forward(shepp_logan(n).to(torch.complex64)[None])
    prior = GaussianPrior(var=0.1)
    a, _ = prior_pics(ksp, maps, prior, lam=0.5, max_iter=5)
    b, _ = prior_pics(ksp, maps, prior, lam=0.5, max_iter=5, flips=True)
    assert torch.allclose(a, b, atol=1e-5 * float(a.abs().max()))
    r0 = fast_posterior(ksp, maps, prior, chains=2, nfe=3)
    r1 = fast_posterior(ksp, maps, prior, chains=2, nfe=3, flips=True)
    assert torch.allclose(r0.mmse, r1.mmse, atol=1e-4 * float(r0.mmse.abs().max()))
    assert (r0.nfe, r1.nfe) == (3, 12)
