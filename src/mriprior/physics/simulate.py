"""Multi-coil k-space simulation with correlated complex Gaussian noise, and noise whitening.

Shapes (see :mod:`mriprior.physics`):

* :func:`simulate_multicoil`: image ``(batch, y, x)`` with maps ``(batch|1, coil, y, x)``, or
  image ``(batch, maps, y, x)`` with maps ``(batch|1, maps, coil, y, x)``; maps ``(coil, y, x)``
  are shared by the batch. Returns k-space ``(batch, coil, y, x)``.
* Noise covariance ``(coil, coil)`` (or ``(batch, coil, coil)``), complex Hermitian PSD,
  ``cov[i, j] = E[n_i conj(n_j)]``.
* :func:`estimate_noise_covariance`: samples ``(..., coil)`` -> ``(coil, coil)``.
* :func:`whitening_matrix`: ``(coil, coil)`` -> ``W`` with ``W cov W^H = I``.
* :func:`whiten`: ``(..., coil, y, x)`` (k-space or maps) -> same shape, ``W`` applied over coils.

Noise model: ``k = mask * (FFT(maps * image) + n)`` where ``n = L z``, ``L L^H = cov`` and ``z``
is circular complex Gaussian with ``E|z|^2 = 1`` (real and imaginary parts each of variance
1/2), independent across k-space samples. A float ``sigma`` means ``cov = sigma^2 I``: each
complex sample has ``E|n|^2 = sigma^2``. With the orthonormal FFT, noise of that level in
k-space is noise of the same level in each pixel of the fully-sampled coil images.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.physics.linop import broadcast_shape
from mriprior.physics.fft import fft2c

__all__ = [
    "simulate_multicoil",
    "coil_images",
    "noise_factor",
    "complex_noise",
    "estimate_noise_covariance",
    "whitening_matrix",
    "whiten",
    "snr_to_sigma",
]

_HERMITIAN_RTOL = 1e-5
_PSD_RTOL = 1e-6


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape)


def coil_images(image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``sum_maps maps * image`` -> coil images ``(batch, coil, y, x)`` (shapes: module doc)."""
    if image.ndim == 3 and maps.ndim in (3, 4):
        m = maps if maps.ndim == 4 else maps[None]
        x = image[:, None]
        if m.shape[-2:] != image.shape[-2:] or m.shape[0] not in (1, image.shape[0]):
            raise InputError(f"maps {_shape(maps)} do not fit image {_shape(image)}: expected "
                             f"(batch|1, coil, {image.shape[-2]}, {image.shape[-1]})")
        return m * x
    if image.ndim == 4 and maps.ndim == 5:
        b, nm, ny, nx = image.shape
        if maps.shape[0] not in (1, b) or maps.shape[1] != nm or maps.shape[-2:] != (ny, nx):
            raise InputError(f"maps {_shape(maps)} do not fit image {_shape(image)}: expected "
                             f"(batch|1, {nm}, coil, {ny}, {nx})")
        return (maps * image[:, :, None]).sum(1)
    raise InputError(f"image {_shape(image)} with maps {_shape(maps)}: expected image "
                     "(batch, y, x) with maps (batch|1, coil, y, x), or image (batch, maps, y, x) "
                     "with maps (batch|1, maps, coil, y, x)")


def _tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def _complex_out(dtype: torch.dtype) -> torch.dtype:
    """complex128 for double-precision input, complex64 otherwise."""
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


def _negligible(lam: torch.Tensor) -> torch.Tensor:
    """Eigenvalue level (per matrix) below which a PSD matrix counts as singular."""
    return 1e3 * lam.shape[-1] * torch.finfo(torch.float64).eps * lam[..., -1:].abs()


def _check_covariance(cov: torch.Tensor, n_coils: int | None = None) -> torch.Tensor:
    """Validate a ``(..., coil, coil)`` covariance; returns it as complex128."""
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise InputError(f"noise covariance has shape {_shape(cov)}; expected square (coil, coil)")
    if n_coils is not None and cov.shape[-1] != n_coils:
        raise InputError(f"noise covariance has shape {_shape(cov)} but the data have {n_coils} "
                         f"coils: expected ({n_coils}, {n_coils})")
    c = cov.to(torch.complex128)
    if not torch.isfinite(c).all():
        raise InputError(f"noise covariance {_shape(cov)} has non-finite entries")
    scale = c.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    asym = ((c - c.mH).abs() / scale).max().item()
    if asym > _HERMITIAN_RTOL:
        raise InputError(f"noise covariance {_shape(cov)} is not Hermitian "
                         f"(max |C - C^H| / max |C| = {asym:.3g})")
    c = 0.5 * (c + c.mH)
    lam = torch.linalg.eigvalsh(c)
    worst = (lam[..., 0] / lam[..., -1].abs().clamp_min(torch.finfo(torch.float64).tiny)).min()
    if lam[..., -1].min() < 0 or worst.item() < -_PSD_RTOL:
        raise InputError(f"noise covariance {_shape(cov)} is not positive semi-definite "
                         f"(smallest eigenvalue {lam[..., 0].min().item():.3g}, "
                         f"largest {lam[..., -1].max().item():.3g})")
    return c


