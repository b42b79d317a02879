"""Cartesian undersampling masks: Poisson-disc, 1D variable-density / equispaced, uniform random.

Conventions
-----------
* A mask is defined on a ``shape = (ny, nx)`` grid and is returned as a :class:`Mask` whose
  ``array`` is a boolean NumPy array of that shape; ``Mask.tensor()`` gives the real ``(ny, nx)``
  tensor that broadcasts against k-space ``(batch, coil, y, x)`` (see :mod:`mriprior.physics`).
* 1D masks sample whole lines along ``x``: the phase-encode axis is ``y`` (axis 0), the
  readout ``x`` (axis 1) is fully sampled.
* The k-space centre of an axis of length N is index ``N // 2`` (as in :mod:`.fft`). A
  calibration / ACS block of length C along that axis covers indices
  ``N // 2 - C // 2 .. N // 2 - C // 2 + C - 1``.
* Acceleration ``R = ny * nx / (number of sampled points)``, counted over the whole grid with the
  calibration region included (also for elliptical masks, whose corners are never sampled).
* Every function is deterministic given ``seed`` (a private ``numpy.random.Generator``; no
  global random state). Bad parameters raise one :class:`~mriprior.errors.InputError` naming
  the parameter.

Poisson-disc sampler
--------------------
A Bridson-style sampler: starting from the calibration region (or the centre point), active
points throw ``k = 30`` darts into the annulus between one and two disc radii around
themselves; a dart is kept when it falls outside the exclusion disc of every sample so far; an
active point that misses 30 times retires. All active points throw their darts at once
(vectorised in NumPy) and the hits are then accepted one by one, so two darts never end up
closer than the radius allows. Positions live on a grid ``4x`` finer than the k-space grid,
and each sample marks its exclusion disc there; a sample's pixel is ``floor(position)``. The
disc radius can vary over k-space (variable density) and be elliptical (different radii along
y and x, as BART's per-axis accelerations give). Each pixel's radius is dithered by +-5 %
(fixed by the seed) so that the number of samples changes smoothly with the radius scale,
which lets :func:`poisson_disc` reach a target acceleration by a secant search on that scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import torch

from mriprior.errors import InputError

__all__ = ["Mask", "poisson_disc", "poisson_disc_bart", "variable_density_1d",
           "equispaced_1d", "uniform_random", "centre_slice", "pattern_kind", "BART_MIN_DIST"]

#: BART's default Poisson-disc distance (``poisson -D``), in units of the acceleration-scaled
#: grid: with acceleration ``a`` the disc radius is ``a * BART_MIN_DIST`` pixels.
BART_MIN_DIST = 1.0 / 1.275
_BART_VD = 20.0  # BART's ``poisson -v`` strength
_SUB = 4  # sub-pixel resolution of the sampler
_TRIES = 30  # darts per active point before it retires (Bridson's k)
_DITHER = 0.05  # +- relative dither of the disc radius
_MIN_RADIUS = 0.5  # pixels; smaller discs would only stack several samples per pixel


@dataclass(frozen=True, eq=False)
class Mask:
    """A sampling mask and its acceleration.

    ``array``: read-only boolean ``(ny, nx)``; ``accel``: achieved ``ny * nx / array.sum()``;
    ``target``: the requested acceleration; ``kind``: which generator made it.
    """

    array: np.ndarray
    accel: float
    target: float
    kind: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    @property
    def n_sampled(self) -> int:
        return int(self.array.sum())

    def tensor(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The mask as a real ``(ny, nx)`` tensor of 0/1 (broadcasts against k-space)."""
        return torch.from_numpy(np.array(self.array, copy=True)).to(device=device, dtype=dtype)

    def to_bart(self) -> np.ndarray:
        """complex64 array ``1 x ny x nx`` in BART dim order (dim 1 = y, dim 2 = x).

        This is the layout ``bart poisson -Y ny -Z nx`` writes; see :mod:`mriprior.cli.poisson`.
        """
        return self.array.astype(np.complex64)[None]


def _mask(array: np.ndarray, target: float, kind: str) -> Mask:
    array = np.ascontiguousarray(array, dtype=bool)
    array.setflags(write=False)
    n = int(array.sum())
    return Mask(array, array.size / n if n else math.inf, float(target), kind)


