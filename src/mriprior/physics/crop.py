"""Centre crops on the last two axes, for tensors and arrays alike (no torch import: the data
importers use it too). The centre of an axis of length N is N // 2, as for the FFTs of
:mod:`mriprior.physics.fft`."""

from __future__ import annotations

__all__ = ["centre_crop"]


def centre_crop(a, shape):
    """The central ``shape = (y, x)`` of the last two axes of ``a``; an axis shorter than asked
    for is kept whole."""
    ny, nx = a.shape[-2:]
    h, w = min(int(shape[0]), ny), min(int(shape[1]), nx)
    y0, x0 = ny // 2 - h // 2, nx // 2 - w // 2
    return a[..., y0:y0 + h, x0:x0 + w]