def noise_factor(cov: torch.Tensor) -> torch.Tensor:
    """``L`` with ``L L^H = cov`` (complex128): Cholesky, or ``V sqrt(lam)`` if singular.

    Raises :class:`InputError` unless ``cov`` is Hermitian positive semi-definite.
    """
    return _factor(_check_covariance(torch.as_tensor(cov)))


def _factor(c: torch.Tensor) -> torch.Tensor:
    """``L L^H = c`` for a validated complex128 PSD ``c``.

    Cholesky when ``c`` is numerically positive definite; otherwise (singular, e.g. rank
    deficient) ``V sqrt(lam)`` with eigenvalues below rounding level set to 0, so no noise
    leaks into the null space (Cholesky would put ~sqrt(eps) there).
    """
    lam = torch.linalg.eigvalsh(c)
    if bool((lam[..., :1] > _negligible(lam)).all()):
        L, info = torch.linalg.cholesky_ex(c)
        if bool((info == 0).all()):
            return L
    lam, V = torch.linalg.eigh(c)
    keep = lam > 1e-3 * _negligible(lam)  # rounding level
    return V * torch.where(keep, lam, torch.zeros_like(lam)).sqrt()[..., None, :]


def complex_noise(shape, cov=None, generator: torch.Generator | None = None, device=None,
                  dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Complex Gaussian noise of ``shape = (batch, coil, ...)``; coil covariance ``cov``.

    ``cov``: ``(coil, coil)`` or ``(batch, coil, coil)`` covariance; or sigma as a float, a
    0-d tensor or a ``(batch,)`` tensor (``cov = sigma^2 I``); ``None`` means sigma = 1. Drawn
    on the generator's device (so a CPU generator gives the same noise for a CUDA run), then
    moved to ``device``.
    """
    batch, n_coils = shape[0], shape[1]
    gdev = generator.device if generator is not None else device
    z = torch.randn(tuple(shape), generator=generator, dtype=torch.complex128 if
                    dtype == torch.complex128 else torch.complex64, device=gdev).to(device)
    if cov is None:
        return z.to(dtype)
    cov = torch.as_tensor(cov, device=z.device)
    if cov.ndim <= 1:  # sigma per batch item
        if cov.is_complex() or (cov < 0).any() or not torch.isfinite(cov).all():
            raise InputError(f"noise sigma must be real, finite and >= 0; got {cov}")
        sigma = cov.to(torch.float64)
        if sigma.ndim == 1 and sigma.shape[0] not in (1, batch):
            raise InputError(f"noise sigma has shape {_shape(sigma)}; expected () or ({batch},)")
        return (z * sigma.reshape(-1, 1, 1, 1).to(z.real.dtype)).to(dtype)
    if cov.ndim > 3 or (cov.ndim == 3 and cov.shape[0] not in (1, batch)):
        raise InputError(f"noise covariance has shape {_shape(cov)}; expected ({n_coils}, "
                         f"{n_coils}) or ({batch}, {n_coils}, {n_coils})")
    L = _factor(_check_covariance(cov, n_coils)).to(z.dtype)
    L = L if L.ndim == 3 else L[None]
    return torch.einsum("bij,bj...->bi...", L.expand(batch, -1, -1), z).to(dtype)


def _as_sigma_or_cov(noise_cov, device):
    if noise_cov is None:
        return None
    if isinstance(noise_cov, (int, float)):
        if not (math.isfinite(noise_cov) and noise_cov >= 0):
            raise InputError(f"noise sigma must be finite and >= 0; got {noise_cov}")
        return torch.tensor(float(noise_cov), device=device)
    if isinstance(noise_cov, np.ndarray):
        return torch.from_numpy(noise_cov).to(device)
    if isinstance(noise_cov, torch.Tensor):
        return noise_cov.to(device)
    raise InputError(f"noise_cov must be None, a float sigma or a (coil, coil) tensor; "
                     f"got {type(noise_cov).__name__}")


def simulate_multicoil(image: torch.Tensor, maps: torch.Tensor, noise_cov=None,
                       mask: torch.Tensor | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Multi-coil k-space ``mask * (fft2c(maps * image) + n)``, ``(batch, coil, y, x)``.

    ``noise_cov``: ``None`` (no noise); a float sigma (``cov = sigma^2 I``, ``E|n|^2 =
    sigma^2`` per complex sample); a 0-d or ``(batch,)`` tensor of sigmas; or a Hermitian PSD
    ``(coil, coil)`` / ``(batch, coil, coil)`` covariance, ``cov[i, j] = E[n_i conj(n_j)]``.
    Noise is white across k-space samples, drawn with ``generator`` (see :func:`complex_noise`).
    ``mask``: real, broadcastable to ``(batch, coil, y, x)``; unsampled entries are exactly 0.
    """
    ksp = fft2c(coil_images(image, maps))
    cov = _as_sigma_or_cov(noise_cov, ksp.device)
    if cov is not None:
        ksp = ksp + complex_noise(ksp.shape, cov, generator, device=ksp.device, dtype=ksp.dtype)
    if mask is not None:
        mask = torch.as_tensor(mask, device=ksp.device)
        try:
            broadcast_shape(mask.shape, ksp.shape)
        except RuntimeError:
            raise InputError(f"mask {_shape(mask)} does not broadcast to k-space "
                             f"{_shape(ksp)}") from None
        ksp = ksp * mask
    return ksp


def estimate_noise_covariance(samples, remove_mean: bool = False) -> torch.Tensor:
    """Sample covariance ``(coil, coil)`` of noise-only samples ``(..., coil)`` (tensor or array).

    ``cov[i, j] = mean_s x_s[i] conj(x_s[j])`` over all leading positions ``s`` (noise is zero
    mean; ``remove_mean=True`` subtracts the sample mean and divides by ``n - 1`` instead).
    Accumulated in double precision; returned as complex128 for float64/complex128 input,
    complex64 otherwise.
    """
    x = _tensor(samples)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise InputError(f"noise samples have shape {_shape(x)}; expected (..., coil)")
    out_dtype = _complex_out(x.dtype)
    x = x.reshape(-1, x.shape[-1]).to(torch.complex128)
    n = x.shape[0]
    if n < 2:
        raise InputError(f"noise samples have shape {_shape(samples)}: need at least 2 samples")
    if remove_mean:
        x = x - x.mean(0, keepdim=True)
    cov = (x.mT @ x.conj()) / (n - 1 if remove_mean else n)
    return (0.5 * (cov + cov.mH)).to(out_dtype)


def whitening_matrix(cov, method: str = "cholesky") -> torch.Tensor:
    """``W`` ``(coil, coil)`` with ``W cov W^H = I`` for a Hermitian positive definite ``cov``.

    ``method="cholesky"``: ``W = L^{-1}`` with ``cov = L L^H`` (lower triangular, the usual
    choice); ``"symmetric"``: ``W = cov^{-1/2}`` (Hermitian; each whitened coil stays closest
    to the original coil). Computed in double precision, returned in ``cov``'s complex dtype.
    """
    if method not in ("cholesky", "symmetric"):
        raise InputError(f"method must be 'cholesky' or 'symmetric'; got {method!r}")
    cov = _tensor(cov)
    out_dtype = _complex_out(cov.dtype)
    c = _check_covariance(cov)
    lam = torch.linalg.eigvalsh(c)
    if bool((lam[..., :1] <= _negligible(lam)).any()):
        raise InputError(f"noise covariance {_shape(cov)} is singular (eigenvalues "
                         f"{lam[..., 0].min().item():.3g} .. {lam[..., -1].max().item():.3g}): "
                         "cannot whiten")
    if method == "cholesky":
        L = torch.linalg.cholesky(c)
        eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device).expand_as(c)
        W = torch.linalg.solve_triangular(L, eye, upper=False)
    else:
        lam, V = torch.linalg.eigh(c)
        W = (V * lam.rsqrt()[..., None, :]) @ V.mH
    return W.to(out_dtype)


