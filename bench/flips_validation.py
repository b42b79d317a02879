"""Prior PICS with and without the flip-averaged score on extra validation slices (issue 16).

The 2-slice validation of `bench/gpu/run.py --flips pics` left the Poisson-disc wavelet weight a
near-tie (41.01 vs 40.98 dB); this script breaks it on further validation slices of the same
held-out split, never on test slices:

    python bench/gpu/pack.py --open data/open256 --complex data/open256-complex \\
        --eval data/clinical256-eval-complex --val 8 --test 1 --out .val8-clin
    python bench/flips_validation.py --pack .val8-clin --prior bundled

Settings compared (lambda, wavelet, flips): Poisson-disc R 8 the plain tuned point
(0.03, 0.0003), and with flips the two tied points (0.03, 0.0001) and (0.03, 0.0003); 1D R 5 the
tuned point (0.1, 0.001) without and with flips. The pack's validation slices that the 2-slice
pack already used (``--skip``) are left out. Prints mean PSNR per setting and writes
bench/results/flips_validation.json.

Other settings and priors, e.g. FISTA's iteration count on the 2-slice pack's own validation
slices: ``--setting poisson:0.03:0.0003:1:100`` (KIND:LAMBDA:WAVELET:FLIPS:ITERS, repeatable;
replaces the settings above) ``--pack .gpu-eval-clin --skip "" --out ...``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from mriprior.experiments.recon_cases import score, simulated_case
from mriprior.io.files import atomic_write_json
from mriprior.recon.posterior import prior_pics
from mriprior.recon.priors import load_image_prior

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {"poisson": [(0.03, 0.0003, False, 50), (0.03, 0.0001, True, 50),
                        (0.03, 0.0003, True, 50)],
            "1d": [(0.1, 0.001, False, 50), (0.1, 0.001, True, 50)]}


def parse_settings(given: list[str]) -> dict:
    """``KIND:LAMBDA:WAVELET:FLIPS:ITERS`` strings -> {kind: [(lam, wavelet, flips, iters)]}."""
    out: dict = {}
    for s in given:
        try:
            kind, lam, w, flips, iters = s.split(":")
            if kind not in ("poisson", "1d") or flips not in ("0", "1"):
                raise ValueError
            out.setdefault(kind, []).append((float(lam), float(w), flips == "1", int(iters)))
        except ValueError:
            raise SystemExit(f"--setting {s!r}: expected KIND:LAMBDA:WAVELET:FLIPS:ITERS with "
                             "KIND poisson or 1d and FLIPS 0 or 1") from None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pack", default=".val8-clin")
    p.add_argument("--prior", default="bundled")
    p.add_argument("--skip", default="301,890", help="validation indices already used")
    p.add_argument("--out", default=os.path.join(HERE, "results", "flips_validation.json"))
    p.add_argument("--setting", action="append", default=[],
                   help="KIND:LAMBDA:WAVELET:FLIPS:ITERS (repeatable; default: the tie-break's)")
    a = p.parse_args(argv)
    settings = parse_settings(a.setting) if a.setting else SETTINGS
    z = np.load(os.path.join(a.pack, "pack.npz"), allow_pickle=False)
    prior = load_image_prior(a.prior)
    skip = {int(s) for s in a.skip.split(",") if s}
    slices = [j for j, i in enumerate(z["val_index"]) if int(i) not in skip]
    res = {}
    for kind, kind_settings in settings.items():
        for j in slices:
            case = simulated_case(torch.from_numpy(z["val"][j]), kind, seed=100 + j)
            for lam, w, flips, iters in kind_settings:
                with torch.no_grad():
                    x = prior_pics(case["ksp"], case["maps"], prior, lam=lam, max_iter=iters,
                                   wavelet=w, flips=flips)[0]
                name = f"{kind} lam {lam} wavelet {w} flips {flips}"
                name += f" iters {iters}" if iters != 50 else ""  # the first run's keys
                res.setdefault(name, []).append(score(case, x)["psnr"])
    write_means(a.out, [int(z["val_index"][j]) for j in slices], res, "flips_validation.py")
    return 0


def write_means(path, slices: list[int], res: dict, script: str) -> None:
    """PSNR per setting and slice, their means and the command, to ``path``; prints the means.
    (Also bench/pics_variants.py's.)"""
    out = {"slices": slices, "psnr": res, "mean": {k: float(np.mean(v)) for k, v in res.items()},
           "command": f"python bench/{script} " + " ".join(sys.argv[1:])}
    atomic_write_json(path, out)
    for k, v in out["mean"].items():
        print(f"{k}: {v:.2f} dB")


if __name__ == "__main__":
    sys.exit(main())
