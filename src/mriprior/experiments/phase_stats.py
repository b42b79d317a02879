"""Real vs simulated image phase: statistics, figure and numbers for ``docs/simulation.md``.

Usage::

    mriprior experiment phase-stats --data ../shared/data/brain-8coil-slice \\
        --out docs/figures [--seeds 16]

Reads ``DATA/img`` (a BART complex image ``1 x Y x X x 1 x maps``; ESPIRiT map 0 is used), takes
its magnitude, simulates phases for it with :mod:`mriprior.data.simulate` (seeds ``0 .. n-1``,
default :class:`~mriprior.data.simulate.PhaseModel`), and compares inside the object
(:func:`comparison_mask`):

(i) the radially averaged power spectrum of ``mask * exp(i phase)`` (:func:`radial_spectrum`);
(ii) the distribution of the wrapped phase-gradient magnitude, rad / pixel
    (:func:`gradient_magnitude`);
(iii) the phase structure function, the median wrapped phase difference vs distance
     (:func:`structure_function`): the phase gradient across scales.

The simulated images get complex Gaussian noise of the real image's level (estimated from its
background, :func:`noise_sigma`) before the statistics are taken, so the phase noise in dark
pixels is comparable; noise-free numbers are reported as well. Writes
``OUT/simulation_phase.png``, prints a summary table, and with ``--json FILE`` writes all numbers
(per seed, with the drawn parameters).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from mriprior.data.simulate import PhaseModel, complex_from_magnitude
from mriprior.physics.phase import gaussian_blur, segment
from mriprior.errors import InputError
from mriprior.experiments.report import save_figure
from mriprior.experiments.recon_cases import real_image

__all__ = ["comparison_mask", "wrapped_gradient", "gradient_magnitude", "radial_spectrum",
           "structure_function", "noise_sigma", "noise_sigma_inside", "phase_statistics",
           "load_reference", "model_with", "run", "summary_lines"]


def _wrap(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def comparison_mask(magnitude: torch.Tensor, level: float = 0.2,
                    margin: float = 0.06) -> torch.Tensor:
    """Where phase statistics are taken: ``(batch, y, x)`` bool.

    The tissue of :func:`~mriprior.data.simulate.segment` (support minus air and bone) at
    least ``margin`` (FOV fraction, default the bone band) inside the support's boundary -- the
    brain, without scalp and skull, whose fat and bone phase the model does not try to
    reproduce -- where the magnitude (blurred, sigma 1 pixel) exceeds ``level`` times its
    99.5th percentile (dark pixels have noise-dominated phase in real data).
    """
    m = magnitude if magnitude.ndim == 3 else magnitude[None]
    m = m.to(torch.float32)
    seg = segment(m)
    r = int(round(margin * max(m.shape[-2:])))
    inner = seg["support"]
    if r > 0:
        inner = -torch.nn.functional.max_pool2d(-inner[:, None].float(), 2 * r + 1, 1, r)[:, 0] > 0
    light = gaussian_blur(m, 1.0)
    top = torch.quantile(light.flatten(1), 0.995, dim=1).reshape(-1, 1, 1)
    return seg["tissue"] & inner & (light > level * top)


def wrapped_gradient(phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences wrapped to ``[-pi, pi)``: ``(gy, gx)``, each ``(batch, y-1, x-1)``."""
    gy = _wrap(phase[..., 1:, :-1] - phase[..., :-1, :-1])
    gx = _wrap(phase[..., :-1, 1:] - phase[..., :-1, :-1])
    return gy, gx


def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose +y and +x neighbours are also in ``mask``: ``(batch, y-1, x-1)``."""
    return mask[..., :-1, :-1] & mask[..., 1:, :-1] & mask[..., :-1, 1:]


def gradient_magnitude(phase: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Per item, the wrapped phase-gradient magnitudes ``sqrt(gy^2 + gx^2)`` (rad / pixel)
    at the pixels of ``mask`` whose two forward neighbours are in ``mask`` too."""
    gy, gx = wrapped_gradient(phase)
    g = torch.sqrt(gy ** 2 + gx ** 2)
    pm = _pair_mask(mask)
    return [g[i][pm[i]] for i in range(g.shape[0])]