def whiten(data: torch.Tensor, W: torch.Tensor, coil_dim: int = -3) -> torch.Tensor:
    """Apply ``W`` over the coil axis: ``out[..., i, y, x] = sum_j W[i, j] data[..., j, y, x]``.

    Use the same ``W`` on k-space and on coil maps to keep the forward model consistent.
    """
    W = torch.as_tensor(W, device=data.device)
    nc = data.shape[coil_dim]
    if W.shape != (nc, nc):
        raise InputError(f"whitening matrix {_shape(W)} does not fit data {_shape(data)} with "
                         f"{nc} coils on dim {coil_dim}: expected ({nc}, {nc})")
    x = data.movedim(coil_dim, -1)
    out = x @ W.to(torch.promote_types(x.dtype, torch.complex64)).mT
    return out.movedim(-1, coil_dim)


def snr_to_sigma(kspace: torch.Tensor, snr: float, db: bool = False) -> torch.Tensor:
    """Noise sigma giving signal-to-noise ratio ``snr`` for noiseless k-space ``(batch, ...)``.

    Definition: ``SNR = rms(k) / sigma`` with ``rms(k) = sqrt(mean |k|^2)`` over all coils and
    k-space positions of one batch item (before masking), ``sigma^2 = E|n|^2`` per complex
    sample. By Parseval (orthonormal FFT) this is also the RMS over the whole field of view of
    the coil images divided by the per-pixel noise sigma. ``db=True`` reads ``snr`` in
    decibels (``20 log10``). Returns ``(batch,)`` float, usable as ``noise_cov`` in
    :func:`simulate_multicoil`. For a correlated covariance ``C``, scale it by
    ``sigma^2 / (trace(C).real / coil)`` to give the same mean noise power per coil.
    """
    snr = float(snr)
    if db:
        snr = 10.0 ** (snr / 20.0)
    if not snr > 0 or not math.isfinite(snr):
        raise InputError(f"snr must be finite and > 0 (linear); got {snr}")
    if kspace.ndim < 2:
        raise InputError(f"k-space has shape {_shape(kspace)}; expected (batch, ...)")
    rms = kspace.abs().pow(2).flatten(1).mean(1).sqrt()
    return rms / snr
