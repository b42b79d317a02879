"""Is prior PICS converged? Variants of its optimisation on the validation slices (issue 16).

    python bench/pics_variants.py --pack .gpu-eval-clin --prior bundled
    python bench/pics_variants.py --pack .val8-clin --kinds 1d --variants "anneal 0.2/40" \
        --setting 1d:0.05:0.001 --setting 1d:0.2:0.001     # other lambdas / wavelet weights

The prior's flip-averaged PICS + wavelet at fixed settings (Poisson-disc R 8: lambda 0.03 +
wavelet 0.0003; 1D R 5: 0.1 + 0.001; 50 FISTA iterations from zeros, no annealing: the bundled
sidecar's before 2026-12-06), against: a warm start from the tuned L1-wavelet image (lambda
0.001, as `bench/gpu/run.py` tunes it), and the regulariser's denoiser level annealed
geometrically from SIGMA down to the prior's ``reg_sigma`` over the first N iterations
(``prior_pics(anneal_sigma=SIGMA, anneal_iters=N)``, variants "anneal SIGMA/N"; the schedule of
plug-and-play methods). The pack's validation slices only (seeds 100 + j, as
`bench/gpu/run.py`); prints and writes mean PSNR per variant to
bench/results/pics_variants.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np
import torch

from mriprior.experiments.recon_cases import score, simulated_case
from mriprior.recon.classical import pics
from mriprior.recon.posterior import prior_pics
from mriprior.recon.priors import load_image_prior

from flips_validation import write_means  # bench/ is sys.path[0] when run as a script

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {"poisson": (0.03, 0.0003), "1d": (0.1, 0.001)}
VARIANTS = {"base": {}, "x0=L1": {"warm": True}, "anneal 0.1/25": {"anneal": (0.1, 25)},
            "anneal 0.05/25": {"anneal": (0.05, 25)}, "anneal 0.2/25": {"anneal": (0.2, 25)},
            "anneal 0.1/10": {"anneal": (0.1, 10)}, "anneal 0.1/40": {"anneal": (0.1, 40)},
            "anneal 0.2/40": {"anneal": (0.2, 40)}, "anneal 0.1/50": {"anneal": (0.1, 50)},
            "anneal 0.1/80, 100 it": {"anneal": (0.1, 80), "iters": 100},
            "anneal 0.4/40": {"anneal": (0.4, 40)},
            "anneal 0.4/60, 80 it": {"anneal": (0.4, 60), "iters": 80},
            "anneal 1/80, 100 it": {"anneal": (1.0, 80), "iters": 100},
            "30 it": {"iters": 30}, "40 it": {"iters": 40}}


def run_pics(base, case, lam, wavelet, x0=None, anneal=None, iters=50) -> torch.Tensor:
    hi, n = anneal if anneal is not None else (None, 25)
    with torch.no_grad():
        return prior_pics(case["ksp"], case["maps"], base, lam=lam, max_iter=iters,
                          wavelet=wavelet, x0=x0, flips=True, anneal_sigma=hi, anneal_iters=n)[0]


def parse_settings(items, parser) -> dict:
    """``--setting KIND:LAMBDA:WAVELET`` values -> ``{kind: [(lam, wavelet), ...]}``."""
    out = {}
    for item in items:
        parts = item.split(":")
        try:
            if len(parts) != 3 or parts[0] not in SETTINGS:
                raise ValueError
            out.setdefault(parts[0], []).append((float(parts[1]), float(parts[2])))
        except ValueError:
            parser.error(f"--setting {item!r}: expected KIND:LAMBDA:WAVELET, KIND in "
                         f"{sorted(SETTINGS)}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pack", default=".gpu-eval-clin")
    p.add_argument("--prior", default="bundled")
    p.add_argument("--out", default=os.path.join(HERE, "results", "pics_variants.json"))
    p.add_argument("--kinds", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--setting", action="append", default=[], metavar="KIND:LAMBDA:WAVELET",
                   help="a kind's PICS lambda and wavelet weight instead of its default "
                   "(repeatable: each is run; rows 'KIND LAMBDA/WAVELET VARIANT')")
    a = p.parse_args(argv)
    settings = parse_settings(a.setting, p)
    if not os.path.isfile(os.path.join(a.pack, "pack.npz")):
        p.error(f"--pack {a.pack}: no pack.npz there (make one with bench/gpu/pack.py)")
    z = np.load(os.path.join(a.pack, "pack.npz"), allow_pickle=False)
    base = load_image_prior(a.prior)
    res: dict = {}
    for kind in a.kinds:
        for j in range(len(z["val"])):
            case = simulated_case(torch.from_numpy(z["val"][j]), kind, seed=100 + j)
            l1 = pics(case["ksp"], case["maps"], "l1", 0.001, 100, rescale=True)[0]
            res.setdefault(f"{kind} L1-wavelet", []).append(score(case, l1)["psnr"])
            for name, (lam, wavelet) in itertools.product(
                    a.variants, settings.get(kind, [SETTINGS[kind]])):
                v = VARIANTS[name]
                tag = f"{kind} {lam:g}/{wavelet:g}" if kind in settings else kind
                x = run_pics(base, case, lam, wavelet, x0=l1 if v.get("warm") else None,
                             anneal=v.get("anneal"), iters=v.get("iters", 50))
                res.setdefault(f"{tag} {name}", []).append(score(case, x)["psnr"])
                print(tag, j, name, f"{res[f'{tag} {name}'][-1]:.2f} dB", flush=True)
    write_means(a.out, [int(i) for i in z["val_index"]], res, "pics_variants.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
