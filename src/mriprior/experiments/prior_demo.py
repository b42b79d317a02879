"""The built-in demo: an undersampled 8-coil case reconstructed with the bundled diffusion prior.

Embedded default (``mriprior/assets``, no download):

* ``demo_case.npz``: one held-out slice of the open corpus (``mriprior data open``: dipy's
  256 x 256 T1 coronal slice, BSD-3 licence, test split, never seen in training) with a
  physics-simulated phase (``mriprior data simulate --seed 0``), 8 birdcage coils, complex
  Gaussian noise at SNR 40 and a variable-density Poisson-disc mask (R ~ 8, 20 x 20
  calibration). Arrays: ``ksp`` (coil, y, x) complex64 (zero where not sampled),
  ``reference`` (y, x) complex64 (the noiseless truth), ``info`` (a JSON string: source,
  licence, simulation settings). Rebuilt by :func:`build_case`:
  ``build_case("data/open256-complex", "src/mriprior/assets/demo_case.npz")``.
* ``prior-edm-cpu.safetensors`` + ``.json``: the EDM patch prior trained by
  ``mriprior train configs/edm-patch-cpu-150.yaml`` (the 150-minute CPU recipe; its sidecar's
  ``recon_defaults`` tuned on held-out clinical validation slices, see ``docs/priors.md``);
  ``prior-ve-cpu`` (the first default, ``configs/ve-cpu.yaml``) stays bundled for the
  documented experiments.

The demo estimates ESPIRiT maps from the undersampled data, reconstructs zero-filled, L1-wavelet
(BART ``pics`` semantics, lambda tuned on the prior's validation slices) and with the prior
(fast posterior sampler: MMSE and standard deviation over chains, calibrated where the prior's
sidecar has a calibration for the settings; prior PICS with the prior's tuned lambda and
l1-wavelet term), prints PSNR / SSIM against
the reference and writes a figure, ``results.json`` and BART cfl files.
"""

from __future__ import annotations

import json
import os
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.io.files import atomic_write, atomic_write_json
from mriprior.experiments.report import display_magnitude, save_figure
from mriprior.data.dataset import open_dataset
from mriprior.io.cfl import write_cfl
from mriprior.metrics import evaluate
from mriprior.physics.espirit import espirit
from mriprior.physics.fft import fft2c
from mriprior.physics.masks import poisson_disc
from mriprior.physics.phantom import birdcage_maps
from mriprior.physics.simulate import simulate_multicoil, snr_to_sigma
from mriprior.recon.classical import pics, sense_combine
from mriprior.recon.calibration import calibrated_std, calibration_for
from mriprior.recon.posterior import (credibility_map, fast_posterior, method_defaults,
                                      prior_pics, tuned_options)
from mriprior.recon.priors import load_image_prior

__all__ = ["build_case", "load_case", "run_prior_demo", "ASSETS"]

ASSETS = Path(str(resources.files("mriprior"))) / "assets"
DEFAULT_CASE = ASSETS / "demo_case.npz"
DEFAULT_PRIOR = ASSETS / "prior-edm-cpu"


