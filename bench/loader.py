"""Training-loader throughput benchmark (not a test).

Measures images/s of :func:`mriprior.data.loader.make_loader` (channels="complex", random flips)
at one batch size for several worker counts and crops, on a dataset of complex slices: the one
given with ``--data``, or ``--count`` synthetic 256 x 256 complex64 slices written to a
temporary folder (removed afterwards). Every slice is read once first, so the numbers are
warm-cache (page cache) reads. For each setting, ``--repeat`` runs of: the time to the first
batch (worker start-up included), then ``--warmup`` batches untimed, then ``--steps`` batches
timed; the consumer does nothing with the batches. Reported: median and best images/s.

Usage: python bench/loader.py [--data DIR] [--count 2000] [--batch-size 16] [--steps 150]
       [--repeat 3] [--workers 0 1 2] [--crops none 128] [--out results.json]
Prints one JSON object (and writes it to --out if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import torch

from mriprior.data.dataset import DatasetWriter, open_dataset
from mriprior.data.loader import make_loader


def write_synthetic(path, count: int, shape=(256, 256), seed: int = 0) -> None:
    """``count`` complex64 slices: a smooth-phase disc plus noise (content does not matter)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]] / np.array(shape).reshape(2, 1, 1) - 0.5
    disc = (yy ** 2 + xx ** 2 < 0.16).astype(np.float32)
    with DatasetWriter(path, "complex", shape, options={"synthetic": True}) as w:
        for i in range(count):
            phase = np.exp(1j * (rng.uniform(-3, 3) * xx + rng.uniform(-3, 3) * yy))
            noise = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
            w.add((disc * phase + 0.05 * noise).astype(np.complex64),
                  {"source": "synthetic", "index": i, "split": "train"})


def warm_cache(ds) -> float:
    """Read every slice once so that the timed runs read from the page cache; seconds."""
    t = time.perf_counter()
    for i in range(len(ds)):
        np.asarray(ds[i]).sum()
    return time.perf_counter() - t


def measure_once(path, batch_size: int, workers: int, crop, warmup: int, steps: int) -> dict:
    loader = make_loader(path, batch_size, num_workers=workers, crop=crop, split="train",
                         total_steps=1 + warmup + steps)
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - t0
    for _ in range(warmup):
        next(it)
    t1 = time.perf_counter()
    n = 0
    for batch in it:
        n += batch.shape[0]
    dt = time.perf_counter() - t1
    return {"batch_shape": list(first.shape), "images": n, "seconds": dt,
            "first_batch_s": t_first}


def measure(path, batch_size: int, workers: int, crop, warmup: int, steps: int,
            repeat: int) -> dict:
    """``repeat`` runs of one setting: median and best images/s, median first-batch time."""
    runs = [measure_once(path, batch_size, workers, crop, warmup, steps)
            for _ in range(repeat)]
    rates = [r["images"] / r["seconds"] for r in runs]
    return {"workers": workers, "crop": crop, "batch_shape": runs[0]["batch_shape"],
            "images_per_run": runs[0]["images"], "repeat": repeat,
            "images_per_s": round(float(np.median(rates)), 1),
            "images_per_s_best": round(max(rates), 1),
            "images_per_s_all": [round(r, 1) for r in rates],
            "first_batch_s": round(float(np.median([r["first_batch_s"] for r in runs])), 4)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="an mriprior dataset (complex, train split); default: "
                                  "synthetic slices in a temporary folder")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--crops", nargs="+", default=["none", "128"])
    p.add_argument("--out")
    a = p.parse_args(argv)
    crops = [None if c.lower() == "none" else int(c) for c in a.crops]
    tmp = None
    try:
        if a.data:
            path = a.data
        else:
            tmp = tempfile.mkdtemp(prefix="mriprior-bench-loader-")
            path = os.path.join(tmp, "data")
            t = time.perf_counter()
            write_synthetic(path, a.count)
            os.sync()  # let write-back finish before timing reads
            print(f"wrote {a.count} synthetic slices in {time.perf_counter() - t:.1f} s",
                  flush=True)
        ds = open_dataset(path)
        print(f"read pass (page cache warm-up): {warm_cache(ds):.1f} s", flush=True)
        runs = [measure(path, a.batch_size, w, c, a.warmup, a.steps, a.repeat)
                for c in crops for w in a.workers]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {"benchmark": "loader", "dataset": {"path": a.data or "synthetic (temporary)",
                                                 "kind": ds.kind, "shape": list(ds.shape),
                                                 "count": len(ds)},
              "batch_size": a.batch_size, "channels": "complex", "flips": True,
              "environment": {"torch": torch.__version__, "numpy": np.__version__,
                              "python": platform.python_version(),
                              "cpu_count": os.cpu_count(), "machine": platform.machine()},
              "runs": runs}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
