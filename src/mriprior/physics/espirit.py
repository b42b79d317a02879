"""ESPIRiT coil sensitivity estimation (Uecker et al., MRM 71:990-1001, 2014), batched torch.

Shapes (see :mod:`mriprior.physics`):

* ``ksp``: ``(batch, coil, y, x)`` complex k-space with a fully sampled centre.
* returned maps: ``(batch, maps, coil, y, x)`` complex64, map 0 belongs to the largest eigenvalue.
* eigenvalue maps: ``(batch, maps, y, x)`` float32 in ``[0, 1]`` (1 = inside the signal subspace).

Parameters mean what the flags of ``bart ecalib`` mean: ``calib`` (-r) is the size of the centred
calibration region, ``kernel`` (-k) the k-space kernel size, ``threshold`` (-t) keeps the
calibration matrix' singular vectors whose singular value exceeds ``sqrt(threshold)`` times the
largest one (BART's rule: ``threshold`` bounds the eigenvalues of the Gram matrix), ``crop``
(-c) zeroes a map where its eigenvalue is ``<= crop``, ``maps`` (-m) is the number of maps.

Algorithm, per batch element:

1. cut the centred ``calib`` region (index ``N // 2 - calib // 2`` on); it must be fully sampled;
2. Gram matrix ``sum_p p p^H`` of all ``kernel x kernel x coil`` patches ``p`` (the calibration
   matrix' right singular vectors), eigendecomposition, keep the signal subspace ``V``;
3. the k-space operator "project every patch onto ``V`` and average" is a convolution; in image
   space it is a ``coil x coil`` matrix ``G(x)`` per pixel whose entries are trigonometric
   polynomials with frequencies ``|d| < kernel``. They are evaluated exactly on a ``2 kernel``
   grid with small FFTs and moved to the full grid by zero-padding in k-space (as BART does);
4. the coil sensitivities are the eigenvectors of ``G(x)`` with eigenvalue ~1: a batched
   eigendecomposition of the small Hermitian matrices gives the top ``maps`` of them;
5. crop where the eigenvalue is ``<= crop``; rotate the phase of every map and pixel so that its
   projection onto the first principal component of the calibration data is real positive
   (BART's default phase normalisation; ``bart ecalib -P`` turns it off, ``phase_ref=False``).
"""

from __future__ import annotations

import warnings

from numbers import Integral

import torch

from mriprior.errors import InputError

__all__ = ["espirit", "calibration_region", "fully_sampled_centre", "signal_subspace",
           "espirit_operator", "principal_component"]


def _pair(value, name: str) -> tuple[int, int]:
    """``n`` or ``(ny, nx)`` -> ``(ny, nx)`` positive ints."""
    if isinstance(value, Integral):
        value = (value, value)
    try:
        ny, nx = (int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r}: expected an integer or a (y, x) pair") from None
    if ny < 1 or nx < 1:
        raise InputError(f"{name}={value!r}: sizes must be positive")
    return ny, nx


def _check_ksp(ksp: torch.Tensor) -> torch.Tensor:
    if not isinstance(ksp, torch.Tensor) or ksp.ndim != 4:
        shape = tuple(ksp.shape) if isinstance(ksp, torch.Tensor) else type(ksp).__name__
        raise InputError(f"k-space of shape {shape}: expected (batch, coil, y, x)")
    if not ksp.is_complex():
        ksp = ksp.to(torch.complex64)
    return ksp


def _centre_slice(n: int, size: int) -> slice:
    start = n // 2 - size // 2
    return slice(start, start + size)


