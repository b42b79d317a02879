"""Bringing a slice to the dataset's shape and intensity; the empty-slice test."""

from __future__ import annotations

import math

import numpy as np

from mriprior.errors import InputError
from mriprior.data.importers.options import EMPTY_FRACTION


# =============================================================================================
# geometry and intensity

def _resample(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resampling (Pillow) of a real or complex image to ``size``."""
    from PIL import Image

    def one(a):
        im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
        return np.asarray(im.resize((size[1], size[0]), Image.Resampling.BILINEAR))

    if np.iscomplexobj(img):
        return (one(img.real) + 1j * one(img.imag)).astype(np.complex64)
    return one(img)


def _region(shape, size, offset):
    """Slices of the output and of the resized image that overlap."""
    (Y, X), (h, w), (oy, ox) = shape, size, offset
    ys, xs = max(0, oy), max(0, ox)
    ye, xe = min(Y, oy + h), min(X, ox + w)
    return (slice(ys, ye), slice(xs, xe)), (slice(ys - oy, ye - oy), slice(xs - ox, xe - ox))


def fit_slice(img: np.ndarray, shape, mode: str = "fit") -> tuple[np.ndarray, dict]:
    """Bring a 2D slice to ``shape`` (see the module docstring); returns ``(out, geometry)``.

    ``geometry`` = ``{"mode", "resized_shape", "zoom", "offset"}``. ``mode="none"`` raises
    InputError when the slice is not already ``shape``.
    """
    Y, X = shape
    h, w = img.shape
    nh, nw = h, w
    if mode == "fit":
        s = min(Y / h, X / w)
        nh = min(Y, max(1, int(math.floor(h * s + 0.5))))
        nw = min(X, max(1, int(math.floor(w * s + 0.5))))
        if (nh, nw) != (h, w):
            img = _resample(img, (nh, nw))
    elif mode == "none" and (h, w) != (Y, X):
        raise InputError(f"slice shape ({h}, {w}) is not the dataset shape ({Y}, {X}) and "
                         "resize='none'")
    offset = (Y // 2 - nh // 2, X // 2 - nw // 2)
    dst, src = _region(shape, (nh, nw), offset)
    out = np.zeros(shape, dtype=np.complex64 if np.iscomplexobj(img) else np.float32)
    out[dst] = img[src]
    geom = {"mode": mode, "resized_shape": [nh, nw], "zoom": [nh / h, nw / w],
            "offset": [int(offset[0]), int(offset[1])]}
    return out, geom


def normalize_slice(out: np.ndarray, geom: dict, mode: str) -> tuple[np.ndarray, float, str]:
    """Divide by the slice's max / 99th percentile magnitude (padding excluded) or 1.

    Returns ``(stored, scale, mode_used)``: ``resized = stored * scale``.
    """
    if mode == "none":
        return out, 1.0, "none"
    dst, _ = _region(out.shape, geom["resized_shape"], geom["offset"])
    mag = np.abs(out[dst])
    scale = float(np.percentile(mag, 99)) if mode == "p99" else 0.0
    if scale <= 0:
        scale, mode = float(mag.max()), "max"
    return (out / np.float32(scale)).astype(out.dtype, copy=False), scale, mode


def is_empty(img: np.ndarray, volume_max: float, min_signal: float) -> bool:
    """The empty-slice rule: fewer than 1 % of the pixels (at least 1) above
    ``min_signal * volume_max``."""
    if volume_max <= 0:
        return True
    need = max(1, math.ceil(EMPTY_FRACTION * img.size))
    return int(np.count_nonzero(np.abs(img) > min_signal * volume_max)) < need
