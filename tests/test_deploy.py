"""TorchScript export of priors (BART 1.0's denoiser interface), and the exported file inside a
PyTorch-enabled BART when one is available (MRIPRIOR_BART10=path/to/bart, or `bart` on the PATH
reporting v1.x; build one with bench/bart/build.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.diffusion.losses import ScoreModel
from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl, write_cfl
from mriprior.priors.deploy import export_torchscript
from mriprior.priors.export import load_prior, save_prior
from mriprior.priors.networks import network_from_preset

DIFFUSIONS = {
    "ve": ("score", {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0}),
    "vp": ("eps", {"type": "vp", "beta_min": 0.1, "beta_max": 20.0}),
    "edm": ("edm", {"type": "edm", "sigma_data": 0.3, "p_mean": -2.0, "p_std": 1.4,
                    "sigma_min": 0.01, "sigma_max": 1.0}),
}


def _prior(path, kind="ve", channels="complex"):
    torch.manual_seed(0)
    net = network_from_preset("cpu-small", base_channels=8, channel_mults=[1, 2],
                              attention_levels=[],
                              in_channels=2 if channels == "complex" else 1,
                              out_channels=2 if channels == "complex" else 1)
    with torch.no_grad():  # a non-trivial network: random output layer
        net.conv_out.weight.normal_(0, 0.05)
    par, diff = DIFFUSIONS[kind]
    save_prior(path, net, {"network": net.config, "parametrisation": par, "diffusion": diff,
                           "data": {"channels": channels}})
    return path


@pytest.mark.parametrize("kind", ["ve", "vp", "edm"])
def test_torchscript_matches_the_denoiser_at_any_batch_and_size(tmp_path, capsys, kind):
    prior = _prior(tmp_path / "p", kind)
    assert main(["export", str(prior), str(tmp_path / "p.pt"), "--size", "16", "16"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_multiple"] == 2 and info["max_abs_diff"] < 1e-5
    extra = {"mriprior.json": ""}
    ts = torch.jit.load(str(tmp_path / "p.pt"), _extra_files=extra)  # plain PyTorch
    meta_ts = json.loads(extra["mriprior.json"])
    assert meta_ts["diffusion"]["type"] == kind and "real-valued" in meta_ts["convention"]["noise"]
    net, meta = load_prior(prior)
    model = ScoreModel.from_meta(net.eval(), meta)
    g = torch.Generator().manual_seed(3)
    for batch, size in [(1, (32, 32)), (4, (24, 40))]:
        x = torch.randn(batch, *size, generator=g, dtype=torch.complex64) * 0.4
        sigma = torch.linspace(0.02, 0.9, batch)
        with torch.no_grad():
            want = model.denoise(x, sigma)
            got = ts(x, sigma.to(torch.complex64))
        assert got.dtype == torch.complex64 and got.shape == x.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert (want - x).abs().max() > 1e-3  # the network does something
    # a size the network cannot take directly: zero-padded inside, centred, cropped back
    x = torch.randn(2, 23, 29, generator=g, dtype=torch.complex64) * 0.4
    sigma = torch.tensor([0.05, 0.5])
    pad = torch.zeros(2, 24, 30, dtype=torch.complex64)  # multiple 2: one row, one column
    pad[:, 0:23, 0:29] = x
    with torch.no_grad():
        want = model.denoise(pad, sigma)[:, 0:23, 0:29]
        got = ts(x, sigma.to(torch.complex64))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous()  # BART reads the output as dense memory


def test_export_refuses_what_bart_cannot_call(tmp_path):
    with pytest.raises(InputError, match="magnitude prior"):
        export_torchscript(_prior(tmp_path / "m", channels="magnitude"), tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"multiples of 2"):
        export_torchscript(_prior(tmp_path / "p"), tmp_path / "p.pt", size=(15, 16))
    assert not (tmp_path / "p.pt").exists() and not (tmp_path / "m.pt").exists()


def test_bundled_prior_exports_by_name(tmp_path, capsys):
    assert main(["export", "bundled", str(tmp_path / "b.pt"), "--size", "32", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["size_multiple"] == 8
    assert (tmp_path / "b.pt").stat().st_mode & 0o044  # readable like any file we write


def _bart10():
    """A PyTorch-enabled BART 1.x, or the reason there is none."""
    cand = os.environ.get("MRIPRIOR_BART10") or shutil.which("bart")
    if not cand:
        return None, "no BART found (set MRIPRIOR_BART10; bench/bart/build.sh builds one)"
    try:
        v = subprocess.run([cand, "version"], capture_output=True, text=True, timeout=30).stdout
    except OSError as e:
        return None, f"{cand}: {e}"
    if not v.strip().startswith("v1"):
        return None, f"{cand} is BART {v.strip() or '?'}, not 1.x with PyTorch"
    h = subprocess.run([cand, "sample", "-h"], capture_output=True, text=True).stdout
    if "external-graph" not in h:
        return None, f"{cand}: no --external-graph support"
    return cand, ""


def test_exported_prior_runs_inside_bart10(tmp_path):
    bart, why = _bart10()
    if bart is None:
        pytest.skip(why)
    prior = _prior(tmp_path / "p")
    export_torchscript(prior, tmp_path / "p.pt", size=(16, 16))
    # posterior sampling on fully sampled, nearly noiseless 4-coil data: BART must call the
    # network at every level and end at the image the data determine
    from mriprior.physics.phantom import birdcage_maps, shepp_logan
    from mriprior.physics.sense import Sense
    n = 31  # odd: the network (multiple 2) is fed zero-padded images inside the export
    img = shepp_logan(n).to(torch.complex64)[None]
    maps = birdcage_maps(4, (n, n), normalize="rss")[None]
    ksp = Sense(maps, torch.ones(n, n)).forward(img)[0].numpy()  # (coil, y, x)
    # BART's likelihood is exp(-||y - A x||^2): unit-variance k-space noise. Scaling k-space and
    # maps by c = 100 says "noise std 1 % of the image maximum" without changing the image.
    c = 100.0
    write_cfl(tmp_path / "ksp", c * ksp.transpose(2, 1, 0)[:, :, None, :])  # BART (x, y, 1, coil)
    write_cfl(tmp_path / "sens", c * maps[0].numpy().transpose(2, 1, 0)[:, :, None, :])
    r = subprocess.run([bart, "sample", "-r", "--external-graph", str(tmp_path / "p.pt"),
                        "-N", "8", "-S", "2", "--sigma", "min=0.01,max=1",
                        "--posterior", f"k={tmp_path / 'ksp'},s={tmp_path / 'sens'}",
                        str(tmp_path / "samples"), str(tmp_path / "mmse")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = read_cfl(tmp_path / "samples")  # (x, y, 1, ..., batch in dim 15)
    assert out.shape[:2] == (n, n) and out.shape[-1] == 2 and np.isfinite(out).all()
    ref = img[0].numpy()
    for x in out.reshape(n, n, -1, order="F").transpose(2, 1, 0):  # each sample, (y, x)
        err = np.linalg.norm(x - ref) / np.linalg.norm(ref)
        assert err < 0.1, err