def fully_sampled_centre(ksp: torch.Tensor, max_size=(1 << 30)) -> tuple[int, int]:
    """Largest centred ``(cy, cx)`` region (up to ``max_size``) sampled in every batch element.

    A k-space location counts as sampled when any coil is nonzero there. The region grows one
    line at a time in y and x alternately, like BART's calibration search.
    """
    ksp = _check_ksp(ksp)
    sampled = (ksp != 0).any(dim=1).all(dim=0)  # (y, x)
    shape = sampled.shape
    limit = _pair(max_size, "max_size")
    if not bool(sampled[shape[0] // 2, shape[1] // 2]):
        return 0, 0
    size = [1, 1]
    grow = [True, True]
    while any(grow):
        for axis in (0, 1):
            trial = list(size)
            trial[axis] += 1
            if grow[axis] and trial[axis] <= min(shape[axis], limit[axis]) and bool(
                    sampled[_centre_slice(shape[0], trial[0]),
                            _centre_slice(shape[1], trial[1])].all()):
                size = trial
            else:
                grow[axis] = False
    return size[0], size[1]


def calibration_region(ksp: torch.Tensor, calib=24, shrink: bool = False) -> torch.Tensor:
    """The centred ``calib`` region of ``ksp``: ``(batch, coil, cy, cx)``.

    Raises :class:`InputError` when the region is larger than the data, or not fully sampled and
    ``shrink`` is False. With ``shrink=True`` (BART ``ecalib``'s behaviour) a region that is not
    fully sampled is reduced to the largest fully sampled centred region, with a warning.
    """
    ksp = _check_ksp(ksp)
    cy, cx = _pair(calib, "calib")
    ny, nx = ksp.shape[-2:]
    if cy > ny or cx > nx:
        raise InputError(f"calibration region {cy}x{cx} (calib/-r) is larger than the "
                         f"k-space ({ny}x{nx}, y x x)")
    cal = ksp[..., _centre_slice(ny, cy), _centre_slice(nx, cx)]
    if not bool((cal != 0).any(dim=1).all()):
        fy, fx = fully_sampled_centre(ksp, (cy, cx))
        if shrink and min(fy, fx) > 1:
            warnings.warn(f"calibration region {cy}x{cx} is not fully sampled; using the fully "
                          f"sampled centre {fy}x{fx} (y x x)", stacklevel=3)
            return ksp[..., _centre_slice(ny, fy), _centre_slice(nx, fx)]
        if min(fy, fx) <= 1:
            hint = "the k-space has no fully sampled centre"
        elif fy == fx:
            hint = (f"the largest fully sampled centred region is {fy}x{fx}; "
                    f"use calib={fy} (-r {fy})")
        else:
            hint = (f"the largest fully sampled centred region is {fy}x{fx} (y x x); "
                    f"use calib=({fy}, {fx}) (-r {fx}:{fy})")
        raise InputError(f"calibration region {cy}x{cx} (calib/-r) is not fully sampled: {hint}")
    return cal


def _patch_covariance(cal: torch.Tensor, kernel: int) -> torch.Tensor:
    """``sum_p p p^H`` over all ``kernel x kernel`` patches: ``(batch, n, n)``, complex128.

    Patch entries are ordered ``(coil, ky, kx)``; ``p[c, ky, kx] = cal[c, y0 + ky, x0 + kx]``.
    The data are scaled by their largest magnitude first (the eigenvectors are scale-free).
    """
    b, c = cal.shape[:2]
    cal = cal.to(torch.complex128)
    scale = cal.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    patches = (cal / scale).unfold(2, kernel, 1).unfold(3, kernel, 1)  # (b, c, py, px, ky, kx)
    a = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * kernel * kernel)  # rows = patches
    return a.mT @ a.conj()


def signal_subspace(cal: torch.Tensor, kernel: int = 6, threshold: float = 0.001):
    """Eigenvectors of the patch covariance and which of them span the signal subspace.

    Returns ``(vectors, keep, singular_values)``: ``vectors`` ``(batch, n, n)`` complex128 with
    one kernel per column (entries ordered ``(coil, ky, kx)``) sorted by decreasing singular
    value, ``keep`` ``(batch, n)`` bool, true where ``s_i / s_0 > sqrt(threshold)``, and the
    singular values of the calibration matrix ``(batch, n)`` (relative to the data scaled to a
    largest magnitude of 1).
    """
    cov = _patch_covariance(cal, kernel)
    evals, vecs = torch.linalg.eigh(cov)  # ascending
    evals, vecs = evals.flip(-1), vecs.flip(-1)
    svals = evals.clamp_min(0).sqrt()
    if bool((svals[:, 0] <= 0).any()):
        raise InputError("the calibration region holds no signal (all zeros)")
    keep = svals / svals[:, :1] > threshold ** 0.5
    return vecs, keep, svals


def espirit_operator(vecs: torch.Tensor, keep: torch.Tensor, coils: int, kernel: int,
                     shape: tuple[int, int]) -> torch.Tensor:
    """The per-pixel ESPIRiT matrices ``G(x)``: ``(batch, y, x, coil, coil)`` complex64.

    ``G(x) = k^-2 sum_j w_j(x) w_j(x)^H`` over the kept kernels ``v_j``, with
    ``w_j(x)_c = sum_n v_j[c, n] exp(+2 pi i n . x / N)`` (``x`` the centred pixel coordinate).
    Its entries have frequencies ``d = n' - n`` with ``|d| < kernel``; they are evaluated on a
    ``2 kernel`` grid and zero-padded onto the ``(y, x)`` grid (exact, no approximation).
    """
    b, n = keep.shape
    k = kernel
    kern = (vecs * keep[:, None, :]).mT.reshape(b, n, coils, k, k)  # (b, j, c, ky, kx)
    grid = 2 * k
    w = torch.fft.ifft2(kern, s=(grid, grid), norm="forward")  # (b, j, c, L, L)
    g_small = torch.einsum("bjcyx,bjdyx->bcdyx", w, w.conj()) / (k * k)
    coef = torch.fft.ifft2(g_small)  # coefficient of exp(-2 pi i d u / L) at index d mod L
    d = torch.arange(-(k - 1), k, device=vecs.device)
    coef = coef[..., d % grid, :][..., d % grid].to(torch.complex64)  # (b, c, c, 2k-1, 2k-1)
    ny, nx = shape
    # place coefficient d at index d mod N (adding up aliases when N < 2 kernel - 1); the real
    # view keeps index_add_ on dtypes every device supports
    coef = torch.view_as_real(coef)
    rows = coef.new_zeros(b, coils, coils, ny, coef.shape[-2], 2).index_add_(3, d % ny, coef)
    padded = rows.new_zeros(b, coils, coils, ny, nx, 2).index_add_(4, d % nx, rows)
    g = torch.fft.fftshift(torch.fft.fft2(torch.view_as_complex(padded)), dim=(-2, -1))
    return g.permute(0, 3, 4, 1, 2)


def principal_component(cal: torch.Tensor) -> torch.Tensor:
    """First principal component of the calibration data across coils: ``(batch, coil)``.

    The unit vector ``u`` maximising ``sum |u^H k|^2`` over the calibration samples ``k``, with
    its global phase chosen so that its last coil entry is real and >= 0. LAPACK returns BART 0.8
    this eigenvector with a real last entry (of either sign), so our phase-normalised maps equal
    ``bart ecalib``'s up to a global sign.
    """
    b, c = cal.shape[:2]
    x = cal.reshape(b, c, -1).to(torch.complex128)
    x = x / x.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    _, vecs = torch.linalg.eigh(x @ x.mH)
    u = vecs[..., -1]
    last = u[:, -1:]
    mag = last.abs()
    u = u * torch.where(mag > 0, last.conj() / mag.clamp_min(torch.finfo(mag.dtype).tiny), 1)
    return u.to(torch.complex64)


def _eigh(g: torch.Tensor):
    """``torch.linalg.eigh``; on CUDA, where cuSOLVER's batched solver can fail on the
    (y * x) small coil matrices (seen: CUSOLVER_STATUS_INTERNAL_ERROR on an H200, torch 2.11),
    the same decomposition on the CPU."""
    if g.device.type == "cuda":
        try:
            return torch.linalg.eigh(g)
        except RuntimeError as e:
            warnings.warn(f"ESPIRiT: cuSOLVER's batched eigh failed ({str(e)[:60]}...); "
                          "the eigendecomposition runs on the CPU")
            evals, evecs = torch.linalg.eigh(g.cpu())
            return evals.to(g.device), evecs.to(g.device)
    return torch.linalg.eigh(g)


def _top_eigenvectors(g: torch.Tensor, maps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``maps`` eigenpairs of Hermitian ``(..., c, c)``: vectors ``(..., maps, c)``, values."""
    evals, evecs = _eigh(g)
    evals = evals[..., -maps:].flip(-1)
    evecs = evecs[..., -maps:].flip(-1).mT  # (..., maps, c)
    return evecs, evals


def _fix_phase(maps: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Rotate each map per pixel so that ``sum_c conj(ref_c) s_c`` is real and >= 0.

    ``maps`` ``(batch, maps, coil, y, x)``, ``ref`` ``(batch, coil)``.
    """
    proj = torch.einsum("bc,bmcyx->bmyx", ref.conj(), maps)
    mag = proj.abs()
    phase = torch.where(mag > 0, proj / mag.clamp_min(torch.finfo(mag.dtype).tiny),
                        torch.ones_like(proj))
    return maps * phase.conj()[:, :, None]


def espirit(ksp: torch.Tensor, calib=24, kernel: int = 6, threshold: float = 0.001,
            crop: float = 0.8, maps: int = 2, phase_ref: bool = True,
            return_eigenvalues: bool = False, shrink: bool = True):
    """ESPIRiT coil sensitivity maps from k-space with a fully sampled centre.

    Args:
        ksp: ``(batch, coil, y, x)`` complex k-space (centre at ``N // 2``).
        calib: calibration region size, ``n`` or ``(ny, nx)`` (``bart ecalib -r``).
        kernel: kernel size (``-k``).
        threshold: keep singular vectors with ``s / s_max > sqrt(threshold)`` (``-t``).
        crop: zero a map where its eigenvalue is ``<= crop`` (``-c``); 0 keeps everything.
        maps: number of maps (``-m``), at most the number of coils.
        phase_ref: rotate the phase relative to the first principal component (BART's default;
            False is ``bart ecalib -P``: the raw eigenvector phase, arbitrary per pixel).
        return_eigenvalues: also return the eigenvalue maps.
        shrink: if the calibration region is not fully sampled, use the largest fully sampled
            centred region instead (with a warning), as ``bart ecalib`` does; False raises.

    Returns:
        maps ``(batch, maps, coil, y, x)`` complex64; with ``return_eigenvalues`` a tuple
        ``(maps, eigenvalues)`` with eigenvalues ``(batch, maps, y, x)`` float32.
    """
    ksp = _check_ksp(ksp)
    b, coils, ny, nx = ksp.shape
    if not 1 <= int(maps) <= coils:
        raise InputError(f"maps={maps} (-m): must be between 1 and the number of coils ({coils})")
    cy, cx = _pair(calib, "calib")
    if not isinstance(kernel, Integral) or kernel < 1 or kernel > min(cy, cx):
        raise InputError(f"kernel={kernel!r} (-k): must be an integer between 1 and the "
                         f"calibration size {min(cy, cx)} (calib/-r)")
    if not 0 <= threshold < 1:
        raise InputError(f"threshold={threshold} (-t): must lie in [0, 1)")
    if not 0 <= crop <= 1:
        raise InputError(f"crop={crop} (-c): must lie in [0, 1]")
    cal = calibration_region(ksp, (cy, cx), shrink=shrink)
    vecs, keep, _ = signal_subspace(cal, int(kernel), threshold)
    g = espirit_operator(vecs, keep, coils, int(kernel), (ny, nx))
    evecs, evals = _top_eigenvectors(g, int(maps))  # (b, y, x, m, c), (b, y, x, m)
    sens = evecs.permute(0, 3, 4, 1, 2)  # (b, m, c, y, x)
    evals = evals.permute(0, 3, 1, 2).to(torch.float32)
    sens = sens * (evals > crop)[:, :, None]
    if phase_ref:
        sens = _fix_phase(sens, principal_component(cal))
    sens = sens.to(torch.complex64).contiguous()
    return (sens, evals.contiguous()) if return_eigenvalues else sens
