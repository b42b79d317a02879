"""Downstream test of phase sources (second founding study): train an unrolled network on k-space
synthesised from magnitudes + each source's phase, test on k-space with real / true phase.

``run_downstream(config, sources, test, out, ...)``:

1. **Train** one network per (source, seed) from the same YAML ``config`` (an ``unrolled: true``
   config), changing only ``data.path`` (the source's complex dataset: the same magnitudes with
   that source's phase, e.g. made by ``mriprior augment``), ``train.seed`` and ``train.output``
   (``OUT/nets/SOURCE-sSEED``). Identical budgets; a finished network is reused, an unfinished one
   resumed (the run survives interruption and spans sessions).
2. **Test set** (the same for every network): ``n_slices`` slices of the test split of ``test``
   (complex, known phase), each at every R in ``accels`` with a fixed 1D random mask (fastMRI-like,
   ACS as in training), the config's coils (fixed rotation per slice) and noise; with ``real``
   (a folder with BART ``img`` / ``ksp``, e.g. ``../shared/data/brain-8coil-slice``): the real
   complex image (map 0; real phase), resized in k-space to the test size, with simulated coils
   at each R, and the REAL acquired k-space (its own Poisson-disc pattern, ESPIRiT maps, native
   size; reference: ``img``, magnitudes aligned by a real least-squares factor).
3. **Methods**: every trained network, zero-filled, L1-wavelet (lambda per R tuned on a
   validation slice) and, with ``prior``, the fast posterior sampler's MMSE.
4. **Metrics** on magnitudes (:mod:`mriprior.metrics`): PSNR, SSIM, NMSE per case; mean and std
   over the test slices per method and R, and per source the seed-to-seed range of the mean PSNR.
5. **Hallucinations** (:func:`hallucinations`): connected structures (8-connected, at least
   ``min_area`` pixels) where the output is brighter than the reference by more than ``k`` robust
   standard deviations of the error inside the object: things the network adds that are not
   there.

Writes ``OUT/downstream.json`` and ``OUT/downstream.png``; the CLI puts the table into a
markdown file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from mriprior.data.dataset import open_dataset
from mriprior.errors import InputError
from mriprior.io.files import atomic_write_json
from mriprior.metrics import hallucinations, nmse, psnr, ssim
from mriprior.physics.fft import fourier_resize
from mriprior.unrolled.networks import sense_reduce
from mriprior.unrolled.synth import Synthesizer, make_mask
from mriprior.unrolled.train import load_network, load_unrolled_config, train_unrolled
from mriprior.experiments.report import save_figure
from mriprior.experiments.recon_cases import magnitude_lsq, real_case
from mriprior.recon.classical import pics
from mriprior.recon.posterior import fast_posterior
from mriprior.recon.priors import load_image_prior

__all__ = ["run_downstream", "table"]


# ----------------------------------------------------------------------------- test data


def test_cases(test, n_slices, accels, spec, shape=None, real=None, seed=0):
    """The fixed test set (see the module docstring): a list of dicts with ``name``, ``accel``,
    ``ref (1, y, x)``, ``ksp``, ``maps``, ``mask``."""
    ds = open_dataset(test)
    if ds.kind != "complex":
        raise InputError(f"--test {test}: needs a complex dataset (known phase), got {ds.kind!r}")
    idx = ds.indices("test")
    if len(idx) == 0:
        raise InputError(f"--test {test}: the test split is empty")
    pick = [int(idx[int(i)]) for i in np.linspace(0, len(idx) - 1, min(n_slices, len(idx)))]
    shape = tuple(shape or ds.shape)
    refs = [("simulated", i, torch.from_numpy(np.array(ds[i])).to(torch.complex64))
            for i in pick]
    if shape != tuple(ds.shape):
        refs = [(k, i, fourier_resize(r, shape)) for k, i, r in refs]
    acq = real_case(real) if real else None
    if acq is not None:
        refs.append(("real-phase", "real", fourier_resize(acq["ref"][0], shape)))
    synth = Synthesizer({**spec, "masks": ["random"], "accels": list(accels)}, shape, seed=seed,
                        bank=1)
    cases = []
    for j, (kind, i, ref) in enumerate(refs):
        ref = (ref / ref.abs().max())[None]
        for a in accels:
            mask = make_mask("random", shape, a, seed=1000 * seed + j,
                             acs_fraction=spec["acs_fraction"])[None, None]
            g = torch.Generator().manual_seed(7919 * seed + 31 * j + int(a))
            ksp, maps, _ = synth(ref, g)
            cases.append({"name": f"{kind} {i}", "kind": kind, "accel": float(a), "ref": ref,
                          "ksp": ksp * mask, "maps": maps, "mask": mask})
    if acq is not None:
        scale = float(sense_reduce(acq["ksp"], acq["maps"]).abs().max())
        cases.append({"name": "real acquired k-space", "kind": "real-acquired",
                      "accel": acq["accel"], "ref": acq["ref"] / acq["ref"].abs().max(),
                      "ksp": acq["ksp"] / scale, "maps": acq["maps"], "mask": acq["mask"],
                      "lsq": True})
    return cases


# ----------------------------------------------------------------------------- measures


def _scores(case, img):
    ref = case["ref"]
    x = img
    if case.get("lsq"):
        # Real acquired data: the reference (BART's reconstruction) has an unrelated global
        # scale and lives in the phase gauge of BART's ESPIRiT maps, ours in our maps' gauge (a
        # smooth phase map apart), so align magnitudes by the real least-squares factor, as
        # `mriprior.metrics` does with scale="lsq"; a complex factor would be shrunk by the
        # gauge difference.
        x = magnitude_lsq(ref, x) * x
    count, _ = hallucinations(x[0], ref[0])
    return {"psnr": float(psnr(ref, x)), "ssim": float(ssim(ref, x)),
            "nmse": float(nmse(ref, x)), "hallucinations": count}, x


def _l1(case, lam):
    return pics(case["ksp"], case["maps"], "l1", lam, 100, mask=case["mask"], scaling=None)[0]


def _validation_cases(test, shape, spec, accels, seed):
    """One slice of the validation split (the train split if there is none) at every R."""
    ds = open_dataset(test)
    idx = ds.indices("val") if len(ds.indices("val")) else ds.indices("train")
    ref = torch.from_numpy(np.array(ds[int(idx[0])])).to(torch.complex64)
    ref = fourier_resize(ref, shape) if tuple(ref.shape) != tuple(shape) else ref
    ref = (ref / ref.abs().max())[None]
    synth = Synthesizer({**spec, "masks": ["random"]}, shape, seed=seed, bank=1)
    cases = []
    for a in accels:
        mask = make_mask("random", shape, a, seed=seed, acs_fraction=spec["acs_fraction"])
        k, m, _ = synth(ref, torch.Generator().manual_seed(seed))
        cases.append({"accel": float(a), "ref": ref, "ksp": k * mask[None, None], "maps": m,
                      "mask": mask[None, None]})
    return cases


def _tune_l1(cases, lams=(0.001, 0.003, 0.01, 0.03)):
    best = {}
    for c in cases:
        vals = [(float(psnr(c["ref"], _l1(c, lam))), lam) for lam in lams]
        best[c["accel"]] = max(vals)[1]
    return best


# ----------------------------------------------------------------------------- the run
def _evaluate(cases, lam, lam_acq, ip, loaded, shown, rows, images, log):
    """Every method on every case: score rows into ``rows``, the ``shown`` cases' aligned
    images into ``images`` (for the figure)."""
    for ci, c in enumerate(cases):
        outs = {"zero-filled": sense_reduce(c["ksp"], c["maps"]),
                "L1-wavelet": _l1(c, lam.get(c["accel"], lam_acq))}
        if ip is not None:
            outs["prior (fast MMSE)"] = fast_posterior(c["ksp"], c["maps"], ip, mask=c["mask"],
                                                       chains=2, nfe=30, seed=ci).mmse
        for (name, s), net in loaded.items():
            outs[f"{name}|{s}"] = net(c["ksp"], c["maps"], c["mask"])
        for method, img in outs.items():
            sc, aligned = _scores(c, img)
            src, _, seed = method.partition("|")
            rows.append({"case": c["name"], "kind": c["kind"], "accel": c["accel"],
                         "method": src, "seed": int(seed) if seed else None, **sc})
            if ci in shown:
                images.setdefault(ci, {"title": f"{shown[ci]}, R = {c['accel']:.1f}",
                                       "ref": c["ref"][0], "out": {}})["out"][method] = aligned[0]
        log(f"  case {ci + 1}/{len(cases)}: {c['name']} R {c['accel']:.1f}")


def run_downstream(config, sources: dict, test, out, seeds=(0, 1), accels=(4.0, 8.0),
                   n_slices=16, real=None, prior=None, steps=None, val_seed=99,
                   log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not sources:
        raise InputError("--source: give at least one NAME=DATASET")
    base = load_unrolled_config(config, {"train.steps": steps} if steps else None)
    spec = base["simulation"]
    for name, path in sources.items():  # fail now, not after hours of training other sources
        if open_dataset(path).kind != "complex":
            raise InputError(f"--source {name}={path}: needs a complex dataset (magnitude + "
                             "that source's phase, e.g. from `mriprior augment`)")
    nets = {}
    for name, path in sources.items():
        for s in seeds:
            over = {"data.path": str(Path(path).resolve()), "train.seed": int(s),
                    "train.output": str((out / "nets" / f"{name}-s{s}").resolve())}
            if steps:
                over["train.steps"] = int(steps)
            cfg = load_unrolled_config(config, over)
            net_path = Path(cfg["train"]["output"]) / "net"
            done = net_path.with_suffix(".json")
            if not (done.exists() and json.loads(done.read_text()).get("step")
                    == cfg["train"]["steps"]):
                log(f"training {name} seed {s} ({cfg['train']['steps']} steps) on {path}")
                t = time.perf_counter()
                train_unrolled(cfg, resume=True)
                log(f"  done in {time.perf_counter() - t:.0f} s")
            nets[(name, s)] = net_path
    shape = tuple(base["data"]["crop"] or open_dataset(next(iter(sources.values()))).shape)
    cases = test_cases(test, n_slices, accels, spec, shape=shape, real=real)
    lam = _tune_l1(_validation_cases(test, shape, spec, accels, val_seed))
    lam_acq = lam[max(lam)]
    log(f"L1-wavelet lambda per R (validation slice): {lam}")
    loaded = {key: load_network(p)[0] for key, p in nets.items()}
    ip = None
    if prior:
        ip = load_image_prior(prior)
    # figure: the first simulated case at the highest R, and the last case if it is real
    shown = {next(i for i, c in enumerate(cases)
                  if c["kind"] == "simulated" and c["accel"] == max(accels)): "simulated"}
    if cases[-1]["kind"] != "simulated":
        shown[len(cases) - 1] = cases[-1]["name"]
    rows, images = [], {}
    with torch.no_grad():  # local: never leave autograd off for the caller
        _evaluate(cases, lam, lam_acq, ip, loaded, shown, rows, images, log)
    res = {"config": str(config), "sources": {k: str(v) for k, v in sources.items()},
           "seeds": list(seeds), "accels": list(accels), "test": str(test), "real": real,
           "prior": prior, "l1_lambda": {str(k): v for k, v in lam.items()},
           "network": load_network(next(iter(nets.values())))[1]["network"],
           "steps": base["train"]["steps"], "rows": rows, "summary": summarise(rows)}
    atomic_write_json(out / "downstream.json", res, allow_nan=True)
    figure(out / "downstream.png", [images[i] for i in sorted(images)])
    return res


def summarise(rows):
    """Per (case kind, R, method): mean / std over test cases (and seeds) of each metric, the
    per-seed mean PSNRs and the hallucination total."""
    groups = {}
    for r in rows:
        groups.setdefault((r["kind"], r["accel"], r["method"]), []).append(r)
    out = []
    for (kind, a, method), rs in groups.items():
        entry = {"kind": kind, "accel": a, "method": method, "n": len(rs)}
        for m in ("psnr", "ssim", "nmse"):
            v = np.array([r[m] for r in rs])
            entry[m] = float(v.mean())
            entry[m + "_std"] = float(v.std())
        seeds = sorted({r["seed"] for r in rs if r["seed"] is not None})
        entry["seed_psnr"] = [float(np.mean([r["psnr"] for r in rs if r["seed"] == s]))
                              for s in seeds]
        entry["hallucinations"] = int(sum(r["hallucinations"] for r in rs))
        out.append(entry)
    return out


def figure(path, panels):
    """Rows per panel: magnitude (yellow box: zoom), zoom, |error| x 5 with the
    hallucinated structures outlined (cyan). Networks: seed 0 of each source."""
    import matplotlib.pyplot as plt

    methods = [m for m in panels[0]["out"] if "|" not in m or m.endswith("|0")]
    cols = 1 + len(methods)
    fig, axes = plt.subplots(3 * len(panels), cols, figsize=(1.9 * cols, 5.8 * len(panels)),
                             squeeze=False)
    for p, panel in enumerate(panels):
        ref = panel["ref"].abs().numpy()
        ny, nx = ref.shape
        zy, zx = slice(ny // 4, ny // 2), slice(nx // 4, nx // 2)
        vmax = ref.max()
        for j, m in enumerate(["reference"] + methods):
            img = ref if m == "reference" else panel["out"][m].abs().numpy()
            a0, a1, a2 = axes[3 * p, j], axes[3 * p + 1, j], axes[3 * p + 2, j]
            a0.imshow(img, cmap="gray", vmin=0, vmax=vmax)
            a0.add_patch(plt.Rectangle((zx.start - 0.5, zy.start - 0.5), nx // 4, ny // 4,
                                       fill=False, ec="y", lw=0.8))
            a1.imshow(img[zy, zx], cmap="gray", vmin=0, vmax=vmax)
            a2.imshow(np.abs(img - ref), cmap="magma", vmin=0, vmax=0.2 * vmax)
            if m == "reference":
                a0.set_title(f"reference\n{panel['title']}", fontsize=7)
            else:
                n, labels = hallucinations(img, ref)
                if n:
                    a2.contour(labels > 0, levels=[0.5], colors="c", linewidths=0.6)
                a0.set_title(f"{m.split('|')[0]}\n{float(psnr(ref, img)):.1f} dB", fontsize=7)
                a2.set_title(f"|error| x5, {n} halluc.", fontsize=6)
            for a in (a0, a1, a2):
                a.set_axis_off()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def table(res, command) -> tuple[str, str]:
    head = ("## Downstream test of phase sources: unrolled networks trained on synthesised "
            "k-space (`mriprior experiment downstream`)")
    net = res["network"]
    lines = [head, "", f"Network: {net['type']} ({', '.join(f'{k} {v}' for k, v in net.items() if k != 'type')}), "
             f"{res['steps']} steps per network, seeds {res['seeds']}, identical budgets. "
             "Entries: PSNR dB / SSIM, mean +- std over the test cases (and seeds); seeds: "
             "the mean PSNR of each seed; halluc.: structures added by the method over all "
             "cases (see `hallucinations`). L1-wavelet lambda per R (tuned on a validation "
             f"slice): {res['l1_lambda']}.", ""]
    for kind in ("simulated", "real-phase", "real-acquired"):
        ents = [e for e in res["summary"] if e["kind"] == kind]
        if not ents:
            continue
        title = {"simulated": "held-out simulated anatomy (simulated phase, known)",
                 "real-phase": "the real slice's complex image (REAL phase), simulated coils",
                 "real-acquired": "the real slice's acquired k-space (real coils, Poisson-disc)"}
        lines += [f"**{title[kind]}**", "",
                  "| R | method | PSNR dB | SSIM | NMSE | seeds (PSNR) | halluc. |",
                  "|---|---|---|---|---|---|---|"]
        for e in sorted(ents, key=lambda e: (e["accel"], -e["psnr"])):
            seeds = ", ".join(f"{v:.2f}" for v in e["seed_psnr"])
            lines.append(f"| {e['accel']:.1f} | {e['method']} | {e['psnr']:.2f} +- "
                         f"{e['psnr_std']:.2f} | {e['ssim']:.3f} +- {e['ssim_std']:.3f} | "
                         f"{e['nmse']:.4f} | {seeds} | {e['hallucinations']} |")
        lines.append("")
    lines += ["![downstream](figures/downstream.png)", "", f"Command: `{command}`", ""]
    return head, "\n".join(lines)

