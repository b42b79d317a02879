"""Volumes: a multi-slice fastMRI-style file (made here) reconstructed slice by slice by
`mriprior pics` / `mriprior recon`, fastMRI-style output, resume, and volume metrics."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl
from mriprior.metrics import evaluate_volume
from mriprior.recon import volume as vmod
from mriprior.recon.volume import reconstruct_volume

from fastmri_synth import RECON_HEADER, oversampled_volume  # tests/fastmri_synth.py


def _volume_file(path, n_slices=3, coils=6):
    """fastMRI layout (tests/fastmri_synth.py): (slices, coils, 64 readout rows (2x
    oversampled), 32 phase encodes), columns undersampled (R ~ 1.6, 12 central), reference RSS
    cropped to 32 x 32."""
    _, full = oversampled_volume(n_slices, coils)
    mask = np.zeros(32, bool)
    mask[::2] = True
    mask[10:22] = True
    rss = np.sqrt((np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(
        full, axes=(-2, -1)), axes=(-2, -1), norm="ortho"), axes=(-2, -1))) ** 2).sum(1))
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=full * mask)
        f.create_dataset("mask", data=mask)
        f.create_dataset("ismrmrd_header", data=np.bytes_(RECON_HEADER.encode()))
        f.create_dataset("reconstruction_rss", data=rss[:, 16:48].astype(np.float32))
        f.attrs["patient_id"] = "fake-patient-777"
    return path


@pytest.fixture(scope="module")
def vol(tmp_path_factory):
    return _volume_file(tmp_path_factory.mktemp("vol") / "file1000.h5")


def test_pics_volume_h5(vol, tmp_path, capsys):
    out = tmp_path / "rec.h5"
    assert main(["pics", "-l1", "-r", "0.002", "-i", "60", str(vol), str(out)]) == 0
    with h5py.File(out, "r") as f:
        rec = f["reconstruction"][()]
        attrs = dict(f.attrs)
        assert "std" not in f
    assert rec.shape == (3, 32, 32) and rec.dtype == np.float32
    assert attrs["method"] == "pics" and attrs["source"] == "file1000.h5"
    assert json.loads(attrs["settings"])["options"]["lam"] == 0.002
    assert "fake-patient" not in json.dumps({k: str(v) for k, v in attrs.items()})
    with h5py.File(vol, "r") as f:
        ref = f["reconstruction_rss"][()]
    m = evaluate_volume(ref, rec)
    assert m["psnr"] > 40 and m["ssim"] > 0.99, m  # R ~ 1.6 with 6 coils: nearly exact
    assert not (tmp_path / "rec.h5.parts").exists()
    # metrics in fastMRI's volume convention, from the two files
    capsys.readouterr()
    assert main(["metrics", "--json", str(vol), str(out)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == pytest.approx(m)


def test_volume_metrics_convention():
    """Data range = the whole reference volume's maximum, SSIM per slice averaged (fastMRI)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    g = np.random.default_rng(0)
    ref = g.random((3, 16, 16)) * np.array([1.0, 2.0, 0.5])[:, None, None]
    rec = np.abs(ref + 0.05 * g.standard_normal(ref.shape))  # magnitudes, as fastMRI
    m = evaluate_volume(ref, rec)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, rec, data_range=ref.max()))
    want = np.mean([structural_similarity(ref[i], rec[i], data_range=ref.max())
                    for i in range(3)])
    assert m["ssim"] == pytest.approx(want)
    assert m["nmse"] == pytest.approx(np.sum((ref - rec) ** 2) / np.sum(ref ** 2))


def test_posterior_volume_resumes_per_slice(vol, tmp_path, monkeypatch):
    """Killed after slice 1: the rerun reconstructs only the rest and gives the same volume."""
    kw = dict(method="fast", prior="bundled", options={"chains": 2, "nfe": 3})
    ref = tmp_path / "full.h5"
    reconstruct_volume(vol, ref, **kw)
    real = vmod._one_slice
    calls = []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(vmod, "_one_slice", dies_on_third)
    out = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        reconstruct_volume(vol, out, **kw)
    assert not out.exists() and len(list((tmp_path / "r.h5.parts").glob("slice-*"))) == 2
    monkeypatch.setattr(vmod, "_one_slice", real)
    with pytest.raises(InputError, match="different job"):
        reconstruct_volume(vol, out, **{**kw, "options": {"chains": 2, "nfe": 4}})
    s = reconstruct_volume(vol, out, **kw)
    assert s["reconstructed_now"] == 1
    # options left out come from the prior's tuned recon_defaults, then the library's, as for
    # `mriprior recon` on one slice
    # (those tuned on 1D sampling: the volume's mask samples lines)
    from mriprior.recon.posterior import tuned_options
    from mriprior.recon.priors import load_image_prior
    tuned = tuned_options("fast", load_image_prior("bundled"), "1d")
    opts = s["settings"]["options"]
    assert s["settings"]["pattern"] == "1d"
    assert (opts["chains"], opts["nfe"], opts["sigma_start"], opts["noise_var"]) == \
        (2, 3, tuned["sigma_start"], "auto")
    with pytest.raises(InputError, match=r"unknown option\(s\) \['nfe_typo'\]"):
        reconstruct_volume(vol, tmp_path / "x.h5", **{**kw, "options": {"nfe_typo": 3}})
    with h5py.File(out, "r") as a, h5py.File(ref, "r") as b:
        np.testing.assert_array_equal(a["reconstruction"][()], b["reconstruction"][()])
        np.testing.assert_array_equal(a["std"][()], b["std"][()])
        assert a["std"].shape == (3, 32, 32)


