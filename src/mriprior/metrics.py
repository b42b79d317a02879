"""Image quality metrics: PSNR, SSIM, NMSE on magnitudes.

One convention, used everywhere in mriprior (API, CLI, benchmarks, experiments):

* Metrics compare magnitudes, ``|rec|`` against ``|ref|``, per image; a batch ``(batch, y, x)``
  is averaged over images. Inputs may be complex or real, NumPy or torch.
* Data range = ``max |ref|`` of each image (fastMRI's ``evaluate.py`` convention).
* PSNR = 20 log10(max|ref|) - 10 log10(mean (|ref| - |rec|)^2), in dB.
* SSIM = ``skimage.metrics.structural_similarity(|ref|, |rec|, data_range=max|ref|)`` with its
  defaults (7 x 7 uniform window, K1 = 0.01, K2 = 0.03): exactly what fastMRI computes.
* NMSE = ||ref| - |rec||^2 / ||ref||^2.
* ``scale="none"`` (default) compares the images as given. ``scale="lsq"`` first multiplies |rec|
  by the real factor minimising || |ref| - a |rec| ||^2: use it only when the two images have an
  unrelated global scale (e.g. a reference of unknown units); say so when reporting.
* ``mask`` (optional, broadcastable to ``(y, x)``): PSNR and NMSE use only pixels inside it, SSIM
  averages the SSIM map inside it (away from the 3-pixel border, as scikit-image does); the data range is still max |ref| over the whole image.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

from mriprior.errors import InputError

__all__ = ["psnr", "ssim", "nmse", "evaluate", "evaluate_volume", "hallucinations"]


def _mag(a, name) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.abs(np.asarray(a)).astype(np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"{name}: expected an image (y, x) or a batch (batch, y, x), "
                         f"got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: contains NaN or Inf")
    return a


def _prepare(ref, rec, scale, mask):
    r, x = _mag(ref, "reference"), _mag(rec, "reconstruction")
    if r.shape != x.shape:
        raise InputError(f"shape mismatch: reference {r.shape[1:] if r.shape[0] == 1 else r.shape}"
                         f" vs reconstruction {x.shape[1:] if x.shape[0] == 1 else x.shape}")
    if not (r.reshape(len(r), -1).max(axis=1) > 0).all():
        raise InputError("reference: an image is zero everywhere, so its data range max |ref| "
                         "is 0 and PSNR / SSIM are undefined")
    if mask is None:
        m = np.ones(r.shape, dtype=bool)
    else:
        if hasattr(mask, "detach"):
            mask = mask.detach().cpu().numpy()
        try:
            m = np.broadcast_to(np.asarray(mask).astype(bool), r.shape)
        except ValueError:
            raise InputError(f"mask shape {np.shape(mask)} does not broadcast to {r.shape}") \
                from None
        if not m.any():
            raise InputError("mask selects no pixels")
    if scale == "lsq":
        num = np.sum(r * x * m, axis=(1, 2), keepdims=True)
        den = np.sum(x * x * m, axis=(1, 2), keepdims=True)
        x = x * np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)
    elif scale != "none":
        raise InputError(f"scale must be 'none' or 'lsq', not {scale!r}")
    return r, x, m


def _psnr(r, x, m):
    mse = np.sum((r - x) ** 2 * m) / np.sum(m)
    peak = r.max()
    return math.inf if mse == 0 else 20 * math.log10(peak) - 10 * math.log10(mse)


_WIN = 7  # scikit-image's default SSIM window, as fastMRI uses it


def _ssim(r, x, m):
    if min(r.shape) < _WIN:
        raise InputError(f"SSIM needs images of at least {_WIN} x {_WIN} (its window); "
                         f"got {r.shape[0]} x {r.shape[1]}")
    mssim, smap = structural_similarity(r, x, data_range=float(r.max()), full=True)
    if m.all():
        return float(mssim)  # scikit-image's mean excludes the (win_size - 1) // 2 border
    pad = (_WIN - 1) // 2
    inner = np.zeros_like(m)
    inner[pad:-pad, pad:-pad] = True
    sel = m & inner
    return float(smap[sel].mean()) if sel.any() else float(smap[m].mean())


def _nmse(r, x, m):
    den = np.sum((r ** 2) * m)
    return float(np.sum(((r - x) ** 2) * m) / den) if den > 0 else math.inf


def _batch(fn, ref, rec, scale, mask):
    r, x, m = _prepare(ref, rec, scale, mask)
    return float(np.mean([fn(r[i], x[i], m[i]) for i in range(r.shape[0])]))


def psnr(ref, rec, scale: str = "none", mask=None) -> float:
    """Peak signal-to-noise ratio in dB (see the module docstring for the convention)."""
    return _batch(_psnr, ref, rec, scale, mask)


def ssim(ref, rec, scale: str = "none", mask=None) -> float:
    """Structural similarity as fastMRI computes it."""
    return _batch(_ssim, ref, rec, scale, mask)


def nmse(ref, rec, scale: str = "none", mask=None) -> float:
    """Normalised mean squared error of the magnitudes."""
    return _batch(_nmse, ref, rec, scale, mask)


def evaluate(ref, rec, scale: str = "none", mask=None) -> dict:
    """All three metrics: ``{"psnr": dB, "ssim": ..., "nmse": ...}``."""
    r, x, m = _prepare(ref, rec, scale, mask)
    n = r.shape[0]
    return {"psnr": float(np.mean([_psnr(r[i], x[i], m[i]) for i in range(n)])),
            "ssim": float(np.mean([_ssim(r[i], x[i], m[i]) for i in range(n)])),
            "nmse": float(np.mean([_nmse(r[i], x[i], m[i]) for i in range(n)]))}


def evaluate_volume(ref, rec) -> dict:
    """fastMRI's volume metrics (``fastmri/evaluate.py``) of magnitude volumes ``(slices, y, x)``:
    the data range is the maximum of the whole reference volume; PSNR and NMSE over the
    volume, SSIM per slice (with that volume range) averaged. ``{"psnr", "ssim", "nmse"}``."""
    r, x = _mag(ref, "reference"), _mag(rec, "reconstruction")
    if r.ndim != 3 or r.shape != x.shape:
        raise InputError(f"volumes must both be (slices, y, x) of one shape, got {r.shape} "
                         f"and {x.shape}")
    peak = float(r.max())
    if not peak > 0:
        raise InputError("reference: the volume is zero everywhere (data range 0)")
    if min(r.shape[1:]) < _WIN:
        raise InputError(f"SSIM needs slices of at least {_WIN} x {_WIN}, got {r.shape[1:]}")
    mse = float(np.mean((r - x) ** 2))
    ssim = float(np.mean([structural_similarity(r[i], x[i], data_range=peak)
                          for i in range(r.shape[0])]))
    return {"psnr": math.inf if mse == 0 else 20 * math.log10(peak) - 10 * math.log10(mse),
            "ssim": ssim, "nmse": float(np.sum((r - x) ** 2) / np.sum(r ** 2))}


def hallucinations(out, ref, k: float = 4.0, min_area: int = 5, object_level: float = 0.1):
    """Structures in ``out`` that are not in ``ref`` (magnitudes, ``(y, x)``): 8-connected
    regions of at least ``min_area`` pixels where ``|out| - |ref| > k * s``, ``s`` the robust
    standard deviation (1.4826 MAD) of ``|out| - |ref|`` inside the object (``|ref|`` above
    ``object_level`` of its max). Returns ``(count, label image)``."""
    from scipy import ndimage

    o = np.abs(np.asarray(out)).astype(np.float64)
    r = np.abs(np.asarray(ref)).astype(np.float64)
    e = o - r
    inside = r > object_level * r.max()
    d = e[inside]
    s = 1.4826 * np.median(np.abs(d - np.median(d))) + 1e-12
    labels, n = ndimage.label(e > k * s, structure=np.ones((3, 3)))
    if n == 0:
        return 0, labels
    areas = ndimage.sum(np.ones_like(e), labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(areas >= min_area) + 1
    out_labels = np.where(np.isin(labels, keep), labels, 0)
    return int(len(keep)), out_labels