# ----------------------------------------------------------------------------- validation

def _shape(shape) -> tuple[int, int]:
    try:
        dims = tuple(int(s) for s in shape)
        ok = len(dims) == 2 and all(d >= 1 and d == s for d, s in zip(dims, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"shape={shape!r}: must be 2D (ny, nx) with positive integer sizes")
    return dims


def _accel(accel, name: str = "accel") -> float:
    try:
        r = float(accel)
    except (TypeError, ValueError):
        raise InputError(f"{name}={accel!r}: must be a number >= 1") from None
    if not math.isfinite(r) or r < 1:
        raise InputError(f"{name}={accel!r}: must be a finite number >= 1")
    return r


def _calib(calib, shape: tuple[int, int], name: str = "calib") -> tuple[int, int]:
    if calib is None:
        return (0, 0)
    c = (calib, calib) if np.ndim(calib) == 0 else tuple(calib)
    try:
        cy, cx = (int(v) for v in c)
        ok = len(c) == 2 and cy == c[0] and cx == c[1] and cy >= 0 and cx >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}={calib!r}: must be a size >= 0 or a pair (cy, cx) of sizes")
    if cy > shape[0] or cx > shape[1]:
        raise InputError(f"{name}={calib!r} is larger than the matrix {shape}")
    return (cy, cx) if cy and cx else (0, 0)


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed={seed!r}: must be an integer >= 0")
    return np.random.default_rng(int(seed))


def centre_slice(n: int, c: int) -> slice:
    """Indices of a length-``c`` block centred on ``n // 2`` (the k-space centre)."""
    start = n // 2 - c // 2
    return slice(start, start + c)


def _calib_array(shape: tuple[int, int], calib: tuple[int, int]) -> np.ndarray:
    a = np.zeros(shape, dtype=bool)
    if calib[0] and calib[1]:
        a[centre_slice(shape[0], calib[0]), centre_slice(shape[1], calib[1])] = True
    return a