def build_case(dataset, out, index: int | None = None, accel: float = 8.0, calib: int = 20,
               snr: float = 40.0, coils: int = 8, seed: int = 0) -> dict:
    """Make the demo case from a complex dataset's test slice and write it atomically to ``out``
    (.npz). ``index`` defaults to the open corpus's dipy T1 coronal slice (256 x 256, test split),
    else the middle slice of the largest test source."""

    ds = open_dataset(dataset)
    if ds.kind != "complex":
        raise InputError(f"{dataset}: the demo case needs a complex dataset (mriprior data "
                         "simulate), not {ds.kind!r}")
    if index is None:
        test = ds.indices("test")
        if len(test) == 0:
            raise InputError(f"{dataset}: no test split")
        sources = [ds.records[i]["source"] for i in test]
        main = ("dipy-t1-coronal-slice.png" if "dipy-t1-coronal-slice.png" in sources
                else max(set(sources), key=sources.count))
        cand = [i for i in test if ds.records[i]["source"] == main]
        index = int(cand[len(cand) // 2])
    rec = ds.records[index]
    ref = torch.from_numpy(np.array(ds[index])).to(torch.complex64)[None]
    n = tuple(ref.shape[-2:])
    maps = birdcage_maps(coils, n, normalize="rss")[None]
    g = torch.Generator().manual_seed(seed)
    sigma = float(snr_to_sigma(fft2c(maps * ref[:, None]), snr)[0])
    mask = poisson_disc(n, accel, calib=(calib, calib), seed=seed)
    ksp = simulate_multicoil(ref, maps, noise_cov=sigma, mask=mask.tensor(), generator=g)[0]
    info = {"source": rec["source"], "split": rec["split"], "index": index,
            "subject": rec.get("subject"),
            "licence": "dipy data (BSD-3-Clause)" if "dipy" in rec["source"] else
                       "see the dataset manifest",
            "coils": coils, "maps": "birdcage (rss-normalised)", "noise_sigma": sigma,
            "snr": snr, "mask": f"Poisson-disc R={mask.accel:.2f}, calib {calib}x{calib}",
            "seed": seed}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda t: np.savez_compressed(
        t, ksp=ksp.numpy().astype(np.complex64), reference=ref[0].numpy().astype(np.complex64),
        info=np.array(json.dumps(info))))
    return info


def load_case(path=DEFAULT_CASE):
    """-> (ksp (1, coil, y, x), reference (1, y, x), info dict)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            ksp, ref, info = z["ksp"], z["reference"], json.loads(str(z["info"]))
    except FileNotFoundError:
        raise InputError(f"{path}: demo case not found") from None
    except (KeyError, ValueError, OSError) as e:
        raise InputError(f"{path}: not a demo case ({e})") from None
    if ksp.ndim != 3 or ref.shape != ksp.shape[1:]:
        raise InputError(f"{path}: ksp {ksp.shape} and reference {ref.shape} do not match")
    return torch.from_numpy(ksp)[None], torch.from_numpy(ref)[None], info


def run_prior_demo(out_dir, case=DEFAULT_CASE, prior=DEFAULT_PRIOR, chains: int = 4,
                   nfe: int | None = None, lambda_l1: float | None = None, seed: int = 0,
                   device="cpu", noise_var="auto", log=print) -> dict:
    """Reconstruct the demo case. The fast sampler's ``nfe`` and starting level are the prior's
    tuned ``recon_defaults`` (as ``mriprior recon --prior P`` uses them), else the library's;
    L1-wavelet's lambda (``lambda_l1``) is the one tuned on the same validation slices
    (``recon_defaults["l1"]``), else 0.005."""

    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    ksp, ref, info = load_case(case)
    ksp, ref = ksp.to(device), ref.to(device)
    log(f"case: {info['source']} ({info['split']} split), {ref.shape[-2]}x{ref.shape[-1]}, "
        f"{ksp.shape[1]} coils, {info['mask']}, SNR {info['snr']}")
    pr = load_image_prior(prior, device=device)
    log(f"prior: {Path(prior).name} ({sum(p.numel() for p in pr.model.parameters()) / 1e6:.2f} M"
        f" parameters, trained {pr.meta.get('step', '?')} steps)")
    fast = {**method_defaults("fast"), **pr.recon_defaults.get("fast", {})}
    nfe = fast["nfe"] if nfe is None else nfe
    if lambda_l1 is None:
        lambda_l1 = pr.recon_defaults.get("l1", {}).get("lam", 0.005)
    recons, times = {}, {}
    t = time.perf_counter()
    maps = espirit(ksp, calib=20, maps=1)[:, 0]
    times["ESPIRiT"] = time.perf_counter() - t
    t = time.perf_counter()
    recons["zero-filled"] = sense_combine(ksp, maps)
    times["zero-filled"] = time.perf_counter() - t
    t = time.perf_counter()
    recons["L1-wavelet"] = pics(ksp, maps, "l1", lambda_l1, 100, rescale=True)[0]
    times["L1-wavelet"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        r = fast_posterior(ksp, maps, pr, chains=chains, nfe=nfe, seed=seed,
                           sigma_start=fast["sigma_start"],
                           noise_var=noise_var)  # as `mriprior recon` (bench/noise_dc.py)
    recons["prior MMSE"] = r.mmse
    times["prior MMSE"] = time.perf_counter() - t
    t = time.perf_counter()
    pics_opts = tuned_options("pics", pr)  # the prior's tuned lambda / wavelet term
    with torch.no_grad():
        recons["prior PICS"] = prior_pics(ksp, maps, pr, **pics_opts)[0]
    times["prior PICS"] = time.perf_counter() - t
    results = {}
    for name, img in recons.items():
        m = evaluate(ref, img)
        results[name] = {**{k: float(v) for k, v in m.items()}, "seconds": times[name]}
        if name == "L1-wavelet":
            results[name]["lambda"] = lambda_l1
        if name == "prior PICS":
            results[name].update({"lambda": pics_opts["lam"], "wavelet": pics_opts["wavelet"],
                                  "iterations": pics_opts["max_iter"]})
        log(f"{_label(name, results[name]):>26}: PSNR {m['psnr']:6.2f} dB  "
            f"SSIM {m['ssim']:.4f}  ({times[name]:.1f} s)")
    results["prior MMSE"].update({"chains": chains, "nfe_per_chain": r.nfe,
                                  "sigma_start": fast["sigma_start"], "noise_var": noise_var})
    # the calibrated error std where the prior has a calibration for these settings
    cal = calibration_for(pr, "fast", {**tuned_options("fast", pr), "chains": chains,
                                       "nfe": nfe, "noise_var": noise_var})
    std = r.std if cal is None else calibrated_std(r.std, cal)
    results["prior MMSE"]["std"] = "calibrated" if cal else "chains"
    _, flagged = credibility_map(r.mmse, std, chains=None if cal else chains)
    write_cfl(os.path.join(out_dir, "ksp"), ksp[0].cpu().numpy().T[:, :, None, :])
    write_cfl(os.path.join(out_dir, "sens"), maps[0].cpu().numpy().T[:, :, None, :])
    for name, img in [("reference", ref), ("zero_filled", recons["zero-filled"]),
                      ("l1_wavelet", recons["L1-wavelet"]), ("mmse", r.mmse),
                      ("prior_pics", recons["prior PICS"]),
                      ("std", std.to(r.mmse.dtype)), ("flag", flagged.to(r.mmse.dtype))]:
        write_cfl(os.path.join(out_dir, name), img[0].cpu().numpy().T)
    fig = os.path.join(out_dir, "demo.png")
    _figure(fig, ref, recons, std, results)
    summary = {"case": info, "prior": str(prior), "results": results,
               "espirit_seconds": times["ESPIRiT"],
               "total_seconds": time.perf_counter() - t0, "figure": fig}
    atomic_write_json(os.path.join(out_dir, "results.json"), summary, indent=2, allow_nan=True)
    log(f"wrote {fig}, results.json and cfl files to {out_dir} "
        f"({summary['total_seconds']:.1f} s)")
    return summary


def _figure(path, ref, recons, std, results):
    import matplotlib.pyplot as plt

    r, vmax = display_magnitude(ref)
    n = len(recons) + 2
    fig, ax = plt.subplots(1, n, figsize=(2.9 * n, 3.4))
    ax[0].imshow(r, cmap="gray", vmin=0, vmax=vmax)
    ax[0].set_title("reference", fontsize=9)
    for i, (name, img) in enumerate(recons.items(), start=1):
        ax[i].imshow(img[0].abs().cpu().numpy(), cmap="gray", vmin=0, vmax=vmax)
        res = results[name]
        ax[i].set_title(f"{_label(name, res)}\nPSNR {res['psnr']:.2f} dB  "
                        f"SSIM {res['ssim']:.3f}", fontsize=9)
    s = std[0].cpu().numpy()
    im = ax[-1].imshow(s, cmap="magma", vmin=0, vmax=float(np.percentile(s, 99.5)) or 1.0)
    ax[-1].set_title("error std, calibrated (prior)" if results["prior MMSE"]["std"] ==
                     "calibrated" else "posterior std (prior)", fontsize=9)
    fig.colorbar(im, ax=ax[-1], fraction=0.046)
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def _label(name: str, result: dict) -> str:
    """A method's name with its lambda, where it has one."""
    return f"{name} (lambda {result['lambda']:g})" if "lambda" in result else name
