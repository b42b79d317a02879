"""Phase-augmentation throughput benchmark (not a test): images/s per worker for each method.

For each method and image size, ``--n`` magnitude slices of the dataset's test split (resized by
bilinear interpolation to the size) are given a phase as one batch, with the method's default
settings (langevin: 10 levels x 50 steps = 500 network evaluations per image; conditional: 200
predictor-corrector levels = 400 evaluations; gan: one generator pass; smooth, zero), and timed after an untimed warm-up
call on one 32 x 32 crop. One worker = this process with ``--threads`` torch threads.

The conditional method is timed with the given ``--cond-prior``, or, when none is given, with an
untrained conditional U-Net of the same size as the complex prior (its speed does not depend on
its weights; the row says so).

Usage:
  python bench/augment.py --data data/clinical256 --prior src/mriprior/assets/prior-ve-cpu \
      [--cond-prior out/cond-phase-cpu/prior] [--gan out/gan-phase-cpu/prior] [--sizes 128 256]
      [--n 2] [--threads 1]
Writes bench/results/augment.json and a section of docs/benchmarks.md (with this command).
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
import torch.nn.functional as F

from mriprior.augment.phase import (conditional_phase, gan_phase, langevin_phase, smooth_phase,
                                   zero_phase)
from mriprior.data.dataset import open_dataset
from mriprior.priors.export import load_prior
from mriprior.priors.networks import network_from_config
from mriprior.recon.priors import DiffusionPrior

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEAD = "## Phase augmentation throughput (`bench/augment.py`)"


def magnitudes(path, n, size):
    ds = open_dataset(path)
    idx = ds.indices("test")[:n] if len(ds.indices("test")) >= n else np.arange(n)
    m = torch.from_numpy(np.stack([np.asarray(ds[int(i)], dtype=np.float32) for i in idx]))
    if tuple(m.shape[-2:]) != (size, size):
        m = F.interpolate(m[:, None], size=(size, size), mode="bilinear",
                          align_corners=False)[:, 0]
    return m.clamp_min(0)


def methods(prior, cond, gan=None):
    out = {
        "zero": lambda m: zero_phase(m),
        "smooth": lambda m: smooth_phase(m, list(range(m.shape[0]))),
        "langevin (10 x 50)": lambda m: langevin_phase(prior, m, seed=0),
        "conditional (PC, 200)": lambda m: conditional_phase(cond, m, seed=0),
    }
    if gan is not None:
        out["gan (pix2pix)"] = lambda m: gan_phase(gan, m, seed=0)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="magnitude dataset")
    p.add_argument("--prior", required=True, help="complex prior (langevin)")
    p.add_argument("--cond-prior", default=None, help="conditional model (else untrained)")
    p.add_argument("--gan", default=None, help="phase GAN generator (row omitted if none)")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--n", type=int, default=2, help="images per timed batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results", "augment.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    net, meta = load_prior(a.prior)
    prior = DiffusionPrior(net, meta)
    if a.cond_prior:
        cnet, cmeta = load_prior(a.cond_prior)
        cond_note = a.cond_prior
    else:
        torch.manual_seed(0)
        cnet = network_from_config({**net.config, "cond_channels": 1})
        cmeta = dict(meta)
        cond_note = "untrained conditional U-Net of the prior's size (timing only)"
    cond = DiffusionPrior(cnet, cmeta)
    gan = load_prior(a.gan)[0] if a.gan else None
    rows = []
    for size in a.sizes:
        mags = magnitudes(a.data, a.n, size)
        for name, fn in methods(prior, cond, gan).items():
            fn(mags[:1, :32, :32])  # warm-up (first-call overheads), small and cheap
            t = time.perf_counter()
            out = fn(mags)
            dt = time.perf_counter() - t
            assert out.shape == mags.shape and torch.allclose(out.abs(), mags, atol=1e-5)
            rows.append({"method": name, "size": size, "images": a.n, "seconds": dt,
                         "images_per_s": a.n / dt})
            print(f"{name:>22} {size}x{size}: {a.n / dt:10.4f} images/s ({dt:.1f} s for "
                  f"{a.n})", flush=True)
    res = {"date": datetime.date.today().isoformat(), "threads": a.threads,
           "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
           "prior": a.prior, "conditional": cond_note, "rows": rows}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    if not a.no_docs:
        cmd = "python bench/augment.py " + " ".join(sys.argv[1:])
        lines = [HEAD, "", f"Measured {res['date']} on {res['machine']}, {a.threads} torch "
                 f"thread(s) per worker; langevin prior `{a.prior}`; conditional: {cond_note}. "
                 "Default settings of each method; one batch of "
                 f"{a.n} test-split magnitudes per row.", "",
                 "| method | size | images/s per worker | seconds per image |", "|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['size']} | {r['images_per_s']:.4g} | "
                  f"{r['seconds'] / r['images']:.3g} |" for r in rows]
        lines += ["", f"Command: `{cmd}`", ""]
        from mriprior.experiments.report import replace_section
        replace_section(os.path.join(ROOT, "docs", "benchmarks.md"), HEAD, "\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