def radial_spectrum(phase: torch.Tensor, mask: torch.Tensor, n_bins: int = 40,
                    taper: float = 2.0):
    """Radially averaged power spectrum of ``w * exp(i phase)``, normalised to sum 1.

    ``w`` is the mask blurred with a Gaussian of ``taper`` pixels (softens the mask's edges,
    whose spectrum would otherwise dominate the high frequencies). Returns ``(f, p)``: bin
    centres in cycles / pixel (0 .. 0.5) ``(n_bins,)`` and power ``(batch, n_bins)``. ``w``
    is common to real and simulated phases of the same magnitude, so differences come from
    the phase.
    """
    w = gaussian_blur(mask.to(torch.float64), taper)
    z = w.to(torch.complex128) * torch.exp(1j * phase.to(torch.float64))
    P = torch.fft.fftshift(torch.fft.fft2(z), dim=(-2, -1)).abs() ** 2
    ny, nx = z.shape[-2:]
    fy = torch.fft.fftshift(torch.fft.fftfreq(ny, dtype=torch.float64))[:, None]
    fx = torch.fft.fftshift(torch.fft.fftfreq(nx, dtype=torch.float64))[None, :]
    r = torch.sqrt(fy ** 2 + fx ** 2).flatten()
    edges = torch.linspace(0, 0.5, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(r, edges[1:-1])
    keep = r <= 0.5
    Pf = P.flatten(1)[:, keep]
    idx = idx[keep]
    tot = torch.zeros(P.shape[0], n_bins, dtype=torch.float64).index_add_(1, idx, Pf)
    cnt = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(r[keep]))
    p = tot / cnt.clamp_min(1)
    return 0.5 * (edges[1:] + edges[:-1]), p / p.sum(-1, keepdim=True)


LAGS = (1, 2, 4, 8, 16, 32)


def structure_function(phase: torch.Tensor, mask: torch.Tensor, lags=LAGS) -> torch.Tensor:
    """Median wrapped phase difference ``|wrap(phase(p + d) - phase(p))|`` vs lag ``d`` (pixels).

    Pairs along y and along x with both ends in ``mask`` are pooled. A phase-gradient
    statistic across scales: at lag 1 it is dominated by noise and fine structure, at larger
    lags by the smooth fields (noise adds a constant ~ its phase spread). Returns ``(batch,
    len(lags))``; NaN where no pair exists.
    """
    out = torch.full((phase.shape[0], len(lags)), float("nan"), dtype=torch.float64)
    for j, d in enumerate(lags):
        dy = _wrap(phase[..., d:, :] - phase[..., :-d, :]).abs()
        my = mask[..., d:, :] & mask[..., :-d, :]
        dx = _wrap(phase[..., :, d:] - phase[..., :, :-d]).abs()
        mx = mask[..., :, d:] & mask[..., :, :-d]
        for i in range(phase.shape[0]):
            v = torch.cat([dy[i][my[i]], dx[i][mx[i]]])
            if v.numel():
                out[i, j] = float(v.median())
    return out


def noise_sigma(image: torch.Tensor, support: torch.Tensor) -> float:
    """Complex noise sigma (``E|n|^2``) of a complex image from its nonzero background pixels.

    Background = outside a 5-pixel dilation of the support, excluding exact zeros (pixels
    cropped by ESPIRiT). ``|n|^2`` is exponential with mean ``sigma^2``: ``sigma^2 =
    median(|n|^2) / ln 2`` (robust to stray signal).
    """
    sup = torch.nn.functional.max_pool2d(support[None, None].float(), 11, 1, 5)[0, 0] > 0
    bg = image[~sup & (image != 0)]
    if bg.numel() < 100:
        raise InputError(f"only {bg.numel()} background pixels to estimate the noise from")
    return float(torch.sqrt(bg.abs().pow(2).median() / math.log(2)))


