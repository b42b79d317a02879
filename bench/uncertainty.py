"""Calibration of the fast sampler's uncertainty: the data steps' means (the default chains) vs
posterior draws at every step (`fast_posterior(draws=True)`), same prior, same settings, same
seeds, on the held-out cases of the GPU-evaluation pack.

    python bench/uncertainty.py --pack .gpu-eval --real ../shared/data/brain-8coil-slice
    python bench/uncertainty.py --report-only        # the docs section from the JSON
    python bench/uncertainty.py --measure --pack .gpu-eval --prior bundled   # see below
    python bench/uncertainty.py --calibrate --pack .gpu-eval --prior bundled # see below

Protocol: the bundled prior with the settings its sidecar records (`recon_defaults`, tuned on
the validation slices: sigma_start, NFE), the noise-model data step (`noise_var="auto"`),
4 chains, seed 0; the pack's 2 validation and 8 test slices, each as a Poisson-disc R 8 and a
1D R 5 case (`experiments.recon_cases.simulated_case`, validation seeds 100 + j, test seeds j),
and the real 8-coil slice. Per case: PSNR / SSIM of the MMSE, Spearman(std, |error|) and the
90 % interval coverage inside the object (`experiments.recon_cases.uncertainty`). Nothing is
tuned here: the choice between the two is read off the validation rows. The draws' local
variance is the prior's measured denoising error: ``--measure`` computes the held-out denoising
loss at 12 levels on the pack's validation slices and writes it into the prior's sidecar
(``denoising_error``, :func:`mriprior.priors.export.set_denoising_error`). ``--calibrate``
runs the default chains (the means variant) on the validation slices of both patterns and
writes the uncertainty calibration they give (:mod:`mriprior.recon.calibration`: std pooled
over ``--pool`` pixels, scaled to cover 90 % there), one per pattern with that pattern's tuned
settings, into the prior's sidecar (``recon_defaults.fast.calibration`` and
``recon_defaults.fast["1d"].calibration``; ``recon_defaults.fast.chains`` becomes ``--chains``, so
that `mriprior recon --prior P --std` runs the calibrated settings by default); the test rows
then also report the calibrated map's Spearman and coverage. Writes
bench/results/uncertainty.json (per case, resumable) and the section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

from mriprior.diffusion.losses import heldout_dsm_loss
from mriprior.experiments.recon_cases import (complex_error, real_case, score, simulated_case,
                                              uncertainty)
from mriprior.experiments.report import replace_section
from mriprior.io.files import atomic_write_json
from mriprior.priors.export import read_sidecar, set_denoising_error, set_recon_defaults
from mriprior.recon.calibration import SETTINGS, calibration_for, fit_scale
from mriprior.recon.posterior import fast_posterior, tuned_options
from mriprior.recon.priors import load_image_prior

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "uncertainty.json")
TITLE = "## Calibrated uncertainty: posterior draws in the fast sampler (`bench/uncertainty.py`)"
VARIANTS = {"means": {}, "draws": {"draws": True}}
PATTERN_NAMES = {"poisson": "Poisson-disc R 8", "1d": "1D R 5"}


def denoising_loss(prior_path: str, val: torch.Tensor) -> tuple[list, list]:
    """``(sigmas, loss)``: the prior's held-out DSM loss on complex images ``val (n, y, x)`` at
    12 geometric levels from half its ``sigma_min`` to its ``sigma_max``, one fixed noise draw."""
    prior = load_image_prior(prior_path)
    x = torch.stack([val.real, val.imag], 1).float()
    sigmas = torch.exp(torch.linspace(math.log(prior.sigma_min / 2), math.log(prior.sigma_max),
                                      12, dtype=torch.float64)).tolist()
    with torch.no_grad():
        return sigmas, heldout_dsm_loss(prior.model.scaled_score, x, sigmas, seed=0).tolist()


def measure(a) -> None:
    """The prior's held-out denoising loss per level on the validation slices, into its
    sidecar."""
    z = np.load(os.path.join(a.pack, "pack.npz"), allow_pickle=False)
    val = torch.from_numpy(z["val"])
    sigmas, loss = denoising_loss(a.prior, val)
    path = set_denoising_error(a.prior, sigmas, loss,
                               f"{len(val)} validation slices of {a.pack} (bench/uncertainty.py "
                               "--measure)")
    print(f"wrote denoising_error to {path}: " + ", ".join(
        f"{s:.3g}: {v:.3f}" for s, v in zip(sigmas, loss)))


def calibrate(a) -> None:
    """Fit the means chains' uncertainty calibration on the validation slices, per pattern with
    that pattern's tuned settings (Poisson-disc: ``recon_defaults.fast``; 1D:
    ``recon_defaults.fast["1d"]``); into the sidecar."""
    z = np.load(os.path.join(a.pack, "pack.npz"), allow_pickle=False)
    prior = load_image_prior(a.prior)
    rd = dict(read_sidecar(a.prior).get("recon_defaults") or {})
    fast = {**rd.get("fast", {}), "chains": a.chains}
    for kind, pattern in (("poisson", "2d"), ("1d", "1d")):
        opts = {**tuned_options("fast", prior, pattern), "chains": a.chains, "noise_var": "auto"}
        one = ([], [], [])
        for j in range(len(z["val"])):
            case = simulated_case(torch.from_numpy(z["val"][j]), kind, seed=100 + j)
            with torch.no_grad():
                r = fast_posterior(case["ksp"], case["maps"], prior, mask=case["mask"], seed=0,
                                   **opts)
            err, inside = complex_error(case, r)
            for lst, v in zip(one, (err, r.std, inside)):
                lst.append(v)
        cal = {"scale": fit_scale(*one, pool=a.pool), "pool": a.pool, "level": 0.9,
               "settings": {k: opts[k] for k in SETTINGS["fast"]},
               "measured_on": f"{len(z['val'])} validation slices of "
                              f"{os.path.basename(a.pack)} x {PATTERN_NAMES[kind]} "
                              f"(bench/uncertainty.py --calibrate)"}
        if pattern == "1d":
            fast["1d"] = {**fast.get("1d", {}), "calibration": cal}
        else:
            fast["calibration"] = cal
        print(f"{kind}: scale {cal['scale']:.3f}, pool {a.pool}, settings {cal['settings']}")
    rd["fast"] = fast
    print(f"wrote the calibrations to {set_recon_defaults(a.prior, rd)}")


def run(a) -> dict:
    z = np.load(os.path.join(a.pack, "pack.npz"), allow_pickle=False)
    prior = load_image_prior(a.prior)
    res = json.load(open(a.out)) if os.path.exists(a.out) else {}
    res["settings"] = {"chains": a.chains, "prior": a.prior, **{
        f"sigma_start_{p}": tuned_options("fast", prior, p)["sigma_start"] for p in ("2d", "1d")},
        "nfe": tuned_options("fast", prior)["nfe"]}

    def one(key, case, pattern="2d"):
        # the pattern's tuned settings (recon_defaults.fast, or its "1d"), as `mriprior recon`
        opts = {**tuned_options("fast", prior, pattern), "chains": a.chains, "noise_var": "auto"}
        for variant, extra in VARIANTS.items():
            if f"{key}/{variant}" in res or variant not in a.variants:
                continue
            t = time.perf_counter()
            with torch.no_grad():
                r = fast_posterior(case["ksp"], case["maps"], prior, mask=case["mask"], seed=0,
                                   keep_samples=True, **{**opts, **extra})
            cal = calibration_for(prior, "fast", {**opts, **extra}, pattern)
            res[f"{key}/{variant}"] = {**score(case, r.mmse), **uncertainty(case, r, cal),
                                       "s": time.perf_counter() - t}
            print(key, variant, {k: round(v, 3) if isinstance(v, float) else v
                                 for k, v in res[f"{key}/{variant}"].items()}, flush=True)
            atomic_write_json(a.out, res)

    for kind in ("poisson", "1d"):
        for split, seed0 in (("val", 100), ("test", 0)):
            for j in range(len(z[split])):
                one(f"{kind}/{split}/{j}",
                    simulated_case(torch.from_numpy(z[split][j]), kind, seed=seed0 + j),
                    "1d" if kind == "1d" else "2d")
    if a.real:
        one("real/test/0", real_case(a.real))
    return res


def _calibrated_cell(rows) -> str:
    if "coverage90_calibrated" not in rows[0]:
        return ""
    return (f"{np.mean([r['spearman_calibrated'] for r in rows]):.2f} / "
            f"{np.mean([r['coverage90_calibrated'] for r in rows]):.2f}")


def report(res: dict, cmd: str) -> str:
    s = res["settings"]
    lines = [TITLE, "",
             f"Prior `{os.path.basename(s['prior'])}`, {s['chains']} chains x {s['nfe']} NFE, "
             + (f"sigma_start {s['sigma_start']}" if "sigma_start" in s else
                f"sigma_start {s['sigma_start_2d']} (Poisson-disc) / {s['sigma_start_1d']} (1D)")
             + ", noise-model data step, seed 0. *means*: the "
             "default chains (each step keeps its data step's mean, eta 0.85); *draws*: every "
             "step draws from its data step's Gaussian posterior and renoises with fresh noise "
             "(`fast_posterior(draws=True)`). Mean +- std over slices of PSNR dB, mean SSIM, "
             "Spearman(std, |error|) and 90 % coverage (targets: >= 0.5 and 80-95 %; the real "
             "slice's coverage also counts the reference's own noise: second number). "
             "*Spearman if calibrated*: the same statistic with errors drawn from the std map "
             "itself, i.e. what a perfectly calibrated map of this spread would reach. "
             "*Calibrated map*: Spearman / coverage of the prior's calibrated std (the chains' "
             "std pooled locally and scaled on the validation slices, "
             "`mriprior.recon.calibration`; simulated cases of the settings it was measured "
             "with).", "",
             "| case | slices | variant | PSNR dB | SSIM | Spearman | Spearman if calibrated "
             "| coverage 90 % | calibrated map: Spearman / coverage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, label in (("poisson", "simulated, Poisson-disc R 8"), ("1d", "simulated, 1D R 5"),
                        ("real", "real 8-coil slice")):
        for split in ("val", "test"):
            for variant in VARIANTS:
                rows = [v for k, v in res.items() if k.startswith(f"{kind}/{split}/")
                        and k.endswith(f"/{variant}")]
                if not rows:
                    continue
                ps = [r["psnr"] for r in rows]
                cov = f"{np.mean([r['coverage90'] for r in rows]):.2f}"
                if "coverage90_ref_noise" in rows[0]:
                    cov += f" / {np.mean([r['coverage90_ref_noise'] for r in rows]):.2f}"
                lines.append(f"| {label} | {split} ({len(rows)}) | {variant} | "
                             f"{np.mean(ps):.2f} +- {np.std(ps):.2f} | "
                             f"{np.mean([r['ssim'] for r in rows]):.3f} | "
                             f"{np.mean([r['spearman_std_err'] for r in rows]):.2f} | "
                             f"{np.mean([r['spearman_if_calibrated'] for r in rows]):.2f} | "
                             f"{cov} | {_calibrated_cell(rows)} |")
    secs = {v: np.mean([r["s"] for k, r in res.items() if k.endswith(f"/{v}")])
            for v in VARIANTS if any(k.endswith(f"/{v}") for k in res)}
    lines += ["", "Seconds per case (256 x 256 x 8 coils, this 2-core CPU): " + ", ".join(
        f"{v} {t:.1f}" for v, t in secs.items()) + ".", "", f"Command: `{cmd}`", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pack", default=".gpu-eval")
    p.add_argument("--prior", default="bundled")
    p.add_argument("--real", default=None)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--measure", action="store_true",
                   help="write the prior's denoising error on the validation slices, then stop")
    p.add_argument("--calibrate", action="store_true",
                   help="write the uncertainty calibration of the validation slices into the "
                        "prior's sidecar, then stop")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="which chains to run (default both)")
    p.add_argument("--pool", type=int, default=5, help="--calibrate: variance pooling window")
    p.add_argument("--docs", default=os.path.join(HERE, "..", "docs", "benchmarks.md"))
    p.add_argument("--out", default=OUT,
                   help="results JSON (per case; cases already in it are not rerun)")
    a = p.parse_args(argv)
    if a.measure:
        measure(a)
        return 0
    if a.calibrate:
        calibrate(a)
        return 0
    res = json.load(open(a.out)) if a.report_only else run(a)
    cmd = "python bench/uncertainty.py " + " ".join(sys.argv[1:])
    section = report(res, cmd if not a.report_only else res.get("command", cmd))
    res["command"] = res.get("command", cmd) if a.report_only else cmd
    atomic_write_json(a.out, res)
    replace_section(a.docs, TITLE, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
