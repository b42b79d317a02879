"""Calibrated uncertainty maps: the chains' std, locally pooled and scaled by a factor measured on
validation slices.

The std over a few chains of a sampler is too narrow and too noisy to be read as the size of
the MMSE's error (docs/priors.md, "Calibrated uncertainty"): with 4 chains it is a 6-degree-of-
freedom estimate per pixel, and the fast sampler's chains under-disperse (on the clinical
validation slices its F-intervals cover ~63 % of pixels instead of 90 %). Both are corrected
here, in the way split-conformal calibration corrects a predictor's intervals:

1. *pooling*: the variance is averaged over a ``pool x pool`` window (odd, edge windows over
   the pixels inside the image), trading resolution for an estimate with ~``pool^2`` times the
   degrees of freedom;
2. *scale*: a factor ``scale`` is measured on validation slices, whose truth is known, such
   that the circular complex Gaussian ``level`` disc of std ``scale * pooled`` holds the MMSE's
   error (``|mmse - truth|``) on ``level`` of the pixels inside the object
   (:func:`fit_scale`).

The calibrated std (:func:`calibrated_std`) is then the std of the MMSE's error, and its
interval is the known-variance radius ``std sqrt(ln(1 / (1 - level)))`` of
:func:`~mriprior.recon.posterior.interval_radius` with ``chains=None``. A calibration holds
for the sampler settings it was measured with (method, chains, NFE, start level, data step):
a prior's sidecar records it as ``recon_defaults[method]["calibration"]`` with those settings,
and :func:`calibration_for` returns it only when a run's settings match.

Shapes: ``std`` / ``err`` ``(batch, [maps,] y, x)`` real; ``inside`` boolean of that shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mriprior.errors import InputError

__all__ = ["SETTINGS", "pool_variance", "fit_scale", "calibrated_std", "calibration_for"]

# the settings of a method a calibration depends on (its function's keywords)
SETTINGS = {"fast": ("chains", "nfe", "sigma_start", "noise_var", "draws", "eta", "flips"),
            "langevin": ("chains", "n_levels", "skip", "steps", "lam", "noise_var")}


def pool_variance(std: torch.Tensor, pool: int) -> torch.Tensor:
    """``sqrt`` of the variance ``std^2`` averaged over a ``pool x pool`` window per image (the
    window shrunk to the image at its edges); ``pool=1`` returns ``std``."""
    if pool < 1 or pool % 2 == 0:
        raise InputError(f"pool must be an odd window size >= 1, got {pool}")
    if pool == 1:
        return std
    v = std.square().reshape(-1, 1, *std.shape[-2:])
    v = F.avg_pool2d(v, pool, stride=1, padding=pool // 2, count_include_pad=False)
    return v.reshape(std.shape).sqrt()


def _radius_factor(level: float) -> float:
    if not 0 < level < 1:
        raise InputError(f"credibility level must be in (0, 1), got {level}")
    return math.sqrt(-math.log(1 - level))


def fit_scale(errors, stds, insides, level: float = 0.9, pool: int = 5) -> float:
    """The factor ``scale`` for which ``|error| <= sqrt(ln(1 / (1 - level))) * scale *
    pool_variance(std, pool)`` on a fraction ``level`` of all pixels inside the object, pooled
    over the given validation images (sequences of tensors, one per slice)."""
    ratios = []
    for err, std, inside in zip(errors, stds, insides, strict=True):
        if err.shape != std.shape or inside.shape != std.shape:
            raise InputError(f"calibration: error {tuple(err.shape)}, std {tuple(std.shape)} "
                             f"and mask {tuple(inside.shape)} must have one shape")
        s = pool_variance(std.float(), pool)[inside]
        ratios.append((err.float()[inside] / s.clamp_min(torch.finfo(s.dtype).tiny)).cpu())
    r = torch.cat(ratios).numpy() if ratios else np.empty(0)
    if r.size == 0:
        raise InputError("calibration: no pixels inside the object in the validation images")
    return float(np.quantile(r, level)) / _radius_factor(level)


def calibrated_std(std: torch.Tensor, calibration: dict) -> torch.Tensor:
    """The std of the MMSE's error: ``calibration["scale"] * pool_variance(std, pool)``."""
    return float(calibration["scale"]) * pool_variance(std, int(calibration.get("pool", 1)))


def calibration_for(prior, method: str, options: dict, pattern: str = "2d") -> dict | None:
    """The calibration in ``prior``'s sidecar for ``method`` (``recon_defaults[method]
    ["calibration"]``; for ``pattern`` ``"1d"`` the one under ``[method]["1d"]`` where there is
    one) if it was measured with the same settings as ``options`` (option name -> value, as
    :data:`~mriprior.recon.posterior.OPTIONS` names them), else None."""
    tuned = (getattr(prior, "recon_defaults", None) or {}).get(method) or {}
    cal = ((tuned.get("1d") or {}).get("calibration") if pattern == "1d" else None) or \
        tuned.get("calibration")
    if not cal:
        return None
    measured = cal.get("settings", {})
    for key in SETTINGS.get(method, ()):
        if key in measured and measured[key] != options.get(key):
            return None
    return cal
