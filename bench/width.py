"""Width ablation at equal training time (issue 16, item 4): table and figure from measurements.

    R=bench/results; V=$R/pics_variants_val8
    python bench/width.py --base src/mriprior/assets/prior-edm-cpu \
        --wide $R/width/prior-edm-cpu-wide \
        --val "poisson=${V}_poisson.json:$R/width/val8-wide-poisson.json:poisson base" \
        --val "1d=${V}_1d.json:$R/width/val8-wide-1d.json:1d anneal 0.2/40" \
        --figure docs/figures/width.png

Reads what earlier runs measured, runs nothing (the wide sidecar is a copy of the run's
out/edm-patch-cpu-wide/prior.json): each prior's held-out denoising error per level
(the sidecar's ``denoising_error``, both from `bench/uncertainty.py --measure` on the same
validation slices) and, per sampling kind, two `bench/pics_variants.py` result files (the base
prior's and the wide prior's, same slices and settings) with the row to compare. Prints a
markdown table (loss per level and its ratio; mean validation PSNR, the mean difference and the
slices where the wide prior is above) and writes a two-panel figure. ``--time PACK`` (with
``--wide out/edm-patch-cpu-wide/prior``, the weights) also times both side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mriprior.errors import InputError  # noqa: E402
from mriprior.experiments.report import save_figure  # noqa: E402
from mriprior.priors.export import read_sidecar  # noqa: E402


def denoising_error(prior: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        err = read_sidecar(prior).get("denoising_error")
    except InputError as e:
        raise SystemExit(f"width.py: {e}")
    if not err:
        raise SystemExit(f"width.py: {prior}.json has no denoising_error "
                         f"(run bench/uncertainty.py --measure --prior {prior})")
    return np.asarray(err["sigmas"]), np.asarray(err["loss"])


def val_rows(spec: str) -> tuple[str, np.ndarray, np.ndarray]:
    """``KIND=BASE.json:WIDE.json:ROW`` -> (kind, base PSNRs, wide PSNRs) on the same slices."""
    try:
        kind, rest = spec.split("=", 1)
        base_path, wide_path, row = rest.split(":", 2)
    except ValueError:
        raise SystemExit(f"width.py: --val {spec!r}: expected KIND=BASE.json:WIDE.json:ROW")
    try:
        base, wide = (json.loads(Path(p).read_text()) for p in (base_path, wide_path))
    except (OSError, ValueError) as e:
        raise SystemExit(f"width.py: --val {kind}: {e}")
    if base["slices"] != wide["slices"]:
        raise SystemExit(f"width.py: --val {kind}: {base_path} and {wide_path} hold other slices")
    for path, res in ((base_path, base), (wide_path, wide)):
        if row not in res["psnr"]:
            raise SystemExit(f"width.py: {path} has no row {row!r}")
    return kind, np.asarray(base["psnr"][row]), np.asarray(wide["psnr"][row])


def time_side_by_side(priors: dict, pack: str, repeats: int) -> None:
    """Seconds of the fast sampler (4 chains x 20 NFE from 0.03) and of flip-averaged prior PICS
    (50 iterations) on the pack's first Poisson-disc test slice, the priors alternated."""
    import time

    import torch

    from mriprior.experiments.recon_cases import simulated_case
    from mriprior.recon.posterior import fast_posterior, prior_pics
    from mriprior.recon.priors import load_image_prior

    z = np.load(Path(pack) / "pack.npz", allow_pickle=False)
    case = simulated_case(torch.from_numpy(z["test"][0]), "poisson", seed=0)
    loaded = {name: load_image_prior(path) for name, path in priors.items()}
    print("| repeat | prior | fast sampler s | prior PICS s |\n|---|---|---|---|")
    for rep in range(repeats):
        for name, prior in loaded.items():
            with torch.no_grad():
                t0 = time.perf_counter()
                fast_posterior(case["ksp"], case["maps"], prior, mask=case["mask"], chains=4,
                               nfe=20, sigma_start=0.03, noise_var="auto")
                t1 = time.perf_counter()
                prior_pics(case["ksp"], case["maps"], prior, lam=0.03, max_iter=50,
                           wavelet=0.0003, flips=True)
                t2 = time.perf_counter()
            print(f"| {rep} | {name} | {t1 - t0:.1f} | {t2 - t1:.1f} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--wide", required=True)
    p.add_argument("--val", action="append", default=[], metavar="KIND=BASE.json:WIDE.json:ROW")
    p.add_argument("--figure")
    p.add_argument("--time", metavar="PACK", help="also time both priors side by side on this "
                   "pack's first test slice (needs the wide prior's weights)")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    (s, lb), (s2, lw) = denoising_error(a.base), denoising_error(a.wide)
    if not np.allclose(s, s2):
        raise SystemExit("width.py: the two priors' denoising errors are at other levels")
    print("| sigma | " + " | ".join(f"{x:.3g}" for x in s) + " |")
    print("|---" * (len(s) + 1) + "|")
    for name, v in (("base", lb), ("wide", lw), ("wide / base", lw / lb)):
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in v) + " |")
    rows = [val_rows(v) for v in a.val]
    print("\n| kind | base dB | wide dB | wide - base | slices above |\n|---|---|---|---|---|")
    for kind, b, w in rows:
        print(f"| {kind} | {b.mean():.2f} | {w.mean():.2f} | {(w - b).mean():+.2f} | "
              f"{int((w > b).sum())} of {len(b)} |")
    if a.figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
        ax1.semilogx(s, lw / lb, "o-")
        ax1.axhline(1, color="k", lw=0.8)
        ax1.set(xlabel="noise level sigma", ylabel="held-out error, wide / base",
                title="denoising error (validation)")
        for i, (kind, b, w) in enumerate(rows):
            ax2.plot(np.full(len(b), i) + np.linspace(-0.15, 0.15, len(b)), w - b, "o")
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_xticks(range(len(rows)), [r[0] for r in rows])
        ax2.set(ylabel="PSNR wide - base (dB)", title="prior PICS per validation slice")
        fig.tight_layout()
        save_figure(fig, a.figure)
    if a.time:
        time_side_by_side({"base": a.base, "wide": a.wide}, a.time, a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
