"""How close is each phase-augmentation method's phase to a known phase? (issue 6, evaluation)

Cases: held-out complex slices with known phase, i.e. the test split of a complex dataset (the
open corpus with simulated phase, ``mriprior data simulate``), plus, with ``real=``, the real
slice ``DATA/img`` (ESPIRiT map 0 of a real acquisition: real phase). Every method sees only the
magnitude; its phase is compared with the known one inside :func:`comparison_mask` (the brain,
without scalp and skull; dark pixels excluded):

Methods: zero, smooth, and those whose model is given: langevin (``prior``), gan (``gan``),
conditional (``cond_prior``).

* **phase error**, magnitude-weighted mean circular error ``sum w |wrap(phi - phi_ref)| / sum w``
  (``w = |ref|``), raw and after removing the best global offset (a generated phase has an
  arbitrary global phase, which no reconstruction can see); 0 = identical, ``pi / 2`` = no
  relation (uniformly random error);
* **spectrum distance**, the mean absolute difference of the log10 radially averaged power
  spectra of ``mask * exp(i phase)`` (:func:`~mriprior.experiments.phase_stats.radial_spectrum`,
  the comparison of ``docs/simulation.md``): does the phase have the right texture, wherever
  its features lie.

Writes ``OUT/phase_eval.png`` (magnitude | reference phase | each method's phase, per case),
``OUT/phase_eval.json``; the CLI adds the table to ``docs/experiments.md``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from mriprior.augment.phase import (conditional_phase, gan_phase, langevin_phase,
                                    smooth_phase, zero_phase)
from mriprior.errors import InputError
from mriprior.io.files import atomic_write_json
from mriprior.experiments.phase_stats import (_wrap, comparison_mask, load_reference,
                                              radial_spectrum)
from mriprior.experiments.report import save_figure
from mriprior.data.dataset import open_dataset
from mriprior.priors.export import load_prior
from mriprior.recon.priors import DiffusionPrior

__all__ = ["phase_error", "spectrum_distance", "run_phase_eval", "table"]


def phase_error(est: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> dict:
    """Magnitude-weighted mean circular phase error (rad) inside ``mask``, per item, raw and
    with the best global offset removed. ``est``, ``ref`` complex ``(batch, y, x)``."""
    w = ref.abs().to(torch.float64) * mask
    d = torch.angle(est.to(torch.complex128) * ref.to(torch.complex128).conj())
    raw = (w * d.abs()).flatten(1).sum(1) / w.flatten(1).sum(1)
    # best offset for the weighted L1 circular error: take the weighted circular mean
    off = torch.angle((w * torch.exp(1j * d)).flatten(1).sum(1))
    cen = (w * _wrap(d - off.reshape(-1, 1, 1)).abs()).flatten(1).sum(1) / w.flatten(1).sum(1)
    return {"raw": raw.tolist(), "offset_removed": cen.tolist()}


def spectrum_distance(est: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Mean |log10 P_est - log10 P_ref| over the radial bins, per item."""
    _, pe = radial_spectrum(torch.angle(est), mask)
    _, pr = radial_spectrum(torch.angle(ref), mask)
    tiny = 1e-30
    return (torch.log10(pe + tiny) - torch.log10(pr + tiny)).abs().mean(1).tolist()


