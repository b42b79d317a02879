"""Analytic numerical phantoms: the modified Shepp-Logan phantom and birdcage coil sensitivities.

Shapes (see :mod:`mriprior.physics`):

* :func:`shepp_logan` -> image ``(y, x)`` complex64, rasterised by point sampling.
* :func:`shepp_logan_kspace` -> k-space ``(y, x)`` complex64, sampled from the exact Fourier
  transform of the ellipses (no FFT of a raster, so no inverse crime).
* :func:`phantom_ft` -> the continuous Fourier transform at arbitrary ``(ky, kx)``.
* :func:`birdcage_maps` -> coil sensitivities ``(coil, y, x)`` complex64.

Geometry (identical to ``bart phantom``). Each axis of length N spans the normalised coordinate
``u = (i - N // 2) / (N / 2)`` in ``[-1, 1)``, so the pixel size is ``2 / N`` and the centre is
index ``N // 2`` (our FFT convention). A non-square image stretches the phantom like BART does.
The ellipse table is written in the usual frame ``(X, Y)`` (X right, Y up, Toft's table); it is
placed on our axes as ``X = y``, ``Y = -x``, which is what BART 0.8 produces. In our ``(y, x)``
layout the long axis of the head therefore runs along ``x`` (BART's dim 0); ``img.mT`` shows the
phantom upright (top of the head at row 0).

k-space. With the centred orthonormal FFT over an ``Ny x Nx`` grid of spacing ``2/Ny, 2/Nx``, the
DFT of a smooth raster approximates ``sqrt(Ny * Nx) / 4 * F(k)`` where ``F`` is the continuous
Fourier transform ``F(k) = int f(r) exp(-2 pi i k.r) dr`` sampled at ``k = (m - N // 2) / 2``
cycles per unit. For one ellipse with semi-axes ``a, b``, centre ``c``, rotation ``theta``:

    F(k) = I * pi * a * b * jinc(2 pi rho) * exp(-2 pi i k.c),   jinc(z) = 2 J1(z) / z,
    rho = sqrt((a k_u)^2 + (b k_v)^2),   (k_u, k_v) = k rotated into the ellipse's axes.

:func:`shepp_logan_kspace` returns exactly that scaling, so ``ifft2c`` of it approximates
:func:`shepp_logan` (up to Gibbs ringing and aliasing at the edges). ``bart phantom -k`` uses the
same geometry and phase but the normalisation ``2 / sqrt(2 pi) * a * b * jinc``, i.e. BART's
k-space equals ours divided by :func:`bart_kspace_scale` ``= pi * sqrt(2 pi) * sqrt(Ny Nx) / 8``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from mriprior.errors import InputError
from mriprior.physics.linop import broadcast_shape

__all__ = [
    "Ellipse",
    "SHEPP_LOGAN_MODIFIED",
    "shepp_logan",
    "shepp_logan_kspace",
    "phantom_ft",
    "bart_kspace_scale",
    "jinc",
    "birdcage_maps",
]


@dataclass(frozen=True)
class Ellipse:
    """One ellipse of a phantom table, in the normalised frame ``(X, Y)`` of ``[-1, 1]^2``.

    ``a``, ``b``: semi-axes along the ellipse's own X and Y axes; ``x0``, ``y0``: centre;
    ``theta``: counter-clockwise rotation in radians; ``intensity`` is added inside.
    """

    intensity: float
    a: float
    b: float
    x0: float
    y0: float
    theta: float


def _deg(d: float) -> float:
    # Same expression as BART's table, so the angles agree to the last bit.
    return d / 360.0 * 2.0 * math.pi


# Shepp & Logan (1974) geometry with Toft's (1996, pp. 199-200) higher-contrast intensities,
# as in ``bart phantom`` (``shepplogan_mod``), MATLAB's ``phantom('Modified Shepp-Logan')``.
SHEPP_LOGAN_MODIFIED: tuple[Ellipse, ...] = (
    Ellipse(1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    Ellipse(-0.8, 0.6624, 0.8740, 0.0, -0.0184, 0.0),
    Ellipse(-0.2, 0.1100, 0.3100, 0.22, 0.0, _deg(-18.0)),
    Ellipse(-0.2, 0.1600, 0.4100, -0.22, 0.0, _deg(18.0)),
    Ellipse(0.1, 0.2100, 0.2500, 0.0, 0.35, 0.0),
    Ellipse(0.1, 0.0460, 0.0460, 0.0, 0.1, 0.0),
    Ellipse(0.1, 0.0460, 0.0460, 0.0, -0.1, 0.0),
    Ellipse(0.1, 0.0460, 0.0230, -0.08, -0.605, 0.0),
    Ellipse(0.1, 0.0230, 0.0230, 0.0, -0.606, 0.0),
    Ellipse(0.1, 0.0230, 0.0460, 0.06, -0.605, 0.0),
)


def _shape2(shape: int | Sequence[int], name: str = "shape") -> tuple[int, int]:
    """``n`` or ``(ny, nx)`` -> ``(ny, nx)``, validated."""
    if isinstance(shape, int):
        shape = (shape, shape)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"{name} must be a positive int or (ny, nx); got {shape}")
    return shape


def _coords(n: int, device) -> torch.Tensor:
    """Normalised pixel coordinates ``(i - n // 2) / (n / 2)`` of one axis, float64."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    return (i - n // 2) / (0.5 * n)


def _freqs(n: int, device) -> torch.Tensor:
    """Spatial frequencies (cycles per normalised unit) of the centred DFT of one axis."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    return (i - n // 2) / 2.0


def _to_frame(y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our ``(y, x)`` -> the table frame ``(X, Y) = (y, -x)`` (BART's placement)."""
    return y, -x


def _rotate(e: Ellipse, dx: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Components of ``(dx, dy)`` along the ellipse's own axes."""
    c, s = math.cos(e.theta), math.sin(e.theta)
    return c * dx + s * dy, c * dy - s * dx


def _ellipses_image(ny: int, nx: int, ellipses: Sequence[Ellipse], device) -> torch.Tensor:
    """Point-sampled sum of ellipse indicators, ``(ny, nx)`` float64."""
    X, Y = _to_frame(_coords(ny, device)[:, None], _coords(nx, device)[None, :])
    out = torch.zeros(ny, nx, dtype=torch.float64, device=device)
    for e in ellipses:
        u, v = _rotate(e, X - e.x0, Y - e.y0)
        inside = ((u / e.a) ** 2 + (v / e.b) ** 2 <= 1.0).to(torch.float64)
        out = out + e.intensity * inside
    return out


def jinc(z: torch.Tensor) -> torch.Tensor:
    """``2 J1(z) / z`` with ``jinc(0) = 1`` (real float tensor)."""
    zs = torch.where(z == 0, torch.ones_like(z), z)
    return torch.where(z == 0, torch.ones_like(z), 2.0 * torch.special.bessel_j1(zs) / zs)


def phantom_ft(ky: torch.Tensor, kx: torch.Tensor,
               ellipses: Sequence[Ellipse] = SHEPP_LOGAN_MODIFIED) -> torch.Tensor:
    """Continuous Fourier transform ``F(k) = int f(r) exp(-2 pi i k.r) dr`` of an ellipse phantom.

    ``ky``, ``kx``: real tensors (broadcast together) in cycles per normalised unit, where the
    image axes span ``[-1, 1)``; the k-space of an N-point axis is sampled at
    ``(m - N // 2) / 2``. Returns complex128 with the broadcast shape.
    """
    ky = torch.as_tensor(ky, dtype=torch.float64)
    kx = torch.as_tensor(kx, dtype=torch.float64, device=ky.device)
    kX, kY = _to_frame(ky, kx)  # the frame map is orthogonal, so frequencies map the same way
    out = torch.zeros(broadcast_shape(ky.shape, kx.shape), dtype=torch.complex128,
                      device=ky.device)
    for e in ellipses:
        ku, kv = _rotate(e, kX, kY)
        rho = torch.sqrt((e.a * ku) ** 2 + (e.b * kv) ** 2)
        amp = e.intensity * math.pi * e.a * e.b * jinc(2.0 * math.pi * rho)
        out = out + amp * torch.exp(-2j * math.pi * (kX * e.x0 + kY * e.y0))
    return out


def shepp_logan(shape: int | Sequence[int] = 128, device=None,
                dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Modified (Toft) Shepp-Logan phantom, ``(y, x)`` complex, point-sampled like ``bart phantom``.

    Intensities: 1 (skull), 0.2 (brain), 0 / 0.3 / 0.4 (features); ``shape`` is ``n`` or
    ``(ny, nx)``. Values are summed in float64, then cast to ``dtype``.
    """
    ny, nx = _shape2(shape)
    return _ellipses_image(ny, nx, SHEPP_LOGAN_MODIFIED, device).to(dtype)


def shepp_logan_kspace(shape: int | Sequence[int] = 128, device=None,
                       dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Analytic k-space ``(y, x)`` of :func:`shepp_logan`, scaled for our orthonormal FFT.

    ``K[m] = sqrt(ny * nx) / 4 * F(k_m)`` with ``F`` from :func:`phantom_ft`, so that
    ``ifft2c(shepp_logan_kspace(n)) ~ shepp_logan(n)``.
    """
    ny, nx = _shape2(shape)
    F = phantom_ft(_freqs(ny, device)[:, None], _freqs(nx, device)[None, :])
    return (F * (math.sqrt(ny * nx) / 4.0)).to(dtype)


def bart_kspace_scale(shape: int | Sequence[int]) -> float:
    """Ratio ``shepp_logan_kspace(shape) / (bart phantom -k)``: ``pi sqrt(2 pi) sqrt(ny nx) / 8``.

    BART normalises its analytic k-space as ``2 / sqrt(2 pi) * a * b * jinc`` independent of
    the matrix size, instead of ``sqrt(ny nx) / 4 * pi * a * b * jinc`` (consistent with
    ``bart fft -u`` of its own image).
    """
    ny, nx = _shape2(shape)
    return math.pi * math.sqrt(2.0 * math.pi) * math.sqrt(ny * nx) / 8.0


def _coil_layout(n_coils: int, n_rings: int, radius: float):
    """Per coil: centre ``(xc, yc, zc)`` and azimuth ``alpha`` (lists of floats)."""
    per_ring = math.ceil(n_coils / n_rings)
    xs, ys, zs, alphas = [], [], [], []
    for c in range(n_coils):
        ring, q = divmod(c, per_ring)
        alpha = 2.0 * math.pi * (q + ring / n_rings) / per_ring  # rings staggered
        xs.append(radius * math.cos(alpha))
        ys.append(radius * math.sin(alpha))
        zs.append(ring - 0.5 * (n_rings - 1))
        alphas.append(alpha)
    return xs, ys, zs, alphas


def birdcage_maps(n_coils: int, shape: int | Sequence[int], radius: float = 1.5,
                  n_rings: int = 1, z: float = 0.0, normalize: str = "center",
                  support: torch.Tensor | None = None, device=None,
                  dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Analytic birdcage-style coil sensitivities ``(coil, y, x)``.

    The model of ISMRMRD's ``generate_birdcage_sensitivities`` and SigPy's
    ``birdcage_maps`` (after Biot-Savart for a wire: magnitude ~ 1/distance, phase following
    the azimuth around it). Coils sit on ``n_rings`` rings of ``P = ceil(n_coils / n_rings)``
    coils each, ring ``r`` at height ``z_r = r - (n_rings - 1) / 2``, coil ``q`` of ring ``r``
    at azimuth ``alpha = 2 pi (q + r / n_rings) / P`` (rings staggered by a fraction of a coil,
    so no two coils share an azimuth and the maps stay independent at ``z = 0``) and centre
    ``(radius cos alpha, radius sin alpha, z_r)``. In normalised pixel coordinates ``(x, y)``
    (each axis spans ``[-1, 1)``, see module doc) of the slice at height ``z``::

        d_c   = sqrt((x - x_c)^2 + (y - y_c)^2 + (z - z_c)^2)
        phi_c = atan2(x - x_c, -(y - y_c)) - alpha_c
        s_c   = exp(i phi_c) / d_c

    ``normalize``: ``"center"`` divides all maps by their root-sum-of-squares at the image
    centre (the RSS is then smooth, 1 at the centre); ``"rss"`` divides by the RSS at every
    pixel, so ``sum_c |s_c|^2 = 1`` (as ESPIRiT maps); ``"none"`` keeps ``1/d``. ``support``
    (``(y, x)`` bool or 0/1) zeroes the maps outside the object, as ESPIRiT does.
    ``radius`` must exceed 1 (coils outside the unit disc that holds the object).
    """
    ny, nx = _shape2(shape)
    if int(n_coils) < 1 or int(n_rings) < 1 or int(n_rings) > int(n_coils):
        raise InputError(f"need n_coils >= n_rings >= 1; got n_coils={n_coils}, n_rings={n_rings}")
    if not radius > 1.0:
        raise InputError(f"radius must be > 1 (coils outside the object); got {radius}")
    if normalize not in ("center", "rss", "none"):
        raise InputError(f"normalize must be 'center', 'rss' or 'none'; got {normalize!r}")
    xs, ys, zs, alphas = _coil_layout(int(n_coils), int(n_rings), float(radius))
    f64 = dict(dtype=torch.float64, device=device)
    xc, yc, zc, al = (torch.tensor(v, **f64)[:, None, None] for v in (xs, ys, zs, alphas))
    dx = _coords(nx, device)[None, None, :] - xc
    dy = _coords(ny, device)[None, :, None] - yc
    d = torch.sqrt(dx ** 2 + dy ** 2 + (z - zc) ** 2)
    maps = torch.polar(1.0 / d, torch.atan2(dx, -dy) - al)
    rss = torch.sqrt((maps.abs() ** 2).sum(0))
    if normalize == "center":
        maps = maps / rss[ny // 2, nx // 2]
    elif normalize == "rss":
        maps = maps / rss
    if support is not None:
        support = torch.as_tensor(support, device=maps.device)
        if support.shape != (ny, nx):
            raise InputError(f"support has shape {tuple(support.shape)}; expected {(ny, nx)}")
        maps = maps * (support != 0)
    return maps.to(dtype)