def test_posterior_volume_writes_the_calibrated_std(vol, tmp_path):
    """A prior whose sidecar holds an uncertainty calibration for the run's settings: the
    volume's std is the calibrated one (recon.calibration), recorded in its settings."""
    import shutil
    import torch
    from mriprior.priors.export import prior_files, read_sidecar, set_recon_defaults
    from mriprior.recon.calibration import SETTINGS, calibrated_std
    from mriprior.recon.posterior import tuned_options
    from mriprior.recon.priors import load_image_prior

    for src, ext in zip(prior_files("bundled"), (".safetensors", ".json")):
        shutil.copy(src, tmp_path / f"p{ext}")
    kw = dict(method="fast", options={"chains": 2, "nfe": 3})
    opts = {**tuned_options("fast", load_image_prior(tmp_path / "p"), "1d"), **kw["options"]}
    rd = read_sidecar(tmp_path / "p")["recon_defaults"]
    cal = {"scale": 1.7, "pool": 3, "settings": {k: opts[k] for k in SETTINGS["fast"]}}
    one_d = {k: v for k, v in rd["fast"].get("1d", {}).items() if k != "calibration"}
    rd["fast"] = {k: v for k, v in rd["fast"].items() if k != "1d"}
    rd["fast"]["1d"] = one_d  # the volume samples lines: its calibration is the 1D one
    set_recon_defaults(tmp_path / "p", {**rd, "fast": {**rd["fast"],
                                                       "1d": {**one_d, "calibration": cal}}})
    s = reconstruct_volume(vol, tmp_path / "cal.h5", prior=tmp_path / "p", **kw)
    assert s["settings"]["std_calibration"] == {"scale": 1.7, "pool": 3}
    set_recon_defaults(tmp_path / "p", rd)  # the same prior without it: the chains' own std
    s = reconstruct_volume(vol, tmp_path / "raw.h5", prior=tmp_path / "p", **kw)
    assert "std_calibration" not in s["settings"]
    with h5py.File(tmp_path / "cal.h5", "r") as a, h5py.File(tmp_path / "raw.h5", "r") as b:
        np.testing.assert_array_equal(a["reconstruction"][()], b["reconstruction"][()])
        raw = torch.from_numpy(b["std"][()])
        want = calibrated_std(raw, cal).numpy()
        # pooling after the centre crop differs from before it only at the crop's edge
        np.testing.assert_allclose(a["std"][()][:, 1:-1, 1:-1], want[:, 1:-1, 1:-1],
                                   rtol=1e-4, atol=1e-6 * want.max())


def test_recon_volume_to_cfl(vol, tmp_path):
    out = tmp_path / "mmse"
    assert main(["recon", "--prior", "bundled", "--quiet", "--chains", "2", "--nfe", "2",
                 str(vol), str(out)]) == 0
    img, std = read_cfl(out), read_cfl(str(out) + "_std")
    assert img.shape == (32, 32) + (1,) * 11 + (3,) and std.shape == img.shape
    assert np.iscomplexobj(img) and np.isfinite(img).all()


def test_cfl_with_slices_in_dim_13(tmp_path):
    """KSP with 3 slices in BART dim 13 (shared maps): each slice equals the single-slice run
    on that slice; outputs stack along dim 13; recon's --std too."""
    from mriprior.io.cfl import write_cfl
    from mriprior.physics.phantom import birdcage_maps, shepp_logan
    from mriprior.physics.sense import Sense
    import torch

    n = 24
    maps = birdcage_maps(4, (n, n), normalize="rss")[None]
    mask = torch.zeros(n, n)
    mask[:, ::2] = 1
    mask[:, n // 2 - 4: n // 2 + 4] = 1
    ks = [Sense(maps, mask).forward((shepp_logan(n) * (1 + 0.5 * s)).to(torch.complex64)[None])
          [0].numpy().transpose(2, 1, 0) for s in range(3)]  # (x, y, coil)
    vol = np.ascontiguousarray(np.stack(ks, -1)[:, :, None, :, None, None, None, None, None, None,
                                               None, None, None, :])
    write_cfl(tmp_path / "ksp", vol)
    write_cfl(tmp_path / "sens", maps[0].numpy().transpose(2, 1, 0)[:, :, None, :])
    write_cfl(tmp_path / "k1", vol[..., 1:2])
    flags = ["pics", "-l1", "-r", "0.01", "-i", "20"]
    assert main(flags + [str(tmp_path / "ksp"), str(tmp_path / "sens"), str(tmp_path / "x")]) == 0
    assert main(flags + [str(tmp_path / "k1"), str(tmp_path / "sens"), str(tmp_path / "x1")]) == 0
    x, x1 = read_cfl(tmp_path / "x", squeeze=False), read_cfl(tmp_path / "x1", squeeze=False)
    assert x.shape[13] == 3 and x.shape[:2] == (n, n)
    np.testing.assert_allclose(np.take(x, [1], axis=13), x1, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "x.parts").exists()
    assert main(["recon", "--prior", "bundled", "--quiet", "--chains", "2", "--nfe", "2",
                 "--std", str(tmp_path / "std"), str(tmp_path / "ksp"), str(tmp_path / "sens"),
                 str(tmp_path / "m")]) == 0
    assert read_cfl(tmp_path / "m", squeeze=False).shape[13] == 3
    assert read_cfl(tmp_path / "std", squeeze=False).shape[13] == 3
