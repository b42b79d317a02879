"""SVD coil compression (``bart cc -S``: Huang et al., MRI 26:133, 2008; Buehrer et al., MRM 2007).

Shapes (see :mod:`mriprior.physics`):

* ``ksp``: ``(batch, coil, y, x)`` complex k-space.
* compression matrix: ``(batch, n_virtual, coil)`` complex64 with orthonormal rows; virtual
  coil ``p`` is ``sum_c matrix[p, c] * ksp[c]``. The rows are the conjugated left singular
  vectors of the ``coil x samples`` data matrix, ordered by decreasing singular value, so the
  first virtual coil holds the most energy. Each singular vector's phase is fixed so that its
  last coil entry is real and >= 0; LAPACK gives BART a real last entry of either sign, so the
  virtual coils equal those of ``bart cc`` up to a sign each.
* :func:`compress_coils` applies the matrix along the coil axis (``-3``) of k-space
  ``(batch, coil, y, x)``, coil images, or ESPIRiT maps ``(batch, maps, coil, y, x)``.

``calib=None`` uses every k-space sample (``bart cc -A``); ``calib=n`` or ``(ny, nx)`` uses the
centred region (``bart cc -r n``). Unsampled (zero) samples add nothing to the SVD, so the region
need not be fully sampled (BART instead shrinks it to its fully sampled part).
"""

from __future__ import annotations

from numbers import Integral

import torch

from mriprior.errors import InputError

__all__ = ["coil_compression_matrix", "compress_coils", "coil_energies"]


def _calibration_samples(ksp: torch.Tensor, calib) -> torch.Tensor:
    """``(batch, coil, samples)`` from all of ``ksp`` or its centred ``calib`` region."""
    if not isinstance(ksp, torch.Tensor) or ksp.ndim != 4:
        shape = tuple(ksp.shape) if isinstance(ksp, torch.Tensor) else type(ksp).__name__
        raise InputError(f"k-space of shape {shape}: expected (batch, coil, y, x)")
    if calib is not None:
        try:
            cy, cx = (int(calib),) * 2 if isinstance(calib, Integral) else (int(c) for c in calib)
        except (TypeError, ValueError):
            raise InputError(f"calib={calib!r}: expected None, an integer or a (y, x) pair") from None
        ny, nx = ksp.shape[-2:]
        if cy < 1 or cx < 1:
            raise InputError(f"calibration region {cy}x{cx} (calib/-r): sizes must be positive")
        if cy > ny or cx > nx:
            raise InputError(f"calibration region {cy}x{cx} (calib/-r) is larger than the "
                             f"k-space ({ny}x{nx}, y x x)")
        ksp = ksp[..., ny // 2 - cy // 2: ny // 2 - cy // 2 + cy,
                  nx // 2 - cx // 2: nx // 2 - cx // 2 + cx]
    return ksp.reshape(ksp.shape[0], ksp.shape[1], -1)


def _sorted_svd(ksp: torch.Tensor, calib) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors ``(batch, coil, coil)`` (columns, descending) and energies."""
    x = _calibration_samples(ksp, calib).to(torch.complex128)
    scale = x.abs().amax(dim=(1, 2), keepdim=True)
    if bool((scale == 0).any()):
        raise InputError("coil compression: the calibration data are all zeros")
    x = x / scale
    evals, vecs = torch.linalg.eigh(x @ x.mH)  # ascending
    evals, vecs = evals.flip(-1).clamp_min(0), vecs.flip(-1)
    last = vecs[:, -1:, :]  # last coil entry of every singular vector
    mag = last.abs()
    vecs = vecs * torch.where(mag > 0, last.conj() / mag.clamp_min(torch.finfo(mag.dtype).tiny), 1)
    return vecs, evals * scale[:, :, 0] ** 2


def coil_compression_matrix(ksp: torch.Tensor, n_virtual: int, calib=None) -> torch.Tensor:
    """SVD coil compression matrix ``(batch, n_virtual, coil)`` complex64 (``bart cc -S -p N``).

    Args:
        ksp: ``(batch, coil, y, x)`` complex k-space.
        n_virtual: number of virtual coils kept, ``1 <= n_virtual <= coil``.
        calib: ``None`` (all samples), or the centred calibration region ``n`` / ``(ny, nx)``.
    """
    coils = ksp.shape[1] if isinstance(ksp, torch.Tensor) and ksp.ndim == 4 else None
    if coils is not None and not 1 <= int(n_virtual) <= coils:
        raise InputError(f"n_virtual={n_virtual} (-p): must be between 1 and the number of "
                         f"coils ({coils})")
    vecs, _ = _sorted_svd(ksp, calib)
    return vecs[..., : int(n_virtual)].mH.to(torch.complex64).contiguous()


def coil_energies(ksp: torch.Tensor, calib=None) -> torch.Tensor:
    """Energy (squared singular value) of each virtual coil, descending: ``(batch, coil)``."""
    return _sorted_svd(ksp, calib)[1].to(torch.float64)


def compress_coils(data: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a compression matrix along the coil axis (``-3``).

    ``data`` is ``(batch, coil, y, x)`` (k-space or coil images) or ``(batch, maps, coil, y, x)``
    (ESPIRiT maps); ``matrix`` is ``(batch, n_virtual, coil)`` or ``(n_virtual, coil)``.
    Returns the same shape with ``coil`` replaced by ``n_virtual``.
    """
    if data.ndim not in (4, 5):
        raise InputError(f"data of shape {tuple(data.shape)}: expected (batch, coil, y, x) or "
                         "(batch, maps, coil, y, x)")
    if matrix.ndim not in (2, 3) or matrix.shape[-1] != data.shape[-3]:
        raise InputError(f"compression matrix of shape {tuple(matrix.shape)} does not fit data "
                         f"of shape {tuple(data.shape)} with {data.shape[-3]} coils on axis -3")
    if matrix.ndim == 3:
        if matrix.shape[0] not in (1, data.shape[0]):
            raise InputError(f"compression matrix batch {matrix.shape[0]} does not match the "
                             f"data batch {data.shape[0]}")
        if data.ndim == 5:
            matrix = matrix[:, None]
    matrix = matrix.to(device=data.device, dtype=torch.promote_types(data.dtype, matrix.dtype))
    return torch.einsum("...pc,...cyx->...pyx", matrix, data.to(matrix.dtype))
