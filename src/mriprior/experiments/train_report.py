"""Training curve and held-out losses of a prior run, from its ``log.jsonl``.

    mriprior experiment train-report out/ve-cpu --out docs/figures/ve-cpu-curve.png

Prints a JSON summary (final loss, held-out loss per noise level at each evaluation, mean
images/s) and writes a PNG with the training loss (raw and smoothed) and held-out losses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mriprior.experiments.report import save_figure


def read_log(run_dir) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarise(records: list[dict]) -> dict:
    train = [r for r in records if "loss" in r and "step" in r]
    held = [r for r in records if "heldout" in r]
    ips = [r["images_per_s"] for r in train if "images_per_s" in r]
    return {"steps": train[-1]["step"] if train else 0,
            "final_loss": train[-1]["loss"] if train else None,
            "mean_images_per_s": float(np.mean(ips)) if ips else None,
            "heldout": [{"step": r["step"], "loss": r["heldout"]} for r in held]}


def plot(records: list[dict], out: str) -> None:
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r and "step" in r]
    steps = np.array([r["step"] for r in train])
    loss = np.array([r["loss"] for r in train])
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(steps, loss, lw=0.8, alpha=0.5, label="training loss (per log window)")
    if len(loss) >= 5:
        k = max(len(loss) // 20, 1)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax[0].plot(steps[k - 1:], smooth, lw=1.5, label=f"moving mean ({k})")
    ax[0].set_xlabel("step")
    ax[0].set_yscale("log")
    ax[0].legend(fontsize=7)
    held = [r for r in records if "heldout" in r]
    for r in held:
        levels = sorted(r["heldout"], key=float)
        ax[1].plot([float(s) for s in levels], [r["heldout"][s] for s in levels], "o-",
                   label=f"step {r['step']}")
    ax[1].set_xscale("log")
    ax[1].set_xlabel("sigma")
    ax[1].set_ylabel("held-out DSM loss")
    if held:
        ax[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=90)
