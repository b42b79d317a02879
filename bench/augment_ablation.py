"""Training augmentations at equal steps (issue 16, item 3): what flips, 90-degree rotations and
intensity scaling each add to the patch prior.

    python bench/augment_ablation.py --steps 1500 --pack .val8-clin        # ~4 x 21 min, resumable

Trains one prior per arm from the bundled recipe (``configs/edm-patch-cpu-150-mixed.yaml``: open
corpus + clinical archive, patch prior, EDM), changing only the data augmentation and the number
of steps (the cosine schedule runs over those steps), each into ``OUT_ROOT/ARM`` (``--resume``
semantics: an interrupted arm continues; a finished arm is not retrained). Arms:

* ``flips``: random y / x flips (the recipe's own setting);
* ``none``: no augmentation;
* ``flips+transposes``: flips and y <-> x swaps, i.e. all 8 flips / 90-degree rotations;
* ``flips+gain``: flips and every sample times a log-uniform factor in [GAIN_LO, GAIN_HI]
  (default [0.5, 1]: at reconstruction the image is scaled by the maximum of its aliased,
  noisy CG-SENSE image, so its own maximum lands at or below 1).

Then each prior's held-out denoising loss at the 12 levels of ``bench/uncertainty.py --measure``
(same function, slices and noise draw) on the pack's validation slices. Prints a markdown table
(loss per level, and each arm's ratio to ``flips``) and writes JSON to ``--json`` after every
arm (arms an earlier call measured on the same pack stay in it, so arms can be run apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mriprior.errors import InputError  # noqa: E402
from mriprior.io.files import atomic_write_json  # noqa: E402
from mriprior.priors.config import load_config  # noqa: E402
from mriprior.priors.train import train  # noqa: E402

from uncertainty import denoising_loss  # noqa: E402  (bench/ is sys.path[0] as a script)

ARMS = ("flips", "none", "flips+transposes", "flips+gain")


def arm_overrides(a, arm: str) -> dict:
    """The config entries an arm changes in the base recipe."""
    return {"flips": {}, "none": {"data.flips": False},
            "flips+transposes": {"data.transposes": True},
            "flips+gain": {"data.gain": [a.gain_lo, a.gain_hi]}}[arm]


def arm_config(a, arm: str) -> dict:
    return load_config(a.base, {**arm_overrides(a, arm), "train.steps": a.steps,
                                "heldout.every": a.steps // 3,
                                "train.output": str(Path(a.out_root).resolve() / arm)})


def minutes(output: Path, steps: int, batch: int) -> float:
    """Training time at the run's median logged rate (other jobs beside it excluded)."""
    rates = [r["images_per_s"] for r in map(json.loads, (output / "log.jsonl").read_text()
                                            .splitlines()) if "images_per_s" in r]
    return steps * batch / float(np.median(rates)) / 60


def table(res: dict) -> str:
    sigmas = res["flips"]["sigmas"] if "flips" in res else next(iter(res.values()))["sigmas"]
    cols = [i for i in range(0, len(sigmas), 2)]
    head = "| arm (minutes) | " + " | ".join(f"sigma {sigmas[i]:.3g}" for i in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for arm, r in res.items():
        cells = []
        for i in cols:
            ratio = (f" ({r['loss'][i] / res['flips']['loss'][i]:.3f})"
                     if "flips" in res and arm != "flips" else "")
            cells.append(f"{r['loss'][i]:.4f}{ratio}")
        lines.append(f"| {arm} ({r['minutes']:.0f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default=str(ROOT / "configs" / "edm-patch-cpu-150-mixed.yaml"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--gain-lo", type=float, default=0.5)
    p.add_argument("--gain-hi", type=float, default=1.0)
    p.add_argument("--pack", default=".val8-clin")
    p.add_argument("--out-root", default=str(ROOT / "out" / "augment"))
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "augment" /
                                         "augment_ablation.json"))
    a = p.parse_args(argv)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    if a.steps < 3:
        p.error(f"--steps must be >= 3, got {a.steps}")
    pack = os.path.join(a.pack, "pack.npz")
    if not os.path.isfile(pack):
        p.error(f"--pack {a.pack}: no pack.npz there (make one with bench/gpu/pack.py)")
    val = torch.from_numpy(np.load(pack, allow_pickle=False)["val"])
    res = {}  # arms measured by an earlier call on the same pack are kept (the file is shared)
    if Path(a.json).is_file():
        old = json.loads(Path(a.json).read_text())
        res = old["results"] if old.get("pack") == a.pack else {}
    for arm in a.arms:
        try:
            cfg = arm_config(a, arm)
            out = train(cfg, resume=True)
        except InputError as e:
            raise SystemExit(f"augment_ablation.py: arm {arm}: {e}")
        sigmas, loss = denoising_loss(out["prior"], val)
        res[arm] = {"sigmas": sigmas, "loss": loss, "steps": out["step"],
                    "minutes": minutes(Path(out["output"]), out["step"],
                                       cfg["train"]["batch_size"]),
                    "overrides": arm_overrides(a, arm)}
        print(f"{arm}: " + ", ".join(f"{s:.3g}: {v:.4f}" for s, v in zip(sigmas, loss)),
              flush=True)
        atomic_write_json(a.json, {"pack": a.pack, "val_slices": len(val), "base": a.base,
                            "results": res})  # after every arm: an interrupted run keeps them
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