def _offsets(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (dy (ny, 1), dx (1, nx)) from the k-space centre ``N // 2``."""
    ny, nx = shape
    return (np.arange(ny) - ny // 2)[:, None].astype(float), \
        (np.arange(nx) - nx // 2)[None, :].astype(float)


def _ellipse(shape: tuple[int, int]) -> np.ndarray:
    """Pixels inside the ellipse inscribed in the grid."""
    dy, dx = _offsets(shape)
    return (dy / (shape[0] / 2)) ** 2 + (dx / (shape[1] / 2)) ** 2 <= 1.0


# ----------------------------------------------------------------------------- Poisson disc

class _Stencils:
    """Boolean exclusion ellipses on the sub-pixel grid, cached by quantised radii."""

    Q = 4  # radii are quantised to 1/Q of a sub-pixel

    def __init__(self):
        self._cache: dict[int, tuple[np.ndarray, int, int]] = {}

    @classmethod
    def keys(cls, ry: np.ndarray, rx: np.ndarray) -> list[int]:
        """Per-pixel stencil keys (a flat Python list, for fast lookups in the sampling loop)."""
        qy = np.rint(ry * cls.Q).astype(np.int64)
        qx = np.rint(rx * cls.Q).astype(np.int64)
        return (qy * (1 << 32) + qx).ravel().tolist()

    def get(self, key: int) -> tuple[np.ndarray, int, int]:
        st = self._cache.get(key)
        if st is None:
            ry, rx = (key >> 32) / self.Q, (key & 0xFFFFFFFF) / self.Q
            my, mx = max(math.ceil(ry) - 1, 0), max(math.ceil(rx) - 1, 0)
            dy = np.arange(-my, my + 1)[:, None] / ry
            dx = np.arange(-mx, mx + 1)[None, :] / rx
            st = self._cache[key] = (dy ** 2 + dx ** 2 < 1.0, my, mx)
        return st


def _bridson(ry: np.ndarray, rx: np.ndarray, allowed: np.ndarray, calib: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Poisson-disc samples on the pixel grid.

    ``ry``, ``rx``: per-pixel disc radii (pixels) along y and x; ``allowed``: pixels that may be
    sampled; ``calib``: pixels sampled up front (they seed the growth). Returns bool (ny, nx).
    """
    ny, nx = allowed.shape
    s = _SUB
    ry_s, rx_s = ry * s, rx * s
    pad = math.ceil(2 * max(ry_s.max(), rx_s.max())) + 2
    wp = nx * s + 2 * pad
    blocked = np.ones((ny * s + 2 * pad, wp), dtype=bool)
    blocked[pad:-pad, pad:-pad] = ~np.repeat(np.repeat(allowed, s, 0), s, 1)
    flat = blocked.ravel()
    keys = _Stencils.keys(ry_s, rx_s)
    stencils = _Stencils()
    samples = np.zeros(ny * nx, dtype=bool)

    def accept(y: int, x: int) -> None:
        p = ((y - pad) // s) * nx + (x - pad) // s
        samples[p] = True
        m, my, mx = stencils.get(keys[p])
        blocked[y - my:y + my + 1, x - mx:x + mx + 1] |= m

    seeds = np.argwhere(calib) if calib.any() else np.array([[ny // 2, nx // 2]])
    active = seeds * s + s // 2 + pad
    for y, x in active.tolist():
        accept(y, x)
    ry_f, rx_f = ry_s.astype(np.float32).ravel(), rx_s.astype(np.float32).ravel()
    while len(active):
        n = len(active)
        pix = ((active[:, 0] - pad) // s) * nx + (active[:, 1] - pad) // s
        # darts uniform in the annulus between one and two radii (float32 is plenty here)
        rho = np.sqrt(1.0 + 3.0 * rng.random((n, _TRIES), dtype=np.float32))
        phi = np.float32(2 * np.pi) * rng.random((n, _TRIES), dtype=np.float32)
        cy = np.floor(rho * np.sin(phi) * ry_f[pix][:, None] + np.float32(0.5)).astype(np.int64)
        cx = np.floor(rho * np.cos(phi) * rx_f[pix][:, None] + np.float32(0.5)).astype(np.int64)
        darts = (cy + active[:, :1]) * wp + cx + active[:, 1:]
        free = ~flat[darts]
        alive = free.any(axis=1)
        hits = darts[np.arange(n), free.argmax(axis=1)][alive]
        new = []
        for d in hits.tolist():
            if not flat[d]:  # an earlier hit of this round may have blocked it
                y, x = divmod(d, wp)
                accept(y, x)
                new.append((y, x))
        active = np.concatenate([active[alive], np.asarray(new, np.int64).reshape(-1, 2)])
        active = active[rng.permutation(len(active))]
    return samples.reshape(ny, nx) | calib


def _sample(shape, ry, rx, allowed, calib, seed) -> np.ndarray:
    """Dither the radii (from ``seed``), clamp them to ``_MIN_RADIUS``, and run the sampler."""
    rng = _rng(seed)
    dither = 1.0 + _DITHER * (2.0 * rng.random(shape) - 1.0)
    ry = np.maximum(ry * dither, _MIN_RADIUS)
    rx = np.maximum(rx * dither, _MIN_RADIUS)
    return _bridson(ry, rx, allowed, calib, rng)


def poisson_disc_bart(shape, accel_y: float = 1.0, accel_z: float = 1.0, calib=0, seed: int = 0,
                      variable_density: bool = False, ellipse: bool = False) -> Mask:
    """Poisson-disc mask with ``bart poisson``'s parameters and sampling-density model.

    ``shape = (Y, Z)`` (BART's dims 1 and 2 = our axes 0 and 1); ``accel_y``, ``accel_z``: BART's
    ``-y``/``-z`` per-axis accelerations (>= 1): the disc radius along each axis is
    ``accel * BART_MIN_DIST`` pixels at the centre. ``variable_density`` (``-v``) grows the
    radius as ``1 + 20 * ((dy / accel_y)**2 + (dz / accel_z)**2) / max(Y, Z)**2`` with the pixel
    offsets ``dy, dz`` from the centre; ``ellipse`` (``-e``) samples only inside the inscribed
    ellipse; ``calib`` (``-C``): fully sampled central block (a size or a pair). As with BART, the
    total acceleration is not ``accel_y * accel_z`` (it grows with ``-v`` and ``-e`` and the
    calibration region): read it from ``Mask.accel``.
    """
    shape = _shape(shape)
    ay, az = _accel(accel_y, "accel_y"), _accel(accel_z, "accel_z")
    cal = _calib_array(shape, _calib(calib, shape))
    dy, dz = _offsets(shape)
    g = np.ones(shape)
    if variable_density:
        g = g + _BART_VD * ((dy / ay) ** 2 + (dz / az) ** 2) / max(shape) ** 2
    allowed = _ellipse(shape) if ellipse else np.ones(shape, dtype=bool)
    target = ay * az
    arr = _sample(shape, BART_MIN_DIST * ay * g, BART_MIN_DIST * az * g, allowed, cal, seed)
    return _mask(arr, target, "poisson-bart")


def poisson_disc(shape, accel: float, calib=(20, 20), seed: int = 0,
                 variable_density: bool = True, ellipse: bool = True,
                 radius_ratio: float = 4.0, tol: float = 0.01, max_iter: int = 12) -> Mask:
    """Poisson-disc mask with a fully sampled calibration block, at a target acceleration.

    ``shape = (ny, nx)``; ``accel``: target total acceleration ``ny * nx / samples`` (calibration
    included); ``calib``: central block size (int or ``(cy, cx)``; 0 / None for none).
    The disc radius is ``scale * (1 + (radius_ratio - 1) * rho**2)`` pixels, where
    ``rho = sqrt((dy / (ny/2))**2 + (dx / (nx/2))**2)`` is the normalised k-space radius (1 at
    the edge of the inscribed ellipse), so the sample density falls by ``radius_ratio**2``
    from centre to edge; ``variable_density=False`` uses a constant radius. ``ellipse``: sample
    only inside the inscribed ellipse (corners empty). ``scale`` is found by a secant search in
    log-log space until the achieved acceleration is within ``tol`` (relative) of ``accel`` or
    ``max_iter`` masks were drawn; the closest mask is returned (``Mask.accel``).
    """
    shape = _shape(shape)
    target = _accel(accel)
    if not (isinstance(radius_ratio, (int, float)) and math.isfinite(radius_ratio)
            and radius_ratio >= 1):
        raise InputError(f"radius_ratio={radius_ratio!r}: must be a number >= 1")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise InputError(f"tol={tol!r}: must be in (0, 1)")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise InputError(f"max_iter={max_iter!r}: must be an integer >= 1")
    c = _calib(calib, shape)
    cal = _calib_array(shape, c)
    n_total = shape[0] * shape[1]
    n_fixed = max(int(cal.sum()), 1)  # the calibration block, or the centre point seeding growth
    if target * n_fixed > n_total:
        what = "the calibration block alone" if cal.any() else "a single sample"
        raise InputError(f"accel={accel!r} is out of reach with calib={calib!r} on {shape}: "
                         f"{what} gives R = {n_total / n_fixed:.4g}")
    _rng(seed)
    allowed = _ellipse(shape) if ellipse else np.ones(shape, dtype=bool)
    dy, dx = _offsets(shape)
    rho2 = (dy / (shape[0] / 2)) ** 2 + (dx / (shape[1] / 2)) ** 2
    profile = 1.0 + ((radius_ratio - 1.0) * rho2 if variable_density else 0.0 * rho2)

    def draw(scale: float) -> tuple[np.ndarray, float]:
        r = scale * profile
        arr = _sample(shape, r, r, allowed, cal, seed)
        return arr, n_total / arr.sum()

    arr = _secant(draw, target, _initial_scale(profile, allowed, cal, target), tol, max_iter)
    got = n_total / arr.sum()
    if abs(got / target - 1) > tol:
        raise InputError(f"accel={accel!r} is out of reach within {tol:.0%} on {shape}: the "
                         f"closest pattern found has {int(arr.sum())} samples, R = {got:.4g}")
    return _mask(arr, target, "poisson")


# Samples per unit area of a Poisson-disc pattern of radius r are about _DENSITY / r**2
# (measured for this sampler); used only for the search's first guess.
_DENSITY = 0.6


def _initial_scale(profile, allowed, cal, target) -> float:
    """Radius scale whose expected sample count gives ``target`` (bisection on a density model)."""
    free = allowed & ~cal
    inv2 = 1.0 / profile[free] ** 2
    want = allowed.size / target - cal.sum()
    lo, hi = math.log(_MIN_RADIUS), math.log(max(allowed.shape))
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        n = np.minimum(1.0, _DENSITY * inv2 / math.exp(2 * mid)).sum()
        lo, hi = (mid, hi) if n > want else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def _secant(draw, target: float, scale: float, tol: float, max_iter: int) -> np.ndarray:
    """Search the radius scale so that ``draw(scale)[1]`` (the acceleration) hits ``target``.

    Secant steps on ``log R`` vs ``log scale`` (R ~ scale**2 when no region is saturated),
    kept inside the bracket found so far; returns the closest mask drawn.
    """
    lt = math.log(target)
    lo, hi = -math.inf, math.inf  # log-scale bracket: R(lo) < target < R(hi)
    best, best_err = None, math.inf
    prev = None
    ls = math.log(scale)
    for _ in range(max_iter):
        arr, r = draw(math.exp(ls))
        lr = math.log(r)
        if abs(lr - lt) < best_err:
            best, best_err = arr, abs(lr - lt)
        if abs(r / target - 1) <= tol:
            break
        if lr < lt:
            lo = max(lo, ls)
        else:
            hi = min(hi, ls)
        slope = 2.0
        if prev is not None and ls != prev[0]:
            slope = (lr - prev[1]) / (ls - prev[0])
            slope = min(max(slope, 0.5), 4.0)
        prev = (ls, lr)
        step = ls + (lt - lr) / slope
        if not lo < step < hi:
            step = 0.5 * (lo + hi) if math.isfinite(lo) and math.isfinite(hi) else \
                ls + (lt - lr) / 2.0
        if math.isfinite(lo) and math.isfinite(hi) and hi - lo < 1e-4:
            break
        ls = step
    return best


# ----------------------------------------------------------------------------- 1D and random

def _lines_mask(shape: tuple[int, int], lines: np.ndarray) -> np.ndarray:
    arr = np.zeros(shape, dtype=bool)
    arr[lines, :] = True
    return arr


def _acs_lines(shape: tuple[int, int], acs_lines) -> np.ndarray:
    if isinstance(acs_lines, (bool, np.bool_)) or not isinstance(acs_lines, (int, np.integer)) \
            or acs_lines < 0:
        raise InputError(f"acs_lines={acs_lines!r}: must be an integer >= 0")
    if acs_lines > shape[0]:
        raise InputError(f"acs_lines={acs_lines} is larger than the {shape[0]} phase-encode "
                         f"lines of shape {shape}")
    acs = np.zeros(shape[0], dtype=bool)
    acs[centre_slice(shape[0], int(acs_lines))] = True
    return acs


def variable_density_1d(shape, accel: float, acs_lines: int = 24, seed: int = 0,
                        decay: float = 2.0) -> Mask:
    """Random phase-encode lines with density decaying away from the centre, plus ACS lines.

    ``shape = (ny, nx)``: lines are rows (fixed ``y``, all ``x``). Exactly
    ``round(ny / accel)`` lines are sampled (at least the ACS): the ``acs_lines`` central ones
    and the rest drawn without replacement with weights ``(1 - |y - ny//2| / (ny//2 + 1))**decay``
    (``decay = 0`` gives fastMRI's uniform "random" mask with an exact line count).
    """
    shape = _shape(shape)
    target = _accel(accel)
    acs = _acs_lines(shape, acs_lines)
    if not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 0):
        raise InputError(f"decay={decay!r}: must be a number >= 0")
    rng = _rng(seed)
    ny = shape[0]
    if target > ny:
        raise InputError(f"accel={accel!r} is out of reach: one line of the {ny} gives R = {ny}")
    n_lines = max(int(round(ny / target)), 1)
    if n_lines < acs.sum():
        raise InputError(f"accel={accel!r} is out of reach with acs_lines={acs_lines}: the ACS "
                         f"alone gives R = {ny / acs.sum():.3g}")
    others = np.flatnonzero(~acs)
    w = (1.0 - np.abs(others - ny // 2) / (ny // 2 + 1)) ** decay
    extra = rng.choice(others, size=n_lines - int(acs.sum()), replace=False, p=w / w.sum()) \
        if n_lines > acs.sum() else np.array([], dtype=np.int64)
    lines = np.concatenate([np.flatnonzero(acs), extra]).astype(np.int64)
    return _mask(_lines_mask(shape, lines), target, "vd1d")


def equispaced_1d(shape, accel: float, acs_lines: int = 24, offset: int | None = None,
                  seed: int = 0) -> Mask:
    """Every ``accel``-th phase-encode line plus the ACS lines (fastMRI's EquispacedMaskFunc).

    ``shape = (ny, nx)``; lines are rows. Lines ``round(offset + j * accel)`` for ``j = 0, 1, ...``
    (``offset`` in ``[0, accel)``; drawn from ``seed`` when None) plus ``acs_lines`` central
    lines. The ACS adds lines, so the achieved ``Mask.accel`` is below ``accel``.
    """
    shape = _shape(shape)
    target = _accel(accel)
    acs = _acs_lines(shape, acs_lines)
    rng = _rng(seed)
    if offset is None:
        offset = int(rng.integers(0, max(int(math.ceil(target)), 1)))
    elif isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)) \
            or not 0 <= offset < target:
        raise InputError(f"offset={offset!r}: must be an integer in [0, accel={accel!r})")
    lines = np.rint(offset + target * np.arange(math.ceil((shape[0] - offset) / target)))
    lines = lines[lines < shape[0]].astype(np.int64)
    arr = _lines_mask(shape, lines)
    arr[acs, :] = True
    return _mask(arr, target, "equispaced")


def uniform_random(shape, accel: float, calib=None, seed: int = 0) -> Mask:
    """2D uniform random mask: exactly ``round(ny * nx / accel)`` points, calibration included.

    ``calib``: optional fully sampled central block (int or ``(cy, cx)``); the other points are
    drawn uniformly without replacement from outside it.
    """
    shape = _shape(shape)
    target = _accel(accel)
    cal = _calib_array(shape, _calib(calib, shape))
    rng = _rng(seed)
    n_total = shape[0] * shape[1]
    if target > n_total:
        raise InputError(f"accel={accel!r} is out of reach: one point of the {shape} grid gives "
                         f"R = {n_total}")
    n = max(int(round(n_total / target)), 1)
    if n < cal.sum():
        raise InputError(f"accel={accel!r} is out of reach with calib={calib!r}: the "
                         f"calibration block alone gives R = {n_total / cal.sum():.3g}")
    flat = cal.ravel().copy()
    flat[rng.choice(np.flatnonzero(~flat), size=n - int(cal.sum()), replace=False)] = True
    return _mask(flat.reshape(shape), target, "random")


def pattern_kind(mask) -> str:
    """``"1d"`` when the sampled points of ``mask`` (``(..., y, x)``, any leading dims of size 1;
    or a vector of sampled lines) are whole lines along y or along x and not all of k-space,
    else ``"2d"`` (Poisson-disc, random, fully sampled). Reconstruction settings are tuned per
    kind (``recon_defaults``, :func:`mriprior.recon.posterior.tuned_options`)."""
    m = np.asarray(mask.detach().cpu() if torch.is_tensor(mask) else mask) != 0
    if m.ndim < 2:
        return "1d" if 0 < m.sum() < m.size else "2d"
    m = m.reshape(-1, *m.shape[-2:])
    if m.shape[0] != 1:
        raise InputError(f"pattern_kind: one mask at a time, got {m.shape[0]} of "
                         f"{m.shape[-2]} x {m.shape[-1]}")
    m = m[0]
    if m.all() or not m.any():
        return "2d"
    rows = (m.all(1) | ~m.any(1)).all()  # every row full or empty: lines along x
    cols = (m.all(0) | ~m.any(0)).all()
    return "1d" if rows or cols else "2d"
