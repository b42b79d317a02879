"""Cost of one score-network evaluation per image vs batch size (not a test).

The diffusion samplers (phase augmentation, posterior sampling) spend their time in network
evaluations; on a CPU the cost per image depends on how many images share a call. For each
size and batch, the exported prior scores random complex images repeatedly for ``--seconds``;
batches are timed in turns (``--repeats`` rounds, all batch sizes per round) in one process, so
a busy machine affects them alike and the ratios stay comparable; the table gives the best round.

Usage:
  python bench/score_batch.py --prior src/mriprior/assets/prior-ve-cpu [--sizes 128 256]
      [--batches 1 2 4 8] [--threads 1]
Writes bench/results/score_batch.json and a section of docs/benchmarks.md (with this command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import torch

from mriprior.recon.priors import load_image_prior

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEAD = "## Score-network cost per image vs batch size (`bench/score_batch.py`)"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prior", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=6.0, help="timing window per entry")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results", "score_batch.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    prior = load_image_prior(a.prior)
    best = {}
    for _ in range(a.repeats):
        for size in a.sizes:
            for b in a.batches:
                x = torch.randn(b, size, size, dtype=torch.complex64)
                prior.score(x, 0.1)  # warm-up
                t, n = time.perf_counter(), 0
                while time.perf_counter() - t < a.seconds:
                    prior.score(x, 0.1)
                    n += 1
                per = (time.perf_counter() - t) / n / b
                best[(size, b)] = min(best.get((size, b), float("inf")), per)
                print(f"{size}x{size} batch {b}: {per:.4f} s per image and evaluation",
                      flush=True)
    rows = [{"size": s, "batch": b, "seconds_per_image_nfe": best[(s, b)],
             "relative_to_batch1": best[(s, b)] / best[(s, a.batches[0])]}
            for s in a.sizes for b in a.batches]
    res = {"date": datetime.date.today().isoformat(), "threads": a.threads, "prior": a.prior,
           "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "rows": rows}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    if not a.no_docs:
        cmd = "python bench/score_batch.py " + " ".join(sys.argv[1:])
        lines = [HEAD, "", f"Measured {res['date']} on {res['machine']}, {a.threads} torch "
                 f"thread(s); prior `{a.prior}`; best of {a.repeats} interleaved rounds.", "",
                 "| size | batch | s per image and evaluation | relative to batch "
                 f"{a.batches[0]} |", "|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['batch']} | {r['seconds_per_image_nfe']:.4f} | "
                  f"{r['relative_to_batch1']:.2f} |" for r in rows]
        lines += ["", f"Command: `{cmd}`", ""]
        from mriprior.experiments.report import replace_section
        replace_section(os.path.join(ROOT, "docs", "benchmarks.md"), HEAD, "\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