def noise_sigma_inside(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Upper bound of the complex noise sigma inside ``mask`` from second differences.

    ``d = z[i+1] - 2 z[i] + z[i-1]`` along x and y has ``E|d|^2 = 6 sigma^2`` for white
    noise; anatomy adds to it, so ``sqrt(median(|d|^2) / (6 ln 2))`` over ``mask`` bounds
    sigma from above.
    """
    dx = image[:, 2:] - 2 * image[:, 1:-1] + image[:, :-2]
    dy = image[2:] - 2 * image[1:-1] + image[:-2]
    v = torch.cat([dx[mask[:, 1:-1]], dy[mask[1:-1]]]).abs().pow(2)
    return float(torch.sqrt(v.median() / (6 * math.log(2))))


def load_reference(data: str | Path) -> torch.Tensor:
    """``DATA/img`` (BART ``1 x Y x X x 1 x maps``) -> ESPIRiT map 0 as ``(y, x)`` complex64."""
    return real_image(data)


def _summary(values: list[float], real: float) -> dict:
    """Mean / min / max over seeds, and the fraction of seeds below the real value."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "below_real": float((v < real).mean()), "values": v.tolist()}


def phase_statistics(phase: torch.Tensor, mask: torch.Tensor) -> dict:
    """Per item: median / 90th percentile of the gradient magnitude, correlation length,
    spectrum; ``phase`` and ``mask`` ``(batch, y, x)``."""
    grads = gradient_magnitude(phase, mask)
    f, spec = radial_spectrum(phase, mask)
    sf = structure_function(phase, mask)
    return {"median": [float(g.median()) for g in grads],
            "p90": [float(torch.quantile(g.double(), 0.9)) for g in grads],
            "grads": grads, "freq": f, "spectrum": spec, "structure": sf,
            "sf8": sf[:, LAGS.index(8)].tolist(), "sf32": sf[:, LAGS.index(32)].tolist()}


def _high_freq_fraction(f, spec, cutoff: float = 0.05) -> list[float]:
    return spec[:, f > cutoff].sum(-1).tolist()


def run(data: str | Path, out: str | Path, n_seeds: int = 16, model: PhaseModel = PhaseModel(),
        n_show: int = 3, json_path: str | Path | None = None, noise: float | None = None) -> dict:
    """Compute everything, write the figure (and the numbers as JSON); returns the numbers."""
    ref = load_reference(data)
    mag = ref.abs()[None]
    mask = comparison_mask(mag)
    support = segment(mag)["support"][0]
    sigma = noise_sigma(ref, support) if noise is None else float(noise)
    real = phase_statistics(torch.angle(ref)[None], mask)
    seeds = list(range(n_seeds))
    img, params = complex_from_magnitude(mag.expand(n_seeds, -1, -1), seeds=seeds, model=model)
    g = torch.Generator().manual_seed(12345)
    noise_img = sigma * torch.randn(img.shape, dtype=torch.complex64, generator=g)
    sim_clean = phase_statistics(torch.angle(img), mask.expand(n_seeds, -1, -1))
    sim = phase_statistics(torch.angle(img + noise_img), mask.expand(n_seeds, -1, -1))
    res = {
        "data": str(data), "shape": list(mag.shape[-2:]), "mask_pixels": int(mask.sum()),
        "noise_sigma": sigma, "snr_median_in_mask": float(mag[mask].median() / sigma),
        "noise_sigma_inside_upper_bound": noise_sigma_inside(ref, mask[0]),
        "model": model.to_dict(), "seeds": seeds, "params": [p.to_dict() for p in params],
        "real": {"median_grad": real["median"][0], "p90_grad": real["p90"][0],
                 "sf8": real["sf8"][0], "sf32": real["sf32"][0],
                 "hf_fraction": _high_freq_fraction(real["freq"], real["spectrum"])[0],
                 "hf25_fraction": _high_freq_fraction(real["freq"], real["spectrum"], 0.25)[0]},
    }
    for name, st in (("sim_noisy", sim), ("sim_clean", sim_clean)):
        per_seed = {"median_grad": st["median"], "p90_grad": st["p90"], "sf8": st["sf8"],
                    "sf32": st["sf32"],
                    "hf_fraction": _high_freq_fraction(st["freq"], st["spectrum"]),
                    "hf25_fraction": _high_freq_fraction(st["freq"], st["spectrum"], 0.25)}
        res[name] = {k: _summary(v, res["real"][k]) for k, v in per_seed.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _figure(out / "simulation_phase.png", ref, img[:n_show], mask[0], real, sim, sim_clean)
    if json_path is not None:
        with open(json_path, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


def _figure(path: Path, ref, sims, mask, real, sim, sim_clean) -> None:
    import matplotlib.pyplot as plt

    n = sims.shape[0]
    fig = plt.figure(figsize=(11.0, 6.6))
    top = fig.add_gridspec(1, n + 2, left=0.02, right=0.98, top=0.95, bottom=0.55, wspace=0.05)
    bot = fig.add_gridspec(1, 3, left=0.07, right=0.98, top=0.45, bottom=0.09, wspace=0.3)
    mag = ref.abs()
    show = (mag > 0.05 * torch.quantile(mag.flatten(), 0.995)).numpy()
    panels = [("magnitude (stats mask)", mag.numpy(), "gray"),
              ("real phase", ref.angle().numpy(), "twilight")]
    panels += [(f"simulated, seed {i}", s.angle().numpy(), "twilight") for i, s in enumerate(sims)]
    for j, (title, a, cmap) in enumerate(panels):
        ax = fig.add_subplot(top[0, j])
        a = a if cmap == "gray" else np.where(show, a, np.nan)
        ax.imshow(a, cmap=cmap, vmin=None if cmap == "gray" else -np.pi,
                  vmax=None if cmap == "gray" else np.pi, interpolation="nearest")
        if j == 0:
            ax.contour(mask.numpy(), levels=[0.5], colors="y", linewidths=0.6)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    kw_sim = dict(color="tab:blue", alpha=0.3, lw=0.8)
    kw_clean = dict(color="tab:green", lw=1.2, ls="--")
    kw_real = dict(color="k", lw=1.6)
    # (i) spectrum
    ax = fig.add_subplot(bot[0, 0])
    f = real["freq"].numpy()
    for k, s in enumerate(sim["spectrum"]):
        ax.semilogy(f, s.numpy(), label="simulated + noise" if k == 0 else None, **kw_sim)
    ax.semilogy(f, sim_clean["spectrum"].mean(0).numpy(), label="simulated, noise-free (mean)",
                **kw_clean)
    ax.semilogy(f, real["spectrum"][0].numpy(), label="real", **kw_real)
    ax.set_xlabel("spatial frequency (cycles / pixel)", fontsize=8)
    ax.set_title("(i) power spectrum of w exp(i phase)", fontsize=8)
    # (ii) gradient histogram
    ax = fig.add_subplot(bot[0, 1])
    bins = np.linspace(0, 1.0, 51)
    for k, gr in enumerate(sim["grads"]):
        ax.hist(gr.numpy(), bins, density=True, histtype="step",
                label="simulated + noise" if k == 0 else None, **kw_sim)
    ax.hist(torch.cat(sim_clean["grads"]).numpy(), bins, density=True, histtype="step",
            label="simulated, noise-free (pooled)", **kw_clean)
    ax.hist(real["grads"][0].numpy(), bins, density=True, histtype="step", label="real",
            **kw_real)
    ax.set_yscale("log")
    ax.set_xlabel("|wrapped phase gradient| (rad / pixel)", fontsize=8)
    ax.set_title("(ii) phase-gradient histogram", fontsize=8)
    # (iii) structure function
    ax = fig.add_subplot(bot[0, 2])
    for k, s in enumerate(sim["structure"]):
        ax.loglog(LAGS, s.numpy(), label="simulated + noise" if k == 0 else None, **kw_sim)
    ax.loglog(LAGS, sim_clean["structure"].mean(0).numpy(), label="simulated, noise-free (mean)",
              **kw_clean)
    ax.loglog(LAGS, real["structure"][0].numpy(), marker="o", ms=3, label="real", **kw_real)
    ax.set_xlabel("distance (pixels)", fontsize=8)
    ax.set_title("(iii) median |phase difference| (rad)", fontsize=8)
    for ax in fig.axes[-3:]:
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6.5)
    save_figure(fig, path, dpi=72)


def summary_lines(res: dict) -> list[str]:
    """The printed summary of a :func:`run` result: real vs simulated statistics."""
    r, s, c = res["real"], res["sim_noisy"], res["sim_clean"]
    lines = [f"data {res['data']}: {res['shape']}, {res['mask_pixels']} mask pixels, noise sigma "
          f"{res['noise_sigma']:.4g} (inside, upper bound "
          f"{res['noise_sigma_inside_upper_bound']:.4g}), median SNR in mask "
          f"{res['snr_median_in_mask']:.1f}",
             f"{'statistic':<34}{'real':>8}   {'sim+noise mean [min, max] (below real)':>40}"
          f"   {'sim noise-free mean [min, max]':>30}"]
    for key, label in (("median_grad", "median |grad phase| (rad/px)"),
                       ("p90_grad", "90th pct |grad phase| (rad/px)"),
                       ("sf8", "median |phase diff| at 8 px (rad)"),
                       ("sf32", "median |phase diff| at 32 px (rad)"),
                       ("hf_fraction", "spectral power above 0.05 cyc/px"),
                       ("hf25_fraction", "spectral power above 0.25 cyc/px")):
        lines.append(f"{label:<34}{r[key]:>8.3g}   {s[key]['mean']:>16.3g} [{s[key]['min']:.3g}, "
              f"{s[key]['max']:.3g}] ({100 * s[key]['below_real']:3.0f} %)"
              f"   {c[key]['mean']:>10.3g} [{c[key]['min']:.3g}, {c[key]['max']:.3g}]")
    return lines


def model_with(overrides: list[str]) -> PhaseModel:
    """:class:`PhaseModel` with ``FIELD=VALUE`` overrides (``LO:HI`` / ``A,B`` -> tuples)."""
    names = {f.name: f for f in dataclasses.fields(PhaseModel)}
    kw = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in names:
            raise InputError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(names)}")
        try:
            vals = tuple(float(v) for v in text.replace(":", ",").split(","))
        except ValueError:
            raise InputError(f"--set {item!r}: not a number, LO:HI or A,B,...") from None
        default = getattr(PhaseModel(), key)
        if isinstance(default, tuple):
            kw[key] = vals
        elif len(vals) != 1:
            raise InputError(f"--set {item!r}: {key} takes one value")
        else:
            kw[key] = type(default)(vals[0])
    return dataclasses.replace(PhaseModel(), **kw)
