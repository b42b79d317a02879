"""The GPU device run (`bench/gpu/pack.py` + `bench/gpu/run.py`) on a tiny pack, on the CPU:
the same code path as the device call, so that call is never the script's first run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mriprior.data.dataset import DatasetWriter
from mriprior.data.simulate import simulate_dataset
from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl
from mriprior.physics.fft import fft2c
from mriprior.physics.phantom import birdcage_maps, shepp_logan
from mriprior.priors.export import set_recon_defaults
from mriprior.recon.priors import load_image_prior

REPO = Path(__file__).resolve().parents[1]
N = 64


def _load(name):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", REPO / "bench" / "gpu" /
                                                  f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # worker processes find its functions by module name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpupack")
    base = shepp_logan(N).abs().numpy()
    yy, xx = np.mgrid[:N, :N] / N
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 4
    with DatasetWriter(d / "open", "magnitude", (N, N), options={"normalize": "max"}) as w:
        for i, split in enumerate(splits):
            img = base * (0.6 + 0.4 * np.cos(2 * np.pi * (i + 1) * xx / 7)) + 0.01 * yy
            w.add((img / img.max()).astype(np.float32),
                  {"source": f"s{i}", "subject": f"p{split}", "index": i, "split": split})
    simulate_dataset(d / "open", d / "complex", seed=0)
    clin = d / "clinical" / "glioma"
    clin.mkdir(parents=True)
    for i, (h, w_) in enumerate([(50, 70), (64, 64), (80, 40)]):
        a = np.clip(np.random.default_rng(i).normal(120, 40, (h, w_)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(clin / f"c{i}.jpg", quality=90)
    img = torch.from_numpy(base).to(torch.complex64) * torch.exp(0.4j * torch.from_numpy(xx))
    maps = birdcage_maps(8, (N, N), normalize="rss")
    ksp = fft2c(maps * img.to(torch.complex64))
    mask = torch.zeros(N, N)
    mask[::3] = 1
    mask[N // 2 - 12: N // 2 + 12] = 1
    real = d / "real"
    real.mkdir()
    write_cfl(real / "ksp", (ksp * mask).numpy().transpose(2, 1, 0)[:, :, None, :])
    write_cfl(real / "img", img.numpy().T[:, :, None, None, None])
    return d


def test_pack_contents_and_guards(sources, tmp_path):
    pack = _load("pack")
    info = pack.pack(sources / "open", sources / "complex", tmp_path / "p",
                     clinical=sources / "clinical", clinical_n=2, real=sources / "real",
                     n_val=1, n_test=2, log=lambda m: None)
    z = np.load(tmp_path / "p" / "pack.npz", allow_pickle=False)
    assert len(z["open_offsets"]) == 7 and z["open_offsets"][-1] == len(z["open_jpeg"])
    assert len(z["clinical_offsets"]) == 3  # 2 of the 3 files, byte for byte
    assert z["val"].shape == (1, N, N) and z["test"].shape == (2, N, N)
    assert z["val"].dtype == np.complex64
    assert info["clinical"]["files"] == 2 and (tmp_path / "p" / "real" / "ksp.cfl").is_file()
    # open slices round-trip through JPEG q95 to about one 8-bit level
    run = _load("run")
    first = run._decode(z["open_jpeg"][z["open_offsets"][0]:z["open_offsets"][1]].tobytes())
    from mriprior.data.dataset import open_dataset
    ref = np.asarray(open_dataset(sources / "open")[0])
    assert first.shape == (N, N) and np.abs(first - ref).mean() < 0.01
    # a folder that is not a pack is never replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a pack"):
        pack.pack(sources / "open", sources / "complex", other, n_val=1, n_test=2,
                  log=lambda m: None)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="complex version"):
        pack.pack(sources / "open", sources / "open", tmp_path / "q", n_val=1, n_test=2,
                  log=lambda m: None)
    # clinical training files beside a clinical evaluation: only the named dataset's training
    # split is drawn from (c1 is held out there), and leaving it out is refused
    with DatasetWriter(tmp_path / "imported", "magnitude", (4, 4)) as w:
        for i, split in enumerate(["train", "test", "train"]):
            w.add(np.zeros((4, 4), np.float32), {"source": f"glioma/c{i}.jpg", "split": split})
    with pytest.raises(InputError, match="--clinical-from"):
        pack.pack(sources / "open", sources / "complex", tmp_path / "r", clinical=sources /
                  "clinical", eval_path=sources / "complex", n_val=1, n_test=2,
                  log=lambda m: None)
    info = pack.pack(sources / "open", sources / "complex", tmp_path / "r",
                     clinical=sources / "clinical", clinical_n=5,
                     clinical_from=tmp_path / "imported", eval_path=sources / "complex",
                     n_val=1, n_test=2, log=lambda m: None)
    z = np.load(tmp_path / "r" / "pack.npz", allow_pickle=False)
    blobs = [z["clinical_jpeg"][a:b].tobytes() for a, b in zip(z["clinical_offsets"][:-1],
                                                              z["clinical_offsets"][1:])]
    clin = sources / "clinical" / "glioma"
    assert blobs == [(clin / "c0.jpg").read_bytes(), (clin / "c2.jpg").read_bytes()]
    assert info["clinical"]["train_split_of"]["dataset"] == str(tmp_path / "imported")


def test_dry_run_same_code_path(sources, tmp_path):
    pack, run = _load("pack"), _load("run")
    pack.pack(sources / "open", sources / "complex", tmp_path / "p",
              clinical=sources / "clinical", clinical_n=3, real=sources / "real", n_val=1,
              n_test=2, log=lambda m: None)
    out = tmp_path / "out"
    status = run.main(["--pack", str(tmp_path / "p"), "--out", str(out), "--dry-run",
                       "--budget", "100000", "--workers", "2", "--patterns", "poisson"])
    assert status == 0
    names = {p.name for p in out.iterdir()}
    assert {"prior-edm-gpu.safetensors", "prior-edm-gpu.json", "train_log.jsonl",
            "results.json", "samples.png", "run.log"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    res = json.loads((out / "results.json").read_text())
    assert "errors" not in res and "error" not in res
    assert res["data"]["open_slices"] == 6 and res["data"]["clinical_slices"] == 3
    assert res["data"]["sigma_data"] > 0
    assert res["training"]["steps"] == 3 and res["training"]["images"] == 6
    # every case ran: 2 test slices + the real slice (1D R 5 needs more than 64 lines; its
    # cases differ only in the mask), both priors, all methods
    assert len(res["cases"]) == 3 and res["skipped_cases"] == 0
    methods = set(res["cases"][0]["methods"])
    assert {"zero-filled", "L1-wavelet", "gpu-edm PICS", "gpu-edm fast MMSE",
            "gpu-edm fast MMSE, noise model", "cpu (bundled) PICS",
            "cpu (bundled) fast MMSE", "cpu (bundled) fast MMSE, noise model"} == methods
    assert set(res["summary"]) == {"poisson", "real"}
    assert set(res["heldout_dsm"]) == {"gpu-edm", "cpu (bundled)"}
    assert set(res["tuning"]["poisson"]) >= {"l1", "gpu-edm", "cpu (bundled)"}
    assert len(res["gpu_timings"]) == 3
    # the exported prior is a usable EDM prior through the common interface
    prior = load_image_prior(out / "prior-edm-gpu")
    assert prior.meta["parametrisation"] == "edm" and prior.meta["weights_dtype"] == "float16"
    assert prior.meta["training"]["steps"] == 3
    # the settings tuned on the validation slices travel in the sidecar
    tuned = res["tuning"]["poisson"]["gpu-edm"]
    assert prior.recon_defaults["fast"]["sigma_start"] == tuned["sigma_start"]
    assert prior.recon_defaults["pics"]["lam"] == tuned["pics_lambda"]
    assert prior.recon_defaults["l1"]["lam"] == res["tuning"]["poisson"]["l1"]  # the baseline's
    x = torch.randn(1, N, N, dtype=torch.complex64)
    assert torch.isfinite(prior.score(x, 0.1)).all()
    from safetensors.torch import load_file
    state = load_file(str(out / "prior-edm-gpu.safetensors"))
    assert state["fourier.freqs"].dtype == torch.float32  # buffers keep full precision
    assert state["conv_in.weight"].dtype == torch.float16
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log and log[-1]["step"] == 3
    # a second, evaluation-only call on the exported prior gives the same held-out numbers
    out2 = tmp_path / "eval"
    status = run.main(["--pack", str(tmp_path / "p"), "--out", str(out2), "--dry-run",
                       "--budget", "100000", "--patterns", "poisson",
                       "--prior", str(out / "prior-edm-gpu")])
    assert status == 0
    res2 = json.loads((out2 / "results.json").read_text())
    assert res2["heldout_dsm"] == res["heldout_dsm"]
    assert res2["summary"] == res["summary"] and "training" not in res2
    # --compare evaluates further priors side by side: the same prior twice gives equal rows
    out3 = tmp_path / "compare"
    status = run.main(["--pack", str(tmp_path / "p"), "--out", str(out3), "--dry-run",
                       "--budget", "100000", "--patterns", "poisson", "--prior",
                       str(out / "prior-edm-gpu"), "--compare", f"twin={out / 'prior-edm-gpu'}",
                       "--wavelet-grid", "0.001"])
    assert status == 0
    full3 = json.loads((out3 / "results.json").read_text())
    res3 = full3["summary"]["poisson"]
    # prior PICS with an l1-wavelet term beside the prior, its weight tuned with lambda
    assert full3["tuning"]["poisson"]["twin"]["pics_wavelet"] == 0.001
    assert full3["cases"][0]["methods"]["twin PICS"]["wavelet"] == 0.001
    assert "wavelet" not in res["cases"][0]["methods"]["gpu-edm PICS"]  # grid 0: the prior alone
    assert res3["twin PICS"] == res3["gpu-edm PICS"]
    assert res3["twin fast MMSE"] == res3["gpu-edm fast MMSE"]
    # --defaults-from: an earlier run's tuning for one of its priors into another sidecar
    import shutil
    for ext in (".safetensors", ".json"):
        shutil.copy(out / f"prior-edm-gpu{ext}", tmp_path / f"copy{ext}")
    set_recon_defaults(tmp_path / "copy", {})
    assert run.main(["--defaults-from", str(out3 / "results.json"), "--name", "twin",
                     "--prior", str(tmp_path / "copy")]) == 0
    copied = load_image_prior(tmp_path / "copy").recon_defaults
    assert copied["pics"]["lam"] == res["tuning"]["poisson"]["gpu-edm"]["pics_lambda"]
    assert copied["pics"]["wavelet"] == 0.001
    assert "1 validation slice(s) of p," in copied["tuned_on"]
    with pytest.raises(SystemExit, match="no Poisson-disc tuning for 'nobody'"):
        run.main(["--defaults-from", str(out3 / "results.json"), "--name", "nobody",
                  "--prior", str(tmp_path / "copy")])
    # the docs writer merges the two calls' records
    report = _load("report")
    text = report.section(report.merge([out / "results.json", out2 / "results.json"]), "`cmd`")
    assert "images/s" in text and "| simulated, Poisson-disc R 8 (n=2) | L1-wavelet |" in text
    assert "Command: `cmd`" in text


def test_augment_is_a_dihedral_map_with_a_global_phase():
    run = _load("run")
    x = torch.randn(6, 2, 8, 8)
    y = run.augment(x, torch.Generator().manual_seed(0))
    mag_x = torch.hypot(x[:, 0], x[:, 1])
    mag_y = torch.hypot(y[:, 0], y[:, 1])
    for i in range(6):  # magnitude: one of the 8 dihedral images; |x| values preserved
        cands = [mag_x[i], mag_x[i].flip(-1), mag_x[i].flip(-2), mag_x[i].flip(-1).flip(-2)]
        cands += [c.transpose(-1, -2) for c in cands]
        assert any(torch.allclose(mag_y[i], c, atol=1e-5) for c in cands)


def test_write_defaults_stores_the_1d_settings_and_flips(tmp_path):
    """The settings tuned on the 1D validation slices go under each method's "1d"; a run that
    flip-averaged prior PICS records it; `mriprior recon` then picks them by the pattern."""
    import shutil

    from mriprior.recon.calibration import calibration_for
    from mriprior.recon.posterior import tuned_options

    run = _load("run")
    for ext in (".safetensors", ".json"):
        shutil.copy(run.BUNDLED.with_suffix(ext), tmp_path / f"p{ext}")
    one = {"sigma_start": 0.03, "pics_lambda": 0.03, "pics_wavelet": 0.0003}
    tuning = {"poisson": {"l1": 0.001, "me": one},
              "1d": {"l1": 0.002, "me": {**one, "sigma_start": 0.1, "pics_lambda": 0.1}}}
    cfg = {"nfe": 20, "pics_iters": 50, "pack": "/x/pack", "flips": "pics"}
    run.write_defaults(tmp_path / "p", tuning, "me", 2, cfg)
    prior = load_image_prior(tmp_path / "p")
    rd = prior.recon_defaults
    assert rd["pics"] == {"lam": 0.03, "iters": 50, "wavelet": 0.0003, "flips": True,
                          "1d": {"lam": 0.1, "iters": 50, "wavelet": 0.0003, "flips": True}}
    assert rd["l1"]["1d"]["lam"] == 0.002 and "flips" not in rd["fast"]
    assert tuned_options("fast", prior)["sigma_start"] == 0.03
    assert tuned_options("fast", prior, "1d")["sigma_start"] == 0.1
    assert tuned_options("pics", prior, "1d")["lam"] == 0.1
    assert calibration_for(prior, "fast", tuned_options("fast", prior)) is None  # none written
    run.write_defaults(tmp_path / "p", tuning, "me", 2, {**cfg, "pics_anneal": [0.1, 25]})
    prior = load_image_prior(tmp_path / "p")
    assert prior.recon_defaults["pics"]["1d"]["anneal_sigma"] == 0.1
    assert tuned_options("pics", prior, "1d")["anneal_iters"] == 25
    assert run.parse(["--pics-anneal", "0.1:25"]).pics_anneal == [0.1, 25]
    with pytest.raises(SystemExit):
        run.parse(["--pics-anneal", "0.1"])


def test_dry_run_init_continues_a_prior(sources, tmp_path):
    """``--init``: a second call starts from the first call's exported weights (with lr 0 they
    come back unchanged, where a fresh start exports other weights); a different network is
    refused before any data are built."""
    from safetensors.torch import load_file
    pack, run = _load("pack"), _load("run")
    pack.pack(sources / "open", sources / "complex", tmp_path / "p", real=sources / "real",
              n_val=1, n_test=1, log=lambda m: None)
    common = ["--pack", str(tmp_path / "p"), "--dry-run", "--budget", "100000", "--workers", "1",
              "--patterns", "poisson", "--samples", "0"]
    first = tmp_path / "first"
    assert run.main(common + ["--out", str(first), "--steps", "2"]) == 0
    start = first / "prior-edm-gpu"
    cont, fresh = tmp_path / "cont", tmp_path / "fresh"
    assert run.main(common + ["--out", str(cont), "--init", str(start), "--lr", "0"]) == 0
    assert run.main(common + ["--out", str(fresh), "--lr", "0"]) == 0
    w0, w1, w2 = (load_file(str(d / "prior-edm-gpu.safetensors")) for d in (first, cont, fresh))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not all(torch.equal(w0[k], w2[k]) for k in w0)
    meta = json.loads((cont / "prior-edm-gpu.json").read_text())
    first_meta = json.loads((first / "prior-edm-gpu.json").read_text())
    assert meta["training"]["init_from"]["steps"] == 2
    assert meta["training"]["init_from"]["path"] == "prior-edm-gpu"
    assert len(meta["training"]["init_from"]["weights_sha256"]) == 64
    assert meta["diffusion"]["sigma_data"] == first_meta["diffusion"]["sigma_data"]
    other = json.dumps({"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                        "attention_levels": [1]})
    with pytest.raises(InputError, match="--init .*network differs"):
        run.main(common + ["--out", str(tmp_path / "bad"), "--init", str(start), "--net", other])
    assert not (tmp_path / "bad" / "prior-edm-gpu.safetensors").exists()
    with pytest.raises(SystemExit):
        run.main(common + ["--out", str(tmp_path / "x"), "--init", str(start), "--prior",
                           str(start)])
