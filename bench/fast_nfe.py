"""The fast sampler's PSNR against its network evaluations per chain (issue 16's target: within
0.3 dB of its best at <= 20 NFE per chain).

    python bench/fast_nfe.py --pack .gpu-eval-clin --prior bundled --nfe 10 20 40 80

Every setting but the NFE is the prior's own for the pattern's kind (``tuned_options("fast",
prior, kind)``: chains, start level, eta, noise-model data step, as ``mriprior recon --prior P``
uses them; chosen on validation slices when the prior was tuned, nothing chosen here). The pack's
test slices with the acquisition seeds of ``bench/gpu/run.py`` (test slice j: seed j; ``--split
val``: its validation slices, seed 100 + j, for choosing settings), sampler seed 0, one pattern
after the other. ``--set KEYWORD=VALUE`` (repeatable) overrides one of the sampler's settings,
e.g. ``--set cg_iters=10``. Reports per pattern the mean PSNR per NFE, each NFE's gap to
the best mean, how many slices are within 0.3 dB of their own best, and seconds per slice (the
sampler alone, wall clock, whatever else runs on the machine); JSON to ``--out``, a markdown table
on stdout and, with ``--figure``, PSNR against NFE.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import sys
import time

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.experiments.recon_cases import score, simulated_case
from mriprior.io.files import atomic_write_json
from mriprior.recon.posterior import fast_posterior, tuned_options
from mriprior.recon.priors import load_image_prior

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {"poisson": "2d", "1d": "1d"}  # the pack's patterns -> tuned_options' pattern kinds


def sweep(prior, images, kind: str, nfes: list[int], seed0: int = 0, overrides=None,
          log=print) -> dict:
    """PSNR and seconds per NFE (lists over ``images``, acquisition seeds ``seed0 + j``) for
    one pattern, its settings with ``overrides``."""
    opts = {**tuned_options("fast", prior, KINDS[kind]), **(overrides or {})}
    psnr: dict = {n: [] for n in nfes}
    secs: dict = {n: [] for n in nfes}
    for j, img in enumerate(images):
        case = simulated_case(torch.from_numpy(img), kind, seed=seed0 + j)
        for n in nfes:
            t = time.perf_counter()
            with torch.no_grad():
                r = fast_posterior(case["ksp"], case["maps"], prior, seed=0, **{**opts, "nfe": n})
            secs[n].append(time.perf_counter() - t)
            psnr[n].append(score(case, r.mmse)["psnr"])
            log(f"{kind} slice {j} NFE {n}: {psnr[n][-1]:.2f} dB, {secs[n][-1]:.1f} s")
    return {"settings": {k: v for k, v in opts.items() if k != "nfe"},
            "psnr": {str(n): v for n, v in psnr.items()},
            "seconds": {str(n): v for n, v in secs.items()}}


def summary(res: dict) -> dict:
    """Mean PSNR per NFE, gap to the best mean, slices within 0.3 dB of their own best."""
    nfes = list(res["psnr"])
    table = np.array([res["psnr"][n] for n in nfes])  # (nfe, slice)
    means = table.mean(1)
    within = (table >= table.max(0) - 0.3).sum(1)
    return {n: {"mean": float(means[i]), "std": float(table[i].std()),
                "gap_to_best": float(means[i] - means.max()), "within_0.3_of_own_best":
                int(within[i]), "seconds": float(np.median(res["seconds"][n]))}
            for i, n in enumerate(nfes)}


def markdown(results: dict) -> str:
    rows = ["| pattern | NFE per chain | PSNR dB (mean +- std) | gap to the best NFE | slices "
            "within 0.3 dB of their best | seconds per slice (median) |", "|---|---|---|---|---|---|"]
    for kind, res in results["patterns"].items():
        n = len(next(iter(res["psnr"].values())))
        for nfe, s in res["summary"].items():
            rows.append(f"| {kind} | {nfe} | {s['mean']:.2f} +- {s['std']:.2f} | "
                        f"{s['gap_to_best']:+.2f} | {s['within_0.3_of_own_best']} of {n} | "
                        f"{s['seconds']:.1f} |")
    return "\n".join(rows)


def figure(path: str, results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind, res in results["patterns"].items():
        nfes = [int(n) for n in res["summary"]]
        ax.plot(nfes, [s["mean"] for s in res["summary"].values()], "o-", label=kind)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.set_xlabel("network evaluations per chain")
    ax.set_ylabel("mean PSNR of the MMSE (dB)")
    ax.set_title(f"fast sampler, {results['prior']}, {results['split']} slices")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_overrides(items: list[str], parser) -> dict:
    """``KEYWORD=VALUE`` strings -> {keyword: int | float | str} for the sampler's settings."""
    known = set(inspect.signature(fast_posterior).parameters)
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in known or not value or key in ("nfe", "seed"):
            parser.error(f"--set {item!r}: expected KEYWORD=VALUE with a keyword of "
                         "fast_posterior other than nfe and seed")
        for cast in (int, float, str):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pack", default=".gpu-eval-clin")
    p.add_argument("--prior", default="bundled")
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 40, 80])
    p.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--slices", type=int, default=None, help="the first N slices only")
    p.add_argument("--set", action="append", default=[], metavar="KEYWORD=VALUE")
    p.add_argument("--out", default=os.path.join(HERE, "results", "fast_nfe.json"))
    p.add_argument("--figure", default=None, help="PNG of PSNR against NFE")
    a = p.parse_args(argv)
    overrides = parse_overrides(a.set, p)
    if min(a.nfe) < 1:
        p.error(f"--nfe {a.nfe}: every count must be at least 1")
    pack = os.path.join(a.pack, "pack.npz")
    if not os.path.isfile(pack):
        p.error(f"--pack {a.pack}: no pack.npz there (make one with bench/gpu/pack.py)")
    images = np.load(pack, allow_pickle=False)[a.split][:a.slices]
    prior = load_image_prior(a.prior)
    results = {"date": datetime.date.today().isoformat(), "prior": a.prior, "pack": a.pack,
               "split": a.split, "overrides": overrides,
               "threads": torch.get_num_threads(), "patterns": {},
               "command": "python bench/fast_nfe.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv)}
    for kind in a.kinds:
        res = sweep(prior, images, kind, sorted(set(a.nfe)), 100 if a.split == "val" else 0,
                    overrides)
        results["patterns"][kind] = {**res, "summary": summary(res)}
        atomic_write_json(a.out, results)
    print(markdown(results))
    if a.figure:
        figure(a.figure, results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:  # a bad prior, pack or --init: one line, no traceback
        sys.exit(f"bench/fast_nfe.py: {e}")
