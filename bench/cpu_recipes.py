"""The CPU recipes side by side: held-out denoising loss per sigma and reconstruction quality of
the priors that one `bench/gpu/run.py --device cpu` evaluation compared (same slices, each prior
tuned on the same validation slices), with each prior's training time from its run log.

    python bench/cpu_recipes.py out/edm-patch-cpu-eval/results.json \
        --train cpu-edm-patch=out/edm-patch-cpu --train cpu-edm-pm3=out/edm-cpu-pm3 \
        --minutes "cpu-ve (bundled)=83" --figure docs/figures/cpu-recipes.png

Prints a markdown table (held-out loss per sigma, training minutes, test PSNR / SSIM per case
and method, uncertainty) and writes a two-panel figure: held-out loss against sigma, and test
PSNR per case against L1-wavelet. Training minutes come from the runs' ``log.jsonl`` (the sum of
the logged intervals: ``log_every`` steps of ``batch`` images at the logged images/s), or are
given with ``--minutes NAME=MIN`` for runs whose log is not kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mriprior.experiments.report import save_figure  # noqa: E402

CASES = {"poisson": "simulated, Poisson-disc R 8", "1d": "simulated, 1D R 5",
         "real": "real 8-coil slice"}


def train_minutes(run_dir: Path) -> float:
    """Training wall time of a run from its log: sum over records of steps x batch / (images/s)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    batch = cfg["train"]["batch_size"]
    total, last = 0.0, 0
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "images_per_s" in r:
            total += (r["step"] - last) * batch / r["images_per_s"]
            last = r["step"]
    return total / 60


def table(res: dict, minutes: dict) -> str:
    held = res["heldout_dsm"]
    sig = list(next(iter(held.values())))
    lines = ["| prior | training min | held-out loss, sigma " + " / ".join(sig) + " |",
             "|---|---|---|"]
    for name, h in held.items():
        m = minutes.get(name)
        lines.append(f"| {name} | {m:.0f} | " if m is not None else f"| {name} | - | ")
        lines[-1] += " / ".join(f"{h[s]:.3f}" for s in sig) + " |"
    lines += ["", "| case | method | PSNR dB | SSIM | Spearman(std, err) | coverage 90 % |",
              "|---|---|---|---|---|---|"]
    for key, meths in res["summary"].items():
        for meth, v in meths.items():
            pm = f" +- {v['psnr_std']:.2f}" if v["n"] > 1 else ""
            unc = (f"{v['spearman']:.2f} | {v['coverage90']:.2f}" if "coverage90" in v
                   else "- | -")
            if "coverage90_ref_noise" in v:
                unc += f" ({v['coverage90_ref_noise']:.2f} with the reference's noise)"
            lines.append(f"| {CASES.get(key, key)} (n={v['n']}) | {meth} | {v['psnr']:.2f}{pm} | "
                         f"{v['ssim']:.4f} | {unc} |")
    return "\n".join(lines)


def figure(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    held = res["heldout_dsm"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in held.items():
        s = [float(k) for k in h]
        a.loglog(s, list(h.values()), marker="o", label=name)
    a.set_xlabel("sigma")
    a.set_ylabel("held-out DSM loss (1 = no denoising)")
    a.set_title("denoising, 2 validation slices")
    a.legend(fontsize=8)
    keys = [k for k in CASES if k in res["summary"]]
    priors = list(held)
    width = 0.8 / (2 * len(priors) + 1)
    for i, key in enumerate(keys):
        meths = res["summary"][key]
        l1 = meths["L1-wavelet"]["psnr"]
        j = 0
        for p in priors:
            for kind in ("PICS", "fast MMSE, noise model"):
                v = meths.get(f"{p} {kind}")
                if v is None:
                    continue
                b.bar(i + (j - len(priors)) * width, v["psnr"] - l1, width,
                      label=f"{p} {kind}" if i == 0 else None, color=f"C{priors.index(p)}",
                      alpha=1.0 if kind == "PICS" else 0.55)
                j += 1
    b.axhline(0, color="k", lw=0.8)
    b.set_xticks(range(len(keys)), [CASES[k] for k in keys], fontsize=8)
    b.set_ylabel("PSNR - tuned L1-wavelet (dB)")
    b.set_title("reconstruction, test slices (mean)")
    b.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--train", action="append", default=[], metavar="NAME=RUN_DIR")
    p.add_argument("--minutes", action="append", default=[], metavar="NAME=MIN")
    p.add_argument("--figure", default=None)
    args = p.parse_args(argv)
    res = json.loads(Path(args.results).read_text())
    minutes = {}
    for item in args.train:
        name, _, d = item.partition("=")
        minutes[name] = train_minutes(Path(d))
    for item in args.minutes:
        name, _, m = item.partition("=")
        minutes[name] = float(m)
    print(table(res, minutes))
    if args.figure:
        figure(res, Path(args.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
