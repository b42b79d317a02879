"""Phase physics of a magnitude slice: tissue classes, susceptibility, the dipole field, and the
smooth background components (used by :mod:`mriprior.data.simulate`; ``docs/simulation.md``).

Shapes: magnitudes and masks ``(batch, y, x)``; every function is batched and runs on the
tensors' device. Lengths are fractions of the field of view (the longer image axis spans 1);
susceptibilities and fields in ppm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mriprior.errors import InputError

__all__ = ["GAMMA_BAR_MHZ_PER_T", "CHI_TISSUE", "CHI_AIR", "CHI_BONE", "check_magnitude",
           "gaussian_blur", "fill_holes", "segment", "susceptibility_map", "dipole_kernel",
           "dipole_field", "polynomial_phase", "gaussian_random_field", "n_monomials"]

GAMMA_BAR_MHZ_PER_T = 42.577478518  # proton gyromagnetic ratio / (2 pi), MHz / T
# Volume susceptibilities (SI, ppm): the literature values commonly used in field simulations
# of the head (water/soft tissue and air as tabulated by Schenck, Med Phys 23:815, 1996;
# cortical bone about -11.3).
CHI_TISSUE = -9.05
CHI_AIR = 0.36
CHI_BONE = -11.3

def n_monomials(order: int) -> int:
    """Number of 2D monomials of degree <= ``order``."""
    return (order + 1) * (order + 2) // 2


# --------------------------------------------------------------------------------------------
# image helpers (batched, any device)
# --------------------------------------------------------------------------------------------


_NEG_TOL = 1e-6  # negative magnitudes down to -_NEG_TOL * max are rounding residue: set to 0


def check_magnitude(magnitude) -> torch.Tensor:
    m = torch.as_tensor(magnitude)
    if m.is_complex():
        raise InputError("magnitude must be real (got a complex tensor); take .abs() first")
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or min(m.shape[-2:]) < 2:
        raise InputError(f"magnitude has shape {tuple(m.shape)}; expected (batch, y, x)")
    if not torch.isfinite(m).all():
        raise InputError("magnitude contains NaN or Inf")
    if (m < 0).any():
        if not m.is_floating_point() or m.min() < -_NEG_TOL * m.abs().max():
            raise InputError(f"magnitude has negative values (min {m.min().item():.3g}); "
                             "expected |image| >= 0")
        m = m.clamp_min(0)  # rounding residue (e.g. -1e-17 from summed ellipses)
    return m


def _pixels(n_fov: float, shape) -> float:
    """A length in FOV fractions -> pixels."""
    return float(n_fov) * max(shape[-2:])


def gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of a real ``(batch, y, x)`` tensor (reflect / replicate edges)."""
    if sigma_px <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma_px)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = k / k.sum()
    y = x[:, None]
    for dim in (-1, -2):
        n = y.shape[dim]
        pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
        y = F.pad(y, pad, mode="reflect" if n > r else "replicate")
        w = k.reshape(1, 1, 1, -1) if dim == -1 else k.reshape(1, 1, -1, 1)
        y = F.conv2d(y, w)
    return y[:, 0]


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilation by a ``(2 r + 1)`` square: separable max pools along x, then y."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    x = F.max_pool2d(mask[:, None].float(), (1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))[:, 0] > 0


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return ~_dilate(~mask, radius)


