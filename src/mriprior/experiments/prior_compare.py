"""Priors trained on different data, compared in reconstruction (the first founding study's test).

Given named exported priors (e.g. small complex set, its magnitudes, a large magnitude archive,
the archive with generated phase), reconstruct the held-out cases of ``bench/recon.py``
(:mod:`mriprior.experiments.recon_cases`: simulated test slices with Poisson-disc R ~ 8 and 1D
R = 5 masks, plus the real 8-coil slice with its acquired Poisson-disc pattern) with each prior
and compare with zero-filling and L1-wavelet on the same k-space:

* **prior PICS** (the prior as a PICS regulariser, :func:`~mriprior.recon.posterior.prior_pics`)
  and **fast MMSE** (:func:`~mriprior.recon.posterior.fast_posterior`, ``chains`` chains of
  ``nfe`` network evaluations): the two fast prior-based reconstructions;
* every method's parameter (L1 lambda; each prior's PICS lambda and the fast sampler's starting
  noise level) is tuned per pattern on one validation slice (val split, same simulation), never
  on the test cases: each prior is compared at its own best setting (a best value on the edge
  of its grid is reported: widen the grid);
* a magnitude prior (1 channel) regularises ``|x|`` (the gradient reaches ``x`` through ``|x|``):
  the founding study's way of using magnitude-trained priors for complex data.

Results are cached in ``OUT/prior_compare.json`` entry by entry (keyed by case, method and the
prior file's hash, valid for the parameter it was made with; validation PSNRs per grid value),
so an interrupted run resumes, a prior added later costs only its own reconstructions and a
wider grid only its new values (and the entries whose tuned parameter changed); a change of
the other settings starts afresh. ``OUT/prior_compare.png``: reference, L1
and each prior's fast MMSE with error maps, for the first simulated case and the real slice.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from mriprior.data.dataset import open_dataset
from mriprior.errors import InputError
from mriprior.io.files import atomic_write_json, sha256_file
from mriprior.priors.export import prior_files, read_sidecar
from mriprior.experiments.recon_cases import (PATTERNS, pick_slices, real_case, score,
                                              simulated_case)
from mriprior.recon.classical import pics, sense_combine
from mriprior.recon.posterior import fast_posterior, prior_pics
from mriprior.recon.priors import load_image_prior
from mriprior.experiments.report import save_figure

__all__ = ["run_prior_comparison", "table"]

L1_GRID = (0.001, 0.002, 0.005, 0.01, 0.02)
PICS_GRID = (0.02, 0.05, 0.2, 0.5, 1.0)
SIGMA_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)


def _file_hash(prior_path) -> str:
    f, _ = prior_files(prior_path)
    if not f.exists():
        raise InputError(f"{prior_path}: no {f.name} (an exported prior is NAME.safetensors + "
                         "NAME.json)")
    return sha256_file(f)[:16]


def _describe(prior_path) -> dict:
    """What a prior was trained on, from its JSON sidecar (and the dataset, if present)."""
    meta = read_sidecar(prior_path)
    d = meta.get("data", {})
    info = {"channels": d.get("channels", "?"), "dataset": d.get("dataset", "?"),
            "steps": meta.get("step"), "train_slices": d.get("slices")}
    try:
        info["train_slices"] = int(len(open_dataset(d["dataset"]).indices(d.get("split",
                                                                             "train"))))
    except Exception:  # the training set need not be on this machine
        pass
    return info


def _best(val_psnr: dict, grid, what: str, log, upper: float | None = None) -> float:
    """The grid value with the best validation PSNR; a warning if it lies on the grid's edge,
    unless that edge is ``upper``, a value the parameter cannot exceed (a sampler cannot start
    above the prior's ``sigma_max``)."""
    vals = sorted(float(v) for v in grid)
    best = max(vals, key=lambda v: val_psnr[str(v)])
    at_limit = upper is not None and best == vals[-1] and best >= upper
    if len(vals) > 2 and best in (vals[0], vals[-1]) and not at_limit:
        log(f"  note: best {what} {best} is at the edge of the grid {vals}")
    return best


class _Store:
    """The JSON cache of finished entries (atomic writes)."""

    def __init__(self, out: Path, signature: dict):
        self.path = out / "prior_compare.json"
        self.data = {"signature": signature, "tuning": {}, "entries": {}}
        if self.path.exists():
            old = json.loads(self.path.read_text())
            if old.get("signature") == signature:
                self.data = old

    def get(self, key):
        return self.data["entries"].get(key)

    def put(self, key, value):
        self.data["entries"][key] = value
        self.save()

    def save(self):
        atomic_write_json(self.path, self.data, allow_nan=True)


def run_prior_comparison(priors: dict, data, out, real=None, n_slices: int = 2,
                         patterns=("poisson", "1d"), chains: int = 3, nfe: int = 30,
                         pics_iters: int = 50, l1_grid=L1_GRID, pics_grid=PICS_GRID,
                         sigma_grid=SIGMA_GRID, device="cpu", log=print) -> dict:
    """Run (or resume) the comparison; returns the results dict (also in OUT/prior_compare.json).

    ``priors``: ``{name: exported prior path}``; ``data``: a complex dataset with val and test
    splits (simulated cases); ``real``: folder with BART ``ksp`` / ``img`` (optional)."""
    if not priors:
        raise InputError("give at least one prior (NAME=PATH)")
    bad = [k for k in patterns if k not in PATTERNS]
    if bad:
        raise InputError(f"unknown pattern(s) {bad}: choose from {list(PATTERNS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hashes = {name: _file_hash(path) for name, path in priors.items()}
    ds = open_dataset(data)
    if ds.kind != "complex":
        raise InputError(f"{data}: a {ds.kind!r} dataset; the comparison needs complex "
                         "reference images")
    signature = {"data": str(data), "real": str(real) if real else None, "slices": n_slices,
                 "patterns": list(patterns), "chains": chains, "nfe": nfe,
                 "pics_iters": pics_iters}
    run = _Comparison(priors, hashes, _Store(out, signature), out, device, log,
                      dict(chains=chains, nfe=nfe, pics_iters=pics_iters))
    val_idx = pick_slices(ds, "val", 1)[0]
    test_idx = pick_slices(ds, "test", n_slices)
    images, first = {}, True
    with torch.no_grad():
        for kind in patterns:
            log(f"pattern {kind}: {PATTERNS[kind]}")
            val = simulated_case(torch.from_numpy(np.array(ds[val_idx])), kind, seed=100)
            t = run.tune(kind, val_idx, _to(val, device), l1_grid, pics_grid, sigma_grid)
            cases = [(f"simulated test slice {i}, {kind}", "sim",
                      lambda i=i, j=j: simulated_case(torch.from_numpy(np.array(ds[int(i)])),
                                                      kind, seed=j))
                     for j, i in enumerate(test_idx)]
            if real and kind == "poisson":
                cases.append(("real brain slice, acquired pattern", "real",
                              lambda: real_case(real)))
            for ci, (cname, group, make) in enumerate(cases):
                case = _to(make(), device)
                log(f"  case {ci + 1}/{len(cases)} of pattern {kind}: {cname} "
                    f"(R {case['accel']:.1f})")
                want_images = first or group == "real"  # figure: first case, real
                shown = run.case(kind, cname, group, case, t, want_images)
                if want_images:
                    images[cname] = shown
                first = False
    res = {**run.store.data, "priors": {n: {"path": str(p), "hash": hashes[n], **_describe(p)}
                                        for n, p in priors.items()}}
    if images:
        figure(out / "prior_compare.png", images, list(priors))
    return res


def _to(case: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in case.items()}


class _Comparison:
    """The comparison's state: priors (loaded once), the resumable store, settings."""

    def __init__(self, priors, hashes, store, out, device, log, settings):
        self.priors, self.hashes, self.store, self.out = priors, hashes, store, out
        self.device, self.log, self.s, self.loaded = device, log, settings, {}

    def prior(self, name):
        if name not in self.loaded:
            self.loaded[name] = load_image_prior(self.priors[name], device=self.device)
        return self.loaded[name]

    def _grid(self, table: dict, grid, fn) -> None:
        """Validation PSNR per grid value, kept: a wider grid later costs only its new values."""
        for v in grid:
            if str(float(v)) not in table:
                table[str(float(v))] = fn(v)
                self.store.save()

    def tune(self, kind, val_idx, val, l1_grid, pics_grid, sigma_grid) -> dict:
        """L1's lambda and each prior's PICS lambda / fast sigma_start on the validation slice."""
        t = self.store.data["tuning"].setdefault(kind, {"val_slice": int(val_idx)})
        l1v = t.setdefault("l1_val_psnr", {})
        self._grid(l1v, l1_grid, lambda lam: score(val, pics(val["ksp"], val["maps"], "l1", lam,
                                                              100, rescale=True)[0])["psnr"])
        t["l1"] = _best(l1v, l1_grid, "L1 lambda", self.log)
        for name in self.priors:
            tk = t.setdefault(f"{name}@{self.hashes[name]}", {})
            vp = tk.setdefault("val_psnr", {"pics": {}, "fast": {}})
            self._grid(vp["pics"], pics_grid, lambda lam: score(val, prior_pics(
                val["ksp"], val["maps"], self.prior(name), lam=lam,
                max_iter=self.s["pics_iters"])[0])["psnr"])
            self._grid(vp["fast"], sigma_grid, lambda sg: score(val, fast_posterior(
                val["ksp"], val["maps"], self.prior(name), chains=2, nfe=self.s["nfe"],
                sigma_start=sg, seed=0).mmse)["psnr"])
            tk["pics_lambda"] = _best(vp["pics"], pics_grid, f"{name} PICS lambda", self.log)
            tk["sigma_start"] = _best(vp["fast"], sigma_grid, f"{name} sigma_start", self.log,
                                      upper=self.prior(name).sigma_max)
            self.log(f"  {name}, tuned on validation slice {val_idx}: PICS lambda "
                     f"{tk['pics_lambda']}, fast sigma_start {tk['sigma_start']}")
        self.store.save()
        return t

    def _methods(self, case, t) -> dict:
        """``{method name: (parameter, reconstruct)}`` with the tuned parameters."""
        k, m = case["ksp"], case["maps"]
        methods = {"zero-filled": (None, lambda: sense_combine(k, m)),
                   "L1-wavelet": (t["l1"], lambda: pics(k, m, "l1", t["l1"], 100,
                                                         rescale=True)[0])}
        for name in self.priors:
            tk = t[f"{name}@{self.hashes[name]}"]
            methods[f"{name} PICS"] = (tk["pics_lambda"], lambda name=name, tk=tk: prior_pics(
                k, m, self.prior(name), lam=tk["pics_lambda"],
                max_iter=self.s["pics_iters"])[0])
            methods[f"{name} fast MMSE"] = (tk["sigma_start"], lambda name=name, tk=tk:
                                            fast_posterior(k, m, self.prior(name),
                                                           chains=self.s["chains"],
                                                           nfe=self.s["nfe"],
                                                           sigma_start=tk["sigma_start"],
                                                           seed=0).mmse)
        return methods

    def case(self, kind, cname, group, case, t, want_images: bool) -> dict:
        """Every method on one case (stored results reused); the images for the figure."""
        images = {"ref": case["ref"][0].abs().cpu().numpy()}
        for mname, (param, fn) in self._methods(case, t).items():
            pname = mname.rsplit(" ", 2)[0] if mname.endswith(("PICS", "MMSE")) else None
            key = f"{cname}|{mname}|{self.hashes[pname] if pname else ''}"
            img_path = self.out / "images" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"
            entry = self.store.get(key)
            if entry is None or entry.get("param") != param or (
                    want_images and not Path(entry.get("image", "")).exists()):
                t0 = time.perf_counter()
                x = fn()
                entry = {**score(case, x), "seconds": time.perf_counter() - t0, "case": cname,
                         "group": group, "pattern": kind, "accel": float(case["accel"]),
                         "method": mname, "param": param}
                if want_images:
                    img_path.parent.mkdir(exist_ok=True)
                    np.save(img_path, _aligned(case, x).cpu().numpy())
                    entry["image"] = str(img_path)
                self.store.put(key, entry)
            self.log(f"    {mname:>28}: PSNR {entry['psnr']:6.2f} dB  SSIM "
                     f"{entry['ssim']:.4f}  ({entry['seconds']:.1f} s)")
            if want_images:
                images[mname] = np.load(entry["image"])
        return images


def _aligned(case, x):
    """|x| as the metrics see it (least-squares magnitude scaling for the real slice)."""
    m = x[0].abs()
    if case["scale"] == "lsq":
        ref = case["ref"][0].abs()
        m = m * (m * ref).sum() / (m * m).sum().clamp_min(1e-30)
    return m


def summarise(res: dict) -> dict:
    """{(pattern, group): {method: {"psnr": (mean, std), "ssim": (mean, std), "n"}}}."""
    groups = {}
    for e in res["entries"].values():
        g = groups.setdefault((e["pattern"], e["group"]), {}).setdefault(e["method"], [])
        g.append(e)
    summary = {}
    for gk, methods in groups.items():
        summary[gk] = {m: {k: (float(np.mean([e[k] for e in es])), float(np.std([e[k]
                                                                                for e in es])))
                           for k in ("psnr", "ssim")} | {"n": len(es),
                                                         "accel": float(np.mean([e["accel"]
                                                                                 for e in es]))}
                       for m, es in methods.items()}
    return summary


def table(res: dict, command: str) -> tuple[str, str]:
    head = ("## Priors trained on different data, in reconstruction "
            "(`mriprior experiment priors`)")
    sig = res["signature"]
    lines = [head, "",
             f"Each prior reconstructs the same held-out k-space: {sig['slices']} simulated test "
             "slice(s) per pattern (8 birdcage coils, SNR 40, ESPIRiT maps) and the real 8-coil "
             "slice with its acquired pattern. Entries: PSNR dB / SSIM (magnitude, fastMRI "
             "convention), mean over the simulated slices. Prior PICS and the fast sampler "
             f"({sig['chains']} chains x {sig['nfe']} NFE, MMSE); every lambda / starting level "
             "tuned per prior and pattern on one validation slice.", "",
             "| prior | trained on | channels | train slices | steps |", "|---|---|---|---|---|"]
    for name, p in res["priors"].items():
        lines.append(f"| {name} | `{os.path.basename(str(p['dataset']))}` | {p['channels']} | "
                     f"{p['train_slices'] if p['train_slices'] is not None else '?'} | "
                     f"{p['steps']} |")
    summ = summarise(res)
    cols = [k for k in (("poisson", "sim"), ("1d", "sim"), ("poisson", "real")) if k in summ]
    names = {("poisson", "sim"): "simulated, Poisson-disc", ("1d", "sim"): "simulated, 1D VD",
             ("poisson", "real"): "real slice, acquired"}
    lines += ["", "| method | " + " | ".join(
        f"{names[c]} R {next(iter(summ[c].values()))['accel']:.1f}" for c in cols) + " |",
        "|---|" + "---|" * len(cols)]
    methods = ["zero-filled", "L1-wavelet"] + [f"{n} {m}" for m in ("PICS", "fast MMSE")
                                               for n in res["priors"]]
    for m in methods:
        cells = []
        for c in cols:
            v = summ[c].get(m)
            cells.append("" if v is None else f"{v['psnr'][0]:.2f} / {v['ssim'][0]:.3f}")
        bold = "**" if m in ("L1-wavelet",) else ""
        lines.append(f"| {bold}{m}{bold} | " + " | ".join(cells) + " |")
    lines += ["", "![prior comparison](figures/prior_compare.png)", "",
              f"Command: `{command}`", ""]
    return head, "\n".join(lines)


def figure(path: Path, images: dict, prior_names) -> None:
    import matplotlib.pyplot as plt

    shown = ["L1-wavelet"] + [f"{n} fast MMSE" for n in prior_names]
    rows = list(images)
    cols = 1 + len(shown)
    fig, ax = plt.subplots(2 * len(rows), cols, figsize=(1.9 * cols, 3.9 * len(rows)),
                           squeeze=False)
    for r, cname in enumerate(rows):
        imgs = images[cname]
        ref = imgs["ref"]
        vmax = float(np.percentile(ref, 99.5))
        ax[2 * r, 0].imshow(ref, cmap="gray", vmin=0, vmax=vmax)
        ax[2 * r, 0].set_title("reference", fontsize=7)
        ax[2 * r, 0].set_ylabel(cname.replace(", ", "\n"), fontsize=6)
        ax[2 * r + 1, 0].axis("off")
        for j, m in enumerate(shown, start=1):
            if m not in imgs:
                ax[2 * r, j].axis("off")
                ax[2 * r + 1, j].axis("off")
                continue
            err = np.abs(imgs[m] - ref)
            ax[2 * r, j].imshow(imgs[m], cmap="gray", vmin=0, vmax=vmax)
            ax[2 * r, j].set_title(m.replace(" fast MMSE", "\nfast MMSE"), fontsize=7)
            ax[2 * r + 1, j].imshow(err, cmap="magma", vmin=0, vmax=0.15 * vmax)
            ax[2 * r + 1, j].set_title(f"|error| (x{1 / 0.15:.1f})", fontsize=6)
        for a in ax[2 * r].tolist() + ax[2 * r + 1].tolist():
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
