"""Prior-based reconstruction benchmark (not a test): quality, network evaluations, time, and
calibration of the uncertainty, against zero-filling and tuned L1-wavelet, in one run.

Cases
  simulated: held-out anatomy (test split of the open corpus with simulated phase, made by
      `mriprior data open` + `mriprior data simulate`), 8 birdcage coils, complex Gaussian
      noise (SNR 40), ESPIRiT maps estimated from the undersampled data; reference = the
      complex image itself (metrics without rescaling).
  real: ../shared/data/brain-8coil-slice (real 8-coil k-space, real phase, acquired with a
      Poisson-disc pattern, R = 7.9); reference = `img` map 0, a full-data reconstruction
      whose global scale is unknown -> metrics with least-squares magnitude scaling, and the
      same complex least-squares factor for the uncertainty checks.
Patterns (simulated): Poisson-disc R ~ 8 with a 20 x 20 calibration region, and 1D variable
  density R = 5 with 30 ACS lines. The real slice keeps its acquired pattern.
Tuning: the L1-wavelet lambda and the prior-PICS lambda are chosen on a validation slice (val
  split, same simulation) per pattern, never on the test slices.
Methods: zero-filled SENSE combination, L1-wavelet (pics, 100 iterations), prior PICS, annealed
  Langevin MMSE (Algorithm 1), fast-sampler MMSE. For each: PSNR / SSIM (magnitudes, fastMRI
  convention, `mriprior.metrics`), network evaluations per chain, wall time (same run).
Uncertainty (samplers): Spearman correlation between the std map and the |error| inside the
  object (|ref| > 10 % of max), and the empirical coverage of the 90 % region of the mean of the
  n chains (variance estimated from them, so a perfect sampler covers 90 % at any n).
  Simulated cases: complex error against the reference projected into the estimated maps' phase
  gauge. Real slice: its reference comes from BART's ESPIRiT maps (another phase gauge), so
  magnitudes (see `mriprior.experiments.recon_cases.uncertainty`).
Sweep: PSNR vs network evaluations for both samplers on the first simulated case.

Usage:
  python bench/recon.py --prior PRIOR --data data/open256-complex \
      [--real ../shared/data/brain-8coil-slice] [--slices 2] [--chains 4]
Writes bench/results/recon.json and a section of docs/benchmarks.md (with this command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch

from mriprior.data.dataset import open_dataset
from mriprior.experiments.recon_cases import (PATTERNS, pick_slices, real_case, score,
                                              simulated_case, uncertainty)
from mriprior.experiments.report import save_figure
from mriprior.recon.classical import pics, sense_combine
from mriprior.recon.posterior import fast_posterior, langevin_posterior, prior_pics
from mriprior.recon.priors import load_image_prior

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def tune(val, prior, l1_grid, pics_grid, pics_iters, log):
    best_l1 = max(l1_grid, key=lambda lam: score(val, pics(val["ksp"], val["maps"], "l1", lam,
                                                           100, rescale=True)[0])["psnr"])
    res = {}
    for lam in pics_grid:
        x, _ = prior_pics(val["ksp"], val["maps"], prior, lam=lam, max_iter=pics_iters)
        res[lam] = score(val, x)["psnr"]
    best_pics = max(res, key=res.get)
    log(f"  tuned on validation: L1 lambda {best_l1}, prior-PICS lambda {best_pics} "
        f"(PSNR {res})")
    return best_l1, best_pics


def tune_fast(val, prior, cfg, grid, log):
    res = {}
    for s in grid:
        r = fast_posterior(val["ksp"], val["maps"], prior, chains=2, nfe=cfg.nfe, sigma_start=s,
                           seed=0)
        res[s] = score(val, r.mmse)["psnr"]
    best = max(res, key=res.get)
    log(f"  tuned on validation: fast-sampler sigma_start {best} (PSNR {res})")
    return best


def run_case(name, case, prior, cfg, lam_l1, lam_pics, sigma_start, log):
    ksp, maps = case["ksp"], case["maps"]
    out = {"case": name, "accel": case["accel"], "shape": list(ksp.shape[-2:]), "methods": {}}
    m = out["methods"]
    x, t = timed(lambda: sense_combine(ksp, maps))
    m["zero-filled"] = {**score(case, x), "nfe": 0, "seconds": t}
    x, t = timed(lambda: pics(ksp, maps, "l1", lam_l1, 100, rescale=True)[0])
    m["L1-wavelet"] = {**score(case, x), "nfe": 0, "seconds": t, "lambda": lam_l1}
    n0 = prior.nfe
    x, t = timed(lambda: prior_pics(ksp, maps, prior, lam=lam_pics,
                                    max_iter=cfg.pics_iters)[0])
    m["prior PICS"] = {**score(case, x), "nfe": prior.nfe - n0, "seconds": t,
                       "lambda": lam_pics}
    r, t = timed(lambda: langevin_posterior(ksp, maps, prior, chains=cfg.chains,
                                            n_levels=cfg.levels, skip=cfg.skip,
                                            steps=cfg.steps, lam=cfg.lam, seed=0,
                                            keep_samples=True))
    m["Langevin MMSE"] = {**score(case, r.mmse), "nfe": r.nfe, "seconds": t,
                          "chains": cfg.chains, **uncertainty(case, r)}
    r, t = timed(lambda: fast_posterior(ksp, maps, prior, chains=cfg.chains, nfe=cfg.nfe,
                                        sigma_start=sigma_start, seed=0,
                                        keep_samples=True))
    m["fast MMSE"] = {**score(case, r.mmse), "nfe": r.nfe, "seconds": t, "chains": cfg.chains,
                      "sigma_start": sigma_start, **uncertainty(case, r)}
    for k, v in m.items():
        extra = (f"  spearman {v['spearman_std_err']:.2f} cover90 {v['coverage90']:.2f}"
                 if "coverage90" in v else "")
        log(f"  {k:>14}: PSNR {v['psnr']:6.2f} dB  SSIM {v['ssim']:.4f}  NFE {v['nfe']:4d}  "
            f"{v['seconds']:7.1f} s{extra}")
    return out


def sweep(case, prior, cfg, sigma_start, log):
    rows = []
    for nfe in cfg.sweep_fast:
        r, t = timed(lambda: fast_posterior(case["ksp"], case["maps"], prior, chains=cfg.chains,
                                            nfe=nfe, sigma_start=sigma_start, seed=0))
        rows.append({"sampler": "fast", "nfe": r.nfe, **score(case, r.mmse), "seconds": t})
        log(f"  sweep fast     NFE {r.nfe:4d}: PSNR {rows[-1]['psnr']:.2f} dB ({t:.0f} s)")
    for steps in cfg.sweep_langevin:
        r, t = timed(lambda: langevin_posterior(case["ksp"], case["maps"], prior,
                                                chains=cfg.chains, n_levels=cfg.levels,
                                                skip=cfg.skip, steps=steps, lam=cfg.lam, seed=0))
        rows.append({"sampler": "langevin", "nfe": r.nfe, **score(case, r.mmse), "seconds": t})
        log(f"  sweep langevin NFE {r.nfe:4d}: PSNR {rows[-1]['psnr']:.2f} dB ({t:.0f} s)")
    return rows


def figure(path, sweep_rows, first_case=None):
    """PSNR vs NFE of both samplers on the first simulated case: the sweep plus the main run's
    samplers; L1-wavelet and zero-filled as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sweep_rows = list(sweep_rows)
    methods = (first_case or {}).get("methods", {})
    for name, key in (("fast", "fast MMSE"), ("langevin", "Langevin MMSE")):
        if key in methods:
            sweep_rows.append({"sampler": name, **methods[key]})
    for key, style in (("L1-wavelet", "k--"), ("zero-filled", "k:")):
        if key in methods:
            ax.axhline(methods[key]["psnr"], color=style[0], ls=style[1:], lw=1, label=key)
    for name in ("fast", "langevin"):
        rows = sorted((r for r in sweep_rows if r["sampler"] == name), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rows], [r["psnr"] for r in rows], "o-", label=name)
    ax.set_xscale("log")
    nfes = sorted({r["nfe"] for r in sweep_rows})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    ax.set_xlabel("network evaluations per chain")
    ax.set_ylabel("MMSE PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def docs_section(results, command):
    lines = ["## Reconstruction with a generative prior (`bench/recon.py`)", "",
             f"Prior: `{results['prior']}`. Chains {results['config']['chains']}; Langevin "
             f"{results['config']['levels']} levels, skip {results['config']['skip']}, "
             f"{results['config']['steps']} steps/level, lambda {results['config']['lam']}; fast "
             f"sampler {results['config']['nfe']} NFE. Measured {results['date']} on "
             f"{results['machine']}. Uncertainty columns: complex error on simulated cases, "
             "magnitude error on the real slice (its reference is in another ESPIRiT phase "
             "gauge).", "",
             "| case | R | method | PSNR dB | SSIM | NFE/chain | time s | Spearman(std, err) | "
             "coverage 90 % |", "|---|---|---|---|---|---|---|---|---|"]
    for c in results["cases"]:
        for k, v in c["methods"].items():
            unc = (f"{v['spearman_std_err']:.2f} | {v['coverage90']:.2f}"
                   if "coverage90" in v else " | ")
            lines.append(f"| {c['case']} | {c['accel']:.1f} | {k} | {v['psnr']:.2f} | "
                         f"{v['ssim']:.4f} | {v['nfe']} | {v['seconds']:.1f} | {unc} |")
    if results.get("sweep"):
        lines += ["", "PSNR vs network evaluations (first simulated case): " + "; ".join(
            f"{r['sampler']} {r['nfe']}: {r['psnr']:.2f} dB" for r in results["sweep"]),
            "", "![PSNR vs NFE](figures/recon_nfe.png)"]
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def write_docs(section):
    from mriprior.experiments.report import replace_section
    replace_section(os.path.join(ROOT, "docs", "benchmarks.md"),
                    "## Reconstruction with a generative prior (`bench/recon.py`)", section)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prior", required=True)
    p.add_argument("--data", required=True, help="complex dataset with train/val/test splits")
    p.add_argument("--real", default=None, help="folder with the real slice's ksp and img")
    p.add_argument("--slices", type=int, default=1, help="test slices per pattern")
    p.add_argument("--patterns", default="poisson,1d")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--levels", type=int, default=100)
    p.add_argument("--skip", type=int, default=31)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lam", type=float, default=20.0)
    p.add_argument("--nfe", type=int, default=30)
    p.add_argument("--sigma-start", type=float, default=None)
    p.add_argument("--pics-iters", type=int, default=50)
    p.add_argument("--sweep-fast", default="5,10,20,50")
    p.add_argument("--sweep-langevin", default="1,2", help="steps per level")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results", "recon.json"))
    cfg = p.parse_args()
    cfg.sweep_fast = [int(v) for v in cfg.sweep_fast.split(",") if v]
    cfg.sweep_langevin = [int(v) for v in cfg.sweep_langevin.split(",") if v]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    torch.set_grad_enabled(False)
    prior = load_image_prior(cfg.prior)
    ds = open_dataset(cfg.data)
    results = {"date": datetime.date.today().isoformat(), "prior": cfg.prior,
               "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
                          f"{torch.get_num_threads()} threads",
               "config": {k: v for k, v in vars(cfg).items()}, "cases": [], "tuning": {}}
    os.makedirs(os.path.dirname(cfg.out), exist_ok=True)

    def checkpoint():  # partial results survive an interrupted run
        with open(cfg.out + ".tmp", "w") as f:
            json.dump(results, f, indent=1, default=str)
        os.replace(cfg.out + ".tmp", cfg.out)

    val_idx = pick_slices(ds, "val", 1)[0]
    test_idx = pick_slices(ds, "test", cfg.slices)
    first = None
    for kind in [k for k in cfg.patterns.split(",") if k]:
        log(f"pattern {kind}: {PATTERNS[kind]}")
        val = simulated_case(torch.from_numpy(np.array(ds[val_idx])), kind, seed=100)
        lam_l1, lam_pics = tune(val, prior, [0.001, 0.002, 0.005, 0.01, 0.02],
                                [0.05, 0.2, 0.5], cfg.pics_iters, log)
        s0 = cfg.sigma_start or tune_fast(val, prior, cfg, [0.1, 0.3, 1.0], log)
        results["tuning"][kind] = {"val_slice": val_idx, "l1": lam_l1, "prior_pics": lam_pics,
                                   "sigma_start": s0}
        for j, i in enumerate(test_idx):
            case = simulated_case(torch.from_numpy(np.array(ds[i])), kind, seed=j)
            name = f"simulated test slice {i}, {kind}"
            log(name)
            results["cases"].append(run_case(name, case, prior, cfg, lam_l1, lam_pics, s0, log))
            checkpoint()
            if first is None:
                first = (case, s0)
        if cfg.real and kind == "poisson":
            log("real slice (acquired Poisson-disc pattern)")
            real = real_case(cfg.real)
            name = "real brain slice {}x{}".format(*real["ksp"].shape[-2:])
            results["cases"].append(run_case(name, real, prior, cfg, lam_l1, lam_pics, s0, log))
            checkpoint()
    if first is not None and (cfg.sweep_fast or cfg.sweep_langevin):
        results["sweep"] = sweep(first[0], prior, cfg, first[1], log)
        figure(os.path.join(ROOT, "docs", "figures", "recon_nfe.png"), results["sweep"],
               results["cases"][0])
    checkpoint()
    command = "python bench/recon.py " + " ".join(sys.argv[1:])
    if not cfg.no_docs:
        write_docs(docs_section(results, command))
    log(f"wrote {cfg.out}")


if __name__ == "__main__":
    main()
