"""Write the GPU run's section of docs/benchmarks.md from the `results.json` of its device calls.

A run is one call (data + training + evaluation) or, when the evaluation had to be repeated, a
training call plus an evaluation call (`run.py --prior`); give the files in that order, later
files' sections win (evaluation, timings), earlier ones supply what later ones lack (data,
training).

    python bench/gpu/report.py bench/results/gpu/train-call.json bench/results/gpu/eval-call.json \\
        --command "..." [--reading docs-text.md] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TITLE = "## GPU run (`bench/gpu/run.py`)"
ORDER = ["zero-filled", "L1-wavelet", "gpu-edm PICS", "gpu-edm fast MMSE",
         "gpu-edm fast MMSE, noise model", "cpu (bundled) PICS", "cpu (bundled) fast MMSE",
         "cpu (bundled) fast MMSE, noise model"]


def merge(paths) -> dict:
    out: dict = {}
    for p in paths:
        r = json.loads(Path(p).read_text())
        for k, v in r.items():
            if k == "env":
                out[k] = {**out.get(k, {}), **{kk: vv for kk, vv in v.items() if vv is not None}}
                continue
            if k in ("data", "training") and k in out and len(json.dumps(v)) < len(
                    json.dumps(out[k])):
                continue  # an evaluation call's stub does not replace the training call's record
            out[k] = v
    return out


def section(r: dict, command: str, reading: str = "") -> str:
    env, data, tr = r.get("env", {}), r.get("data", {}), r.get("training", {})
    lines = [TITLE, ""]
    lines.append(f"Device: {env.get('gpu') or env.get('device')}, torch {env.get('torch')}, "
                 f"{env.get('cpu_cores')} CPU cores; started {r.get('started')}.")
    if data.get("open_slices") is not None:
        lines.append(f"Data built on the device: {data['open_slices']} open-corpus + "
                     f"{data['clinical_slices']} clinical slices of {data['shape'][0]} x "
                     f"{data['shape'][1]}, decoded in {data['decode_s']:.1f} s on the CPU cores, "
                     f"physics-based phase in {data['phase_s']:.1f} s on the GPU; sigma_data "
                     f"{data['sigma_data']:.4f}.")
    if tr:
        d = tr.get("diffusion", {})
        lines.append(f"Training: EDM, {tr['parameters'] / 1e6:.2f} M parameters, "
                     f"{tr['steps']} steps, {tr['images']} images in {tr['seconds']:.0f} s = "
                     f"**{tr['images_per_s']:.0f} images/s** (256 x 256 complex, bf16 autocast, "
                     f"{'channels-last' if tr.get('channels_last') else 'NCHW'}); ln sigma ~ "
                     f"N({d.get('p_mean')}, {d.get('p_std')}^2); fp16 weights "
                     f"{tr['weights_bytes'] / 2**20:.1f} MiB.")
    lines.append("")
    held = r.get("heldout_dsm")
    if held:
        sig = list(next(iter(held.values())))
        lines += ["Held-out denoising loss (VE DSM form, lower is better; the 2 validation "
                  "slices, one fixed noise draw):", "",
                  "| prior | " + " | ".join(f"sigma {s}" for s in sig) + " |",
                  "|---|" + "---|" * len(sig)]
        for name, h in held.items():
            lines.append(f"| {name} | " + " | ".join(f"{h[s]:.4f}" for s in sig) + " |")
        lines.append("")
    summ = r.get("summary")
    if summ:
        lines += ["Reconstruction (test slices: mean +- std over the slices; every parameter "
                  "tuned on the validation slices; fast MMSE = 4 chains x 20 NFE; uncertainty "
                  "as in `bench/recon.py`):", "",
                  "| case | method | PSNR dB | SSIM | Spearman(std, err) | coverage 90 % |",
                  "|---|---|---|---|---|---|"]
        for key, meths in summ.items():
            label = {"poisson": "simulated, Poisson-disc R 8", "1d": "simulated, 1D R 5",
                     "real": "real 8-coil slice, acquired R 7.9"}.get(key, key)
            for m in ORDER + [m for m in meths if m not in ORDER]:
                if m not in meths:
                    continue
                v = meths[m]
                unc = (f"{v['spearman']:.2f} | {v['coverage90']:.2f}" if "coverage90" in v
                       else " | ")
                if "coverage90_ref_noise" in v:
                    unc += f" ({v['coverage90_ref_noise']:.2f} with the reference's noise)"
                pm = f" +- {v['psnr_std']:.2f}" if v["n"] > 1 else ""
                lines.append(f"| {label} (n={v['n']}) | {m} | {v['psnr']:.2f}{pm} | "
                             f"{v['ssim']:.4f} | {unc} |")
        lines.append("")
    tim = r.get("gpu_timings")
    if tim:
        lines += ["GPU timings per 256 x 256 x 8-coil slice (median of 3 after a warm-up):", "",
                  "| what | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in tim.items()]
        lines.append("")
    if r.get("skipped_cases"):
        lines += [f"Test cases skipped for lack of time: {r['skipped_cases']}.", ""]
    if reading:
        lines += [reading.strip(), ""]
    lines += [f"Command: {command}", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+")
    p.add_argument("--command", required=True, help="the device call(s), as run")
    p.add_argument("--reading", default=None, help="a markdown file with the reading")
    p.add_argument("--no-docs", action="store_true", help="print instead of writing the docs")
    a = p.parse_args(argv)
    reading = Path(a.reading).read_text() if a.reading else ""
    text = section(merge(a.results), a.command, reading)
    if a.no_docs:
        print(text)
        return 0
    sys.path.insert(0, os.fspath(ROOT / "src"))
    from mriprior.experiments.report import replace_section
    replace_section(ROOT / "docs" / "benchmarks.md", TITLE, text)
    print(f"wrote {TITLE} to docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