def _propagate_runs(reach: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Spread ``reach`` along the last axis over each run of consecutive ``bg`` pixels."""
    start = bg.clone()
    start[..., 1:] &= ~bg[..., :-1]
    run = torch.cumsum(start.flatten().long(), 0).reshape(bg.shape)  # unique run ids (1-based)
    hit = torch.zeros(int(run.max()) + 1 if run.numel() else 1, dtype=torch.bool,
                      device=bg.device)
    hit[run[reach & bg]] = True
    return hit[run] & bg


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """Fill the holes of a boolean ``(batch, y, x)`` mask (regions not connected to the border).

    Flood fill of the background from the image border with 4-connectivity (as
    ``scipy.ndimage.binary_fill_holes``): reached background runs are spread along rows, then
    columns, until nothing changes (a few sweeps for ordinary shapes; any device).
    """
    bg = ~mask
    reach = torch.zeros_like(mask)
    reach[:, 0, :], reach[:, -1, :], reach[:, :, 0], reach[:, :, -1] = (
        bg[:, 0, :], bg[:, -1, :], bg[:, :, 0], bg[:, :, -1])
    while True:
        prev = reach
        reach = _propagate_runs(reach, bg)
        reach = _propagate_runs(reach.mT.contiguous(), bg.mT.contiguous()).mT
        if torch.equal(reach, prev):
            return ~reach


# --------------------------------------------------------------------------------------------
# (b) segmentation and susceptibility field
# --------------------------------------------------------------------------------------------


def _robust_max(x: torch.Tensor) -> torch.Tensor:
    """Per-item 99.5th percentile of ``x`` ``(batch, y, x)`` -> ``(batch, 1, 1)``, > 0."""
    q = torch.quantile(x.flatten(1).float(), 0.995, dim=1).to(x.dtype)
    return q.clamp_min(torch.finfo(x.dtype).tiny).reshape(-1, 1, 1)


def segment(magnitude: torch.Tensor, support_threshold: float = 0.1,
            air_threshold: float = 0.05, bone_band: float = 0.06,
            bone_threshold: float = 0.3, n_classes: int = 3) -> dict[str, torch.Tensor]:
    """Tissue / air / bone classes of a magnitude ``(batch, y, x)``; all masks boolean.

    ``s`` = the magnitude blurred with a Gaussian of sigma 1 % of the FOV, divided by its
    99.5th percentile. ``raw = s > support_threshold``; ``support = fill_holes(raw)``.
    ``air`` = outside the support, plus the holes (enclosed regions) where ``s <
    air_threshold`` (sinuses, ear canals). ``bone`` = pixels of the support within
    ``bone_band`` (FOV fraction) of its boundary that are darker (lightly blurred magnitude,
    sigma 1 pixel) than ``bone_threshold`` times the median of the support (the dark skull
    under the bright scalp). ``tissue`` = support minus air and bone. ``labels`` ``(batch, y,
    x)`` int64: tissue class ``0 .. n_classes - 1`` at the quantiles of the tissue's
    magnitude (darkest first), -1 elsewhere. Empty images give an empty support.
    """
    m = check_magnitude(magnitude)
    m = m.to(torch.float64 if m.dtype == torch.float64 else torch.float32)
    shape = m.shape
    s = gaussian_blur(m, max(1.0, _pixels(0.01, shape)))
    s = s / _robust_max(s)
    raw = s > support_threshold
    support = fill_holes(raw)
    air = ~support | (support & ~raw & (s < air_threshold))
    light = gaussian_blur(m, 1.0)
    med = torch.stack([light[i][support[i]].median() if support[i].any() else light.new_zeros(())
                       for i in range(shape[0])]).reshape(-1, 1, 1)
    band = support & ~_erode(support, int(round(_pixels(bone_band, shape))))
    bone = band & (light < bone_threshold * med) & ~air
    tissue = support & ~air & ~bone
    labels = torch.full(shape, -1, dtype=torch.int64, device=m.device)
    if n_classes > 1:
        vals = torch.where(tissue, light, torch.full_like(light, float("nan"))).flatten(1)
        qs = torch.linspace(0, 1, n_classes + 1, dtype=vals.dtype, device=vals.device)[1:-1]
        edges = torch.nanquantile(vals, qs, dim=1).T  # (batch, n_classes - 1)
        edges = torch.nan_to_num(edges, nan=0.0)
        cls = (light.flatten(1)[:, :, None] > edges[:, None, :]).sum(-1).reshape(shape)
    else:
        cls = torch.zeros(shape, dtype=torch.int64, device=m.device)
    labels = torch.where(tissue, cls, labels)
    return {"support": support, "air": air, "bone": bone, "tissue": tissue, "labels": labels}


def susceptibility_map(classes: dict[str, torch.Tensor], reference: str = "air") -> torch.Tensor:
    """``chi`` (ppm) per pixel from :func:`segment`'s masks, relative to ``reference``.

    ``reference="air"`` (default, used by :func:`dipole_field`) makes the outside 0, so
    zero-padding the map is exact; ``"tissue"`` gives ``chi - chi_tissue`` (air +9.41, bone
    -2.25). The two differ by a constant, whose field is a constant phase.
    """
    ref = {"air": CHI_AIR, "tissue": CHI_TISSUE}[reference]
    chi = torch.full(classes["support"].shape, CHI_TISSUE - ref, dtype=torch.float32,
                     device=classes["support"].device)
    chi = torch.where(classes["air"], torch.full_like(chi, CHI_AIR - ref), chi)
    return torch.where(classes["bone"], torch.full_like(chi, CHI_BONE - ref), chi)


def _b0_direction(tilt_deg: torch.Tensor, azimuth_deg: torch.Tensor):
    """Unit B0 direction ``(b_y, b_x, b_n)`` in slice coordinates, each ``(batch,)``."""
    t, a = torch.deg2rad(tilt_deg), torch.deg2rad(azimuth_deg)
    return torch.sin(t) * torch.sin(a), torch.sin(t) * torch.cos(a), torch.cos(t)


def dipole_kernel(shape, tilt_deg, azimuth_deg, slab, pixel: float = 1.0, device=None,
                  dtype=torch.float64) -> torch.Tensor:
    """Finite-slab 2D dipole kernel ``D(k)`` on an FFT grid, ``(batch, ny, nx)`` (centred).

    The unit dipole kernel ``D3(k) = 1/3 - (k.b)^2 / |k|^2`` (B0 along the unit vector ``b``,
    Lorentz sphere included) relates ``chi`` to the relative field ``delta = B / B0 - 1``. For a
    2D slice we assume ``chi(x, y, z) = chi(x, y) rect(z / T)``, a slab of thickness ``T``
    centred on the slice, and evaluate the field in the slice plane ``z = 0``:
    ``D(k) = int dk_z T sinc(k_z T) D3(k, k_z)``. With ``k`` the in-plane frequency,
    ``b = (b_perp, b_n)`` this integrates in closed form to::

        D(k) = 1/3 - b_n^2 exp(-pi |k| T) - (k.b_perp)^2 / |k|^2 (1 - exp(-pi |k| T))

    ``T -> inf`` gives the usual 2D (infinite cylinder) approximation ``1/3 - (k.b_perp)^2 /
    |k|^2``, under which a slice perpendicular to B0 (``b_n = 1``) sees only ``chi / 3``
    (no spatial structure); a finite ``T`` adds the fields of the structure's top and bottom
    faces, which is what the sinuses and ear canals below an axial slice do. ``T -> 0`` gives a
    thin sheet (``D = 1/3 - b_n^2`` for ``b`` normal to the sheet). ``D(0) = 1/3 - b_n^2``
    (for ``T = inf``: ``1/3 - |b_perp|^2 / 2``, the angular mean). ``D(0)`` only sets a
    constant field offset, which :func:`phase_from_params` removes anyway.

    ``shape`` ``(ny, nx)``; ``tilt_deg``, ``azimuth_deg``, ``slab`` scalars or ``(batch,)``
    (see :class:`PhaseParams`); ``slab`` may be ``inf``. ``pixel``: pixel size in the units
    of ``slab``. Frequencies follow the centred FFT (centre ``n // 2``).
    """
    ny, nx = (int(s) for s in shape)
    f = dict(dtype=dtype, device=device)
    tilt, az, T = (torch.as_tensor(v, **f).reshape(-1, 1, 1) for v in (tilt_deg, azimuth_deg,
                                                                         slab))
    by, bx, bn = _b0_direction(tilt, az)
    ky = ((torch.arange(ny, **f) - ny // 2) / (ny * pixel))[:, None]
    kx = ((torch.arange(nx, **f) - nx // 2) / (nx * pixel))[None, :]
    k2 = ky ** 2 + kx ** 2
    k = k2.sqrt()
    proj = (ky * by + kx * bx) ** 2 / torch.where(k2 > 0, k2, torch.ones_like(k2))
    inf = torch.isinf(T)
    e = torch.where(inf, torch.zeros_like(k * T), torch.exp(-math.pi * k * T))
    e = torch.where(k2 > 0, e, torch.ones_like(e))
    D = 1.0 / 3.0 - bn ** 2 * e - proj * (1.0 - e)
    # k = 0: the limit 1/3 - b_n^2 for finite T; for T = inf the limit depends on the
    # direction of k, and its angular mean 1/3 - |b_perp|^2 / 2 makes the field of a compact
    # object vanish far away (the analytic infinite-cylinder solution)
    dc = torch.where(inf, 1.0 / 3.0 - 0.5 * (by ** 2 + bx ** 2), 1.0 / 3.0 - bn ** 2)
    return torch.where(k2 > 0, D, dc.expand_as(D))


def dipole_field(chi: torch.Tensor, tilt_deg, azimuth_deg, slab, pad: float = 1.0) -> torch.Tensor:
    """Relative field ``delta`` (same unit as ``chi``, e.g. ppm) of ``chi`` ``(batch, y, x)``.

    ``delta = ifft(D * fft(chi))`` with :func:`dipole_kernel`, the map zero-padded by ``pad``
    times its size on each axis (``chi`` must be ~0 near the border: reference it to the
    surrounding air). Lengths (``slab``) are FOV fractions (longer axis = 1).
    """
    b, ny, nx = chi.shape
    py, px = int(round(pad * ny)), int(round(pad * nx))
    dt = torch.float64 if chi.dtype in (torch.float64, torch.complex128) else torch.float32
    x = F.pad(chi.to(dt), (px // 2, px - px // 2, py // 2, py - py // 2))
    My, Mx = x.shape[-2:]
    D = dipole_kernel((My, Mx), tilt_deg, azimuth_deg, slab, pixel=1.0 / max(ny, nx),
                      device=chi.device, dtype=dt)
    D = torch.fft.ifftshift(D, dim=(-2, -1))
    out = torch.fft.ifft2(D * torch.fft.fft2(x)).real
    return out[:, py // 2: py // 2 + ny, px // 2: px // 2 + nx]


# --------------------------------------------------------------------------------------------
# (a) background
# --------------------------------------------------------------------------------------------


def _unit_coords(shape, device, dtype=torch.float64):
    ny, nx = shape[-2:]
    n = max(ny, nx)
    uy = (torch.arange(ny, device=device, dtype=dtype) - ny // 2) / (n / 2)
    ux = (torch.arange(nx, device=device, dtype=dtype) - nx // 2) / (n / 2)
    return uy[:, None], ux[None, :]


def polynomial_phase(coef, order: int, shape, device=None, dtype=torch.float64) -> torch.Tensor:
    """``sum_{i + j <= order} c_ij u_y^i u_x^j`` on ``(y, x)``; ``coef`` ``(batch, n_terms)``.

    Monomial order: degree ``d = 0 .. order``, within a degree ``i = d .. 0`` (``j = d - i``),
    i.e. ``1, u_y, u_x, u_y^2, u_y u_x, u_x^2, ...``. ``u``: see the module doc.
    """
    c = torch.as_tensor(coef, dtype=dtype, device=device)
    c = c.reshape(1, -1) if c.ndim == 1 else c
    if c.shape[-1] != n_monomials(order):
        raise InputError(f"polynomial of order {order} needs {n_monomials(order)} "
                         f"coefficients, got {c.shape[-1]}")
    uy, ux = _unit_coords(shape, device, dtype)
    terms = [uy ** i * ux ** (d - i) for d in range(order + 1) for i in range(d, -1, -1)]
    basis = torch.stack([t.expand(shape[-2], shape[-1]) for t in terms])  # (n_terms, y, x)
    return torch.einsum("bt,tyx->byx", c, basis)


def gaussian_random_field(shape, length: float, seed: int, device=None,
                          dtype=torch.float64) -> torch.Tensor:
    """Zero-mean, unit-RMS smooth random field ``(y, x)``, correlation ``exp(-r^2 / (2 l^2))``.

    White Gaussian noise (CPU generator seeded with ``seed``, so identical on any device) on a
    grid twice the image size (to avoid the FFT's periodic wrap-around), multiplied in k-space
    by the amplitude filter ``exp(-pi^2 l^2 |k|^2)`` (``k`` in cycles per FOV, ``l`` =
    ``length`` in FOV fractions), cropped, then scaled to RMS 1 over the image.
    """
    ny, nx = (int(s) for s in shape[-2:])
    My, Mx = 2 * ny, 2 * nx
    g = torch.Generator().manual_seed(int(seed))
    w = torch.randn(My, Mx, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    n = max(ny, nx)
    ky = torch.fft.fftfreq(My, d=1.0 / n, device=device, dtype=dtype)[:, None]
    kx = torch.fft.fftfreq(Mx, d=1.0 / n, device=device, dtype=dtype)[None, :]
    H = torch.exp(-(math.pi * length) ** 2 * (ky ** 2 + kx ** 2))
    f = torch.fft.ifft2(H * torch.fft.fft2(w)).real[:ny, :nx]
    f = f - f.mean()
    return f / f.pow(2).mean().sqrt().clamp_min(torch.finfo(dtype).tiny)
