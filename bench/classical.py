"""Classical reconstruction benchmark, side by side with BART 0.8 in one run (not a test).

Cases
  (a) phantom: `bart phantom -x 256 -s 8 -k`, Poisson-disc mask from `bart poisson`;
      reference = SENSE combination of the fully sampled k-space with the same maps.
  (b) real:   ../shared/data/brain-8coil-slice (real 8-coil k-space, already undersampled);
      reference = its `img` (full-data recon, ESPIRiT map 0). The reference's global scale is
      unknown, so metrics use least-squares scaling of the magnitude (metrics.evaluate(scale="lsq")).

Measured for each case, on the same files:
  ESPIRiT: wall time of `bart ecalib -m1` vs `mriprior.physics.espirit` (in process) and the
  agreement |<s_ours, s_bart>| / (|s_ours| |s_bart|) averaged inside the object.
  L1-wavelet PICS, same mask, same (BART) maps, -r LAMBDA -i 100: PSNR / SSIM of both, the
  relative difference between the two images, and wall times: BART's command, our command
  (`mriprior pics`, includes Python start-up and import), and our solve alone (in process,
  after a warm-up). Ratios are computed from times measured in this one run.

Usage: python bench/classical.py [--data ../shared/data/brain-8coil-slice] [--repeat 3]
Writes bench/results/classical.json and appends a row per case to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from mriprior.io.cfl import BartLayout, read_cfl
from mriprior.metrics import evaluate
from mriprior.physics.espirit import espirit
from mriprior.recon.classical import bart_pics_phase, pics, sense_combine

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(cmd, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, shell=True, check=True, capture_output=True)
    return time.perf_counter() - t


def best_of(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def to_t(arr, layout, max_dim=4):
    return torch.from_numpy(np.ascontiguousarray(layout.to_torch(arr, max_dim=max_dim)))


def first_image(arr, layout):
    """First 2D image (map 0) of a BART image file as (1, y, x)."""
    t = to_t(arr, layout)
    return t.reshape(-1, *t.shape[-2:])[:1]


def map_agreement(a, b, support):
    """Mean over support of |<a,b>| / (|a||b|) across coils; a, b: (coil, y, x)."""
    num = torch.abs(torch.sum(a.conj() * b, dim=0))
    den = torch.linalg.vector_norm(a, dim=0) * torch.linalg.vector_norm(b, dim=0)
    ok = support & (den > 0)
    return float((num[ok] / den[ok]).mean())


def run_case(name, work, ksp_file, ref_img, lam, iters, repeat, mriprior_cmd, scale_mode):
    ksp = read_cfl(os.path.join(work, ksp_file))
    lay = BartLayout.from_dims(ksp.shape)
    k = to_t(ksp, lay, 3)[None]  # (1, coil, y, x)
    res = {"case": name, "shape": list(k.shape), "lambda": lam, "iterations": iters}
    mask = (k != 0).any(dim=1)
    res["acceleration"] = float(mask.numel() / mask.sum())

    # ESPIRiT
    t_bart_ecalib = min(sh(f"bart ecalib -m1 {ksp_file} sens", work) for _ in range(repeat))
    sens_b = to_t(read_cfl(os.path.join(work, "sens")), lay)  # (maps, coil, y, x)
    espirit(k, maps=1)  # warm-up
    maps_o, t_ours_ecalib = best_of(lambda: espirit(k, maps=1), repeat)
    support = (sens_b[0].abs().sum(0) > 0) & (maps_o[0, 0].abs().sum(0) > 0)
    res["ecalib"] = {"bart_s": t_bart_ecalib, "ours_s": t_ours_ecalib,
                     "ratio_ours_over_bart": t_ours_ecalib / t_bart_ecalib,
                     "agreement": map_agreement(maps_o[0, 0], sens_b[0], support)}

    # L1-wavelet PICS with the same (BART) maps
    flags = f"-l1 -r {lam} -i {iters}"
    t_bart = min(sh(f"bart pics {flags} {ksp_file} sens bart_l1", work) for _ in range(repeat))
    t_cli = min(sh(f"{mriprior_cmd} pics {flags} {ksp_file} sens ours_l1", work)
                for _ in range(repeat))
    maps_t = sens_b[None]
    xr = (lay.x_dim == 0)
    pics(k, maps_t, "l1", lam, 3, x_is_read=xr)  # warm-up
    (x, scale), t_solve = best_of(lambda: pics(k, maps_t, "l1", lam, iters, x_is_read=xr), repeat)
    bart_img = first_image(read_cfl(os.path.join(work, "bart_l1")), lay)
    ours_img = first_image(read_cfl(os.path.join(work, "ours_l1")), lay)
    phase, _ = bart_pics_phase(x.shape[-2:])
    solve_vs_cli = float(np.linalg.norm((x[0] * phase - ours_img).numpy())
                         / np.linalg.norm(ours_img.numpy()))
    ref = ref_img(k, maps_t, scale)
    res["pics_l1"] = {
        "bart": {k_: float(v) for k_, v in evaluate(ref, bart_img, scale=scale_mode).items()},
        "ours": {k_: float(v) for k_, v in evaluate(ref, ours_img, scale=scale_mode).items()},
        "relative_difference_ours_vs_bart": float(
            np.linalg.norm((ours_img - bart_img).numpy()) / np.linalg.norm(bart_img.numpy())),
        "in_process_vs_cli_difference": solve_vs_cli,
        "bart_command_s": t_bart, "ours_command_s": t_cli, "ours_solve_s": t_solve,
        "ratio_command": t_cli / t_bart, "ratio_solve": t_solve / t_bart,
    }
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data",
                                                   "brain-8coil-slice"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lambda-phantom", type=float, default=0.005)
    ap.add_argument("--lambda-real", type=float, default=0.005)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "classical.json"))
    ap.add_argument("--no-docs", action="store_true", help="do not append to docs/benchmarks.md")
    args = ap.parse_args()
    if shutil.which("bart") is None:
        sys.exit("bart not found: apt-get install -y bart")
    torch.set_num_threads(os.cpu_count() or 1)
    # both tools shrink the default -r 24 calibration region to the fully sampled centre
    warnings.filterwarnings("ignore", message="calibration region")
    mriprior_cmd = shutil.which("mriprior") or f"{sys.executable} -m mriprior.cli.main"
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": f"{os.cpu_count()} CPU cores", "torch": torch.__version__,
               "bart": subprocess.run(["bart", "version"], capture_output=True,
                                      text=True).stdout.strip(), "cases": []}
    with tempfile.TemporaryDirectory() as work:
        # (a) phantom
        sh("bart phantom -x 256 -s 8 -k full", work)
        sh("bart poisson -Y 256 -Z 256 -y 2.5 -z 2.5 -C 20 -v -e -s 1 pat", work)
        sh("bart transpose 0 1 pat p1 && bart transpose 1 2 p1 mask && bart fmac full mask ksp",
           work)
        full = read_cfl(os.path.join(work, "full"))
        lay = BartLayout.from_dims(full.shape)
        kfull = to_t(full, lay, 3)[None]

        def ref_phantom(k, maps, scale):
            return sense_combine(kfull, maps, normalize=False)[:, 0] / scale.reshape(-1, 1, 1)

        results["cases"].append(run_case("BART phantom 256x256, 8 coils", work, "ksp",
                                         ref_phantom, args.lambda_phantom, 100, args.repeat,
                                         mriprior_cmd, "none"))
        # (b) real slice
        if os.path.exists(os.path.join(args.data, "ksp.cfl")):
            for f in ("ksp", "img"):
                for ext in (".cfl", ".hdr"):
                    shutil.copy(os.path.join(args.data, f + ext), os.path.join(work, "r" + f + ext))
            img = read_cfl(os.path.join(work, "rimg"))
            lay_r = BartLayout.from_dims(img.shape)
            ref_r = first_image(img, lay_r)  # ESPIRiT map 0: (1, y, x)
            results["cases"].append(run_case("real brain slice 180x230, 8 coils", work, "rksp",
                                             lambda k, m, s: ref_r, args.lambda_real, 100,
                                             args.repeat, mriprior_cmd, "lsq"))
        else:
            print(f"note: {args.data} not found; real-data case skipped", file=sys.stderr)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(json.dumps(results, indent=2))
    if not args.no_docs:
        append_docs(results)


def append_docs(results):
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    cmd = "python bench/classical.py --data ../shared/data/brain-8coil-slice"
    rows = []
    for c in results["cases"]:
        e, p = c["ecalib"], c["pics_l1"]
        rows.append(
            f"| {results['date'][:10]} | {c['case']}, R={c['acceleration']:.1f} | "
            f"{e['bart_s']:.2f} / {e['ours_s']:.2f} s, agreement {e['agreement']:.4f} | "
            f"{p['bart']['psnr']:.2f} / {p['ours']['psnr']:.2f} dB | "
            f"{p['bart']['ssim']:.4f} / {p['ours']['ssim']:.4f} | "
            f"{p['relative_difference_ours_vs_bart']:.1e} | "
            f"{p['bart_command_s']:.2f} / {p['ours_command_s']:.2f} / {p['ours_solve_s']:.2f} s"
            f" | {p['ratio_command']:.2f} / {p['ratio_solve']:.2f} | `{cmd}` |")
    with open(path) as f:
        lines = f.read().splitlines()
    # insert after the last row of the classical table (the one whose header names "ecalib")
    start = next(i for i, line in enumerate(lines) if line.startswith("| date | case | ecalib"))
    end = start + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[end:end] = rows
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