def _cases(data, n_slices, real):
    refs, names = [], []
    if data is not None:
        ds = open_dataset(data)
        if ds.kind != "complex":
            raise InputError(f"{data}: a {ds.kind!r} dataset; the evaluation needs known phase "
                             "(a complex dataset)")
        idx = ds.indices("test")
        if len(idx) == 0:
            raise InputError(f"{data}: no test split")
        pick = idx[np.linspace(len(idx) // 4, 3 * len(idx) // 4 - 1, n_slices).round()
                   .astype(int)] if n_slices > 1 else idx[len(idx) // 2: len(idx) // 2 + 1]
        for i in pick:
            refs.append(torch.from_numpy(np.array(ds[int(i)])).to(torch.complex64))
            names.append(f"test slice {int(i)} (simulated phase)")
    if real is not None:
        r = load_reference(real)
        refs.append(r)
        names.append(f"real slice {r.shape[-2]}x{r.shape[-1]} (real phase)")
    if not refs:
        raise InputError("give a complex dataset and/or a real slice")
    return list(zip(names, refs))


def _methods(prior, cond_prior, gan, langevin_kw, cond_kw):
    m = {"zero": lambda mag, seed: zero_phase(mag),
         "smooth": lambda mag, seed: smooth_phase(mag, [seed + j for j in range(len(mag))])}
    if prior is not None:
        m["langevin"] = lambda mag, seed: langevin_phase(prior, mag, seed=seed, **langevin_kw)
    if gan is not None:
        m["gan"] = lambda mag, seed: gan_phase(gan, mag, seed=seed)
    if cond_prior is not None:
        m["conditional"] = lambda mag, seed: conditional_phase(cond_prior, mag, seed=seed,
                                                               **cond_kw)
    return m


def run_phase_eval(out_dir, data=None, real=None, prior=None, cond_prior=None, gan=None,
                   n_slices: int = 4, samples: int = 1, seed: int = 0,
                   langevin_kw: dict | None = None, cond_kw: dict | None = None,
                   device="cpu", log=print) -> dict:
    """Evaluate every available method on every case; ``samples`` draws per method and case
    (numbers averaged over them). Returns (and writes) the results dict."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = cp = None
    if prior is not None:
        net, meta = load_prior(prior, device=device)
        p = DiffusionPrior(net, meta)
    if cond_prior is not None:
        net, meta = load_prior(cond_prior, device=device)
        cp = DiffusionPrior(net, meta)
    g = load_prior(gan, device=device)[0] if gan is not None else None
    methods = _methods(p, cp, g, langevin_kw or {}, cond_kw or {})
    cases = _cases(data, n_slices, real)
    results = {"cases": [n for n, _ in cases], "methods": list(methods), "samples": samples,
               "prior": prior, "conditional": cond_prior, "gan": gan, "langevin": langevin_kw or {},
               "per_case": []}
    shown = []
    for ci, (name, ref) in enumerate(cases):
        log(f"case {ci + 1}/{len(cases)}: {name}")
        ref = ref.to(device)
        mag = ref.abs()[None]
        mask = comparison_mask(mag.cpu()).to(device)
        row = {"case": name, "mask_pixels": int(mask.sum())}
        imgs = {}
        for mname, fn in methods.items():
            t = time.perf_counter()
            mags = mag.expand(samples, -1, -1).contiguous()
            with torch.no_grad():
                est = fn(mags, seed)
            dt = time.perf_counter() - t
            refs = ref[None].expand_as(est)
            masks = mask.expand(samples, -1, -1)
            err = phase_error(est, refs, masks)
            row[mname] = {"phase_error": float(np.mean(err["raw"])),
                          "phase_error_offset_removed": float(np.mean(err["offset_removed"])),
                          "spectrum_distance": float(np.mean(spectrum_distance(est, refs,
                                                                                 masks))),
                          "seconds": dt}
            imgs[mname] = est[0].cpu()
            log(f"{name:>40} {mname:>12}: error {row[mname]['phase_error']:.3f} rad "
                f"(offset removed {row[mname]['phase_error_offset_removed']:.3f}), spectrum "
                f"distance {row[mname]['spectrum_distance']:.3f} ({dt:.1f} s)")
        results["per_case"].append(row)
        shown.append((name, ref.cpu(), mask.cpu(), imgs))
    results["mean"] = {m: {k: float(np.mean([r[m][k] for r in results["per_case"]]))
                           for k in ("phase_error", "phase_error_offset_removed",
                                     "spectrum_distance")} for m in methods}
    _figure(out_dir / "phase_eval.png", shown)
    atomic_write_json(out_dir / "phase_eval.json", results, allow_nan=True)
    return results


def _figure(path: Path, shown) -> None:
    import matplotlib.pyplot as plt

    cols = 2 + len(shown[0][3])
    fig, ax = plt.subplots(len(shown), cols, figsize=(2.2 * cols, 2.3 * len(shown)),
                           squeeze=False)
    for i, (name, ref, mask, imgs) in enumerate(shown):
        mag = ref.abs().numpy()
        ax[i, 0].imshow(mag, cmap="gray", vmin=0, vmax=float(np.percentile(mag, 99.5)))
        ax[i, 0].set_ylabel(name.split(" (")[0], fontsize=7)
        panels = [("reference", ref)] + list(imgs.items())
        for j, (title, img) in enumerate(panels, start=1):
            ph = np.where(mag > 0.05 * mag.max(), torch.angle(img).numpy(), np.nan)
            ax[i, j].imshow(ph, cmap="twilight", vmin=-math.pi, vmax=math.pi)
            if i == 0:
                ax[i, j].set_title(f"{title} phase", fontsize=8)
        if i == 0:
            ax[i, 0].set_title("magnitude", fontsize=8)
        for a in ax[i]:
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def table(res: dict, command: str) -> tuple[str, str]:
    """``(heading, markdown section)`` of a :func:`run_phase_eval` result."""
    head = "## Phase of magnitude images: error against a known phase (`mriprior experiment phase`)"
    lines = [head, "", "Magnitude-weighted mean circular phase error inside the brain (rad; "
             "pi/2 = unrelated), raw / with the global offset removed, and the distance of the "
             "phase spectra (mean |log10 P - log10 P_ref| over radial bins). "
             f"{res['samples']} draw(s) per method and case.", "",
             "| case | " + " | ".join(res["methods"]) + " |",
             "|---|" + "---|" * len(res["methods"])]
    for row in res["per_case"] + [dict(res["mean"], case="**mean**")]:
        cells = [f"{row[m]['phase_error']:.3f} / {row[m]['phase_error_offset_removed']:.3f} / "
                 f"{row[m]['spectrum_distance']:.2f}" for m in res["methods"]]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    lines += ["", "![phase evaluation](figures/phase_eval.png)", "", f"Command: `{command}`",
              ""]
    return head, "\n".join(lines)
