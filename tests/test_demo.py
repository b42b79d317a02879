"""The README's main command: the prior demo on the embedded default (bundled case and prior)."""

import json

import numpy as np
import pytest

from mriprior.cli.main import main
from mriprior.experiments.prior_demo import DEFAULT_CASE, DEFAULT_PRIOR, build_case, load_case
from mriprior.io.cfl import read_cfl
from mriprior.priors.export import read_sidecar


def test_bundled_assets_are_complete_and_small():
    ksp, ref, info = load_case(DEFAULT_CASE)
    assert ksp.shape[0] == 1 and ksp.shape[-2:] == ref.shape[-2:]
    assert info["split"] == "test" and "licence" in info
    sampled = (ksp.abs().sum(1) > 0).float().mean()
    assert 0.08 < float(sampled) < 0.2  # Poisson-disc R ~ 8
    meta = read_sidecar(DEFAULT_PRIOR)
    weights = DEFAULT_PRIOR.with_suffix(".safetensors")
    assert weights.stat().st_size <= 20 * 2 ** 20
    assert meta["data"]["channels"] == "complex" and meta.get("step", 0) > 0


def test_demo_runs_on_the_embedded_default(tmp_path):
    assert main(["demo", "--chains", "2", "--nfe", "8", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    r = res["results"]
    assert set(r) == {"zero-filled", "L1-wavelet", "prior MMSE", "prior PICS"}
    assert r["prior PICS"]["psnr"] > r["zero-filled"]["psnr"] + 5
    assert r["prior MMSE"]["nfe_per_chain"] == 8 and r["prior MMSE"]["chains"] == 2
    # even 3 evaluations with CG data consistency must beat zero-filling by a wide margin
    assert r["prior MMSE"]["psnr"] > r["zero-filled"]["psnr"] + 5
    for f in ("demo.png", "ksp.cfl", "sens.cfl", "reference.cfl", "mmse.cfl", "std.cfl",
              "l1_wavelet.cfl", "flag.cfl", "prior_pics.cfl"):
        assert (tmp_path / f).exists(), f
    std = read_cfl(tmp_path / "std")
    assert np.isfinite(std).all() and np.abs(std).max() > 0


def test_build_case_round_trip_and_errors(tmp_path):
    from mriprior.data.dataset import DatasetWriter
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "ds", kind="complex", shape=(32, 32)) as w:
        for i in range(3):
            img = (rng.random((32, 32)) * np.exp(1j * rng.random((32, 32)))).astype(np.complex64)
            w.add(img, {"source": f"s{i}.nii", "subject": f"sub{i}",
                        "split": ["train", "val", "test"][i]})
    info = build_case(tmp_path / "ds", tmp_path / "case.npz", accel=4, calib=8)
    assert info["split"] == "test" and info["source"] == "s2.nii"
    ksp, ref, info2 = load_case(tmp_path / "case.npz")
    assert ksp.shape == (1, 8, 32, 32) and info2 == info
    from mriprior.errors import InputError
    with pytest.raises(InputError, match="demo case"):
        load_case(tmp_path / "missing.npz")
