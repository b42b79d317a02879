"""The reconstruction test cases shared by `bench/recon.py` and `mriprior experiment priors`.

* :func:`simulated_case`: a complex image (e.g. a held-out slice of the open corpus with
  simulated phase) -> 8 birdcage coils, complex Gaussian noise at SNR 40, a Poisson-disc R ~ 8
  (20 x 20 calibration) or 1D variable-density R = 5 (30 ACS lines) mask, ESPIRiT maps estimated
  from the undersampled data; reference = the image itself (metrics without rescaling).
* :func:`real_case`: a folder with BART ``ksp`` / ``img`` (the real 8-coil slice): its acquired
  k-space and pattern, ESPIRiT maps; reference = ``img`` map 0 (full-data reconstruction of
  unknown global scale -> metrics with least-squares magnitude scaling).

Every case is a dict: ``ksp (1, c, y, x)``, ``maps (1, c, y, x)``, ``ref (1, y, x)``, ``mask``,
``accel``, ``scale`` ("none" | "lsq") and, for simulated cases, ``ref_complex`` (the reference
in the estimated maps' phase gauge, for complex-error checks).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, read_cfl, read_kspace
from mriprior.metrics import evaluate
from mriprior.physics.espirit import espirit
from mriprior.physics.fft import fft2c
from mriprior.physics.masks import poisson_disc, variable_density_1d
from mriprior.physics.phantom import birdcage_maps
from mriprior.physics.simulate import simulate_multicoil, snr_to_sigma
from mriprior.recon.calibration import calibrated_std
from mriprior.recon.posterior import interval_radius
from mriprior.recon.posterior import estimate_noise_var

__all__ = ["PATTERNS", "make_mask", "simulated_case", "real_case", "real_image", "read_real_slice",
           "pick_slices", "complex_error", "magnitude_lsq", "score", "uncertainty"]

PATTERNS = {"poisson": "Poisson-disc R~8, calib 20x20", "1d": "1D VD R=5, 30 ACS lines"}


def make_mask(kind, shape, seed):
    if kind == "poisson":
        return poisson_disc(shape, 8.0, calib=(20, 20), seed=seed)
    return variable_density_1d(shape, 5.0, acs_lines=30, seed=seed)


def simulated_case(img: torch.Tensor, kind: str, seed: int, device=None):
    """img (y, x) complex -> dict(ksp (1,c,y,x), maps (1,c,y,x), ref (1,y,x), mask, accel).

    The acquisition (coils, noise, mask) is drawn on the CPU, so a case is the same on every
    machine; with ``device`` the data are moved there and ESPIRiT runs there."""
    n = img.shape
    ref = img.cpu().to(torch.complex64)[None]
    true_maps = birdcage_maps(8, n, normalize="rss")[None]
    g = torch.Generator().manual_seed(seed)
    sigma = snr_to_sigma(fft2c(true_maps * ref[:, None]), 40.0)
    mask = make_mask(kind, n, seed)
    ksp = simulate_multicoil(ref, true_maps, noise_cov=float(sigma[0]),
                             mask=mask.tensor(), generator=g)
    if device is not None:
        ksp, ref, true_maps = ksp.to(device), ref.to(device), true_maps.to(device)
    maps = espirit(ksp, calib=20, maps=1)[:, 0]
    # The reference in the ESPIRiT maps' gauge: ESPIRiT maps carry an arbitrary smooth phase
    # relative to the true coils, so complex errors (uncertainty checks) must be taken against
    # the image that the estimated maps represent, sum_c conj(S_esp) S_true ref / sum |S_esp|^2.
    den = maps.abs().square().sum(1)
    ref_g = torch.where(den > 0, (maps.conj() * true_maps * ref[:, None]).sum(1)
                        / den.clamp_min(1e-12), torch.zeros_like(ref))
    return {"ksp": ksp, "maps": maps, "ref": ref, "ref_complex": ref_g,
            "mask": mask.tensor()[None, None].to(ksp.device), "accel": mask.accel,
            "scale": "none"}


def real_image(path) -> torch.Tensor:
    """``PATH/img`` (BART's full-data reconstruction, ``1 x Y x X x 1 x maps``) -> its ESPIRiT
    map 0 as ``(y, x)`` complex64."""
    name = os.path.join(path, "img")
    arr = read_cfl(name)
    t = BartLayout.from_dims(arr.shape, name=name).to_torch(arr, name=name, max_dim=4)
    return torch.from_numpy(np.ascontiguousarray(t.reshape(-1, *t.shape[-2:])[0])).to(
        torch.complex64)


def read_real_slice(path):
    """``PATH/ksp`` (BART dims) -> ``(1, coil, y, x)`` complex64, and :func:`real_image`."""
    ksp, _ = read_kspace(os.path.join(path, "ksp"))
    return ksp.to(torch.complex64), real_image(path)


def real_case(path, device=None):
    ksp, ref = read_real_slice(path)
    ref = ref[None]
    if device is not None:
        ksp, ref = ksp.to(device), ref.to(device)
    mask = (ksp.abs().sum(1, keepdim=True) > 0).float()
    maps = espirit(ksp, calib=20, maps=1)[:, 0]
    return {"ksp": ksp, "maps": maps, "ref": ref.to(torch.complex64), "mask": mask,
            "accel": float(mask.numel() / mask.sum()), "scale": "lsq"}


def magnitude_lsq(ref, x) -> float:
    """Real factor a minimising || |ref| - a |x| || (the metrics' ``scale="lsq"``)."""
    m = x.abs()
    return float((m * ref.abs()).sum() / (m * m).sum())


def pick_slices(ds, split, n):
    """``n`` distinct slice indices of ``split``, evenly spaced through the split's middle half
    (avoids near-empty edge slices), or through the whole split if the middle half is smaller."""
    idx = [i for i, rec in enumerate(ds.manifest["slices"]) if rec["split"] == split]
    if not idx:
        raise InputError(f"no {split} slices in the dataset")
    if n > len(idx):
        raise InputError(f"{n} {split} slices asked for, the dataset has {len(idx)}")
    lo, hi = len(idx) // 4, max(len(idx) // 4 + 1, 3 * len(idx) // 4)
    if hi - lo < n:
        lo, hi = 0, len(idx)
    pos = np.linspace(lo, hi - 1, n).round().astype(int)
    return [idx[p] for p in pos]


def score(case, img) -> dict:
    """PSNR / SSIM / NMSE of ``img`` against the case's reference (its scaling rule)."""
    r = evaluate(case["ref"], img, scale=case["scale"])
    return {"psnr": r["psnr"], "ssim": r["ssim"], "nmse": r["nmse"]}


def complex_error(case, r):
    """``(|mmse - ref|, inside)`` of a simulated case: the MMSE's complex error against the
    reference in the estimated maps' gauge, and the object (``|ref| > 0.1 max |ref|``) where
    :func:`uncertainty` measures."""
    ref = case.get("ref_complex", case["ref"])
    return (r.mmse - ref).abs(), ref.abs() > 0.1 * ref.abs().max()


def uncertainty(case, r, calibration: dict | None = None):
    """Spearman(std, |error|) and the coverage of the 90 % credible region inside the object.

    The region is that of the MMSE (the mean of the ``n`` chains) with the variance estimated
    from those chains (:func:`~mriprior.recon.posterior.interval_radius` with ``chains=n``;
    for magnitudes the Student-t interval ``t_{0.95, n-1} sqrt(1 + 1/n) std``), so a perfect
    sampler covers 90 % whatever ``n`` is.

    Simulated cases: complex error against the reference in the estimated maps' gauge, 90 %
    credible disc of a circular complex Gaussian. Real slice: its reference comes from BART's
    ESPIRiT maps, whose smooth phase gauge differs from ours, so a complex error would measure
    the gauge; use magnitudes there: error ``| a |mmse| - |ref| |`` with ``a`` the real factor
    minimising ``|| |ref| - a |mmse| ||`` (as the PSNR's ``scale="lsq"``; a complex
    least-squares factor between images of different phase gauges is shrunk by their phase
    mismatch, ~1.5 x on the real slice, which made every error look large), std over the chains
    of ``|a sample|``. The real reference is itself a noisy
    full-data reconstruction: ``coverage90_ref_noise`` also widens the interval by the
    reference's own noise (``1.645 |a| sqrt(v)``, ``v`` the k-space noise variance per component
    of :func:`~mriprior.recon.posterior.estimate_noise_var`, added in quadrature).
    ``spearman_if_calibrated``: Spearman between the std map and errors drawn from it (circular
    complex Gaussian, a fixed draw): the value a perfectly calibrated map of this spread would
    reach, so a low Spearman can be told apart from a map with little spread.

    ``calibration`` (:mod:`mriprior.recon.calibration`): also ``spearman_calibrated`` and
    ``coverage90_calibrated``, those of the calibrated std map and its known-variance interval
    (simulated cases, complex error)."""
    from scipy.stats import spearmanr, t as student_t

    ref = case.get("ref_complex", case["ref"])
    n = r.samples.shape[1]
    inside = ref.abs() > 0.1 * ref.abs().max()
    out = {"chains": n}
    if case["scale"] == "none":
        (err, inside), s = complex_error(case, r), r.std
        radius = interval_radius(s, 0.9, n)
        out["error"] = "complex"
    else:
        a = magnitude_lsq(ref, r.mmse)
        err = (a * r.mmse.abs() - ref.abs()).abs()
        s = a * r.samples.abs().std(1, unbiased=True)
        radius = float(student_t.ppf(0.95, n - 1)) * math.sqrt(1 + 1 / n) * s
        ref_noise = a * math.sqrt(estimate_noise_var(case["ksp"], case["mask"]))
        wide = torch.sqrt(radius.square() + (1.6449 * ref_noise) ** 2)
        out["coverage90_ref_noise"] = float((err[inside] <= wide[inside]).float().mean())
        out["error"] = "magnitude"
    s_in = s[inside].cpu().numpy().ravel()
    out["spearman_std_err"] = float(spearmanr(s_in, err[inside].cpu().numpy().ravel())[0])
    # the same statistic if the errors really had this std (complex Gaussian, a fixed draw): how
    # much of the Spearman target the map's spread allows at all
    g = np.random.default_rng(0)
    ray = np.abs(g.standard_normal(s_in.shape) + 1j * g.standard_normal(s_in.shape))
    out["spearman_if_calibrated"] = float(spearmanr(s_in, s_in * ray)[0])
    out["coverage90"] = float((err[inside] <= radius[inside]).float().mean())
    if calibration is not None and case["scale"] == "none":
        cs = calibrated_std(s, calibration)
        out["spearman_calibrated"] = float(spearmanr(cs[inside].cpu().numpy().ravel(),
                                                     err[inside].cpu().numpy().ravel())[0])
        out["coverage90_calibrated"] = float(
            (err[inside] <= interval_radius(cs, 0.9)[inside]).float().mean())
    return out
