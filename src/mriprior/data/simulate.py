"""Complex images with a physics-based phase from magnitude images, and multi-coil k-space.

A magnitude slice ``m`` (batch, y, x), real and >= 0, becomes the complex image
``m * exp(i phase)``. The phase is a sum of three components (details: ``docs/simulation.md``):

(a) **background**: a random 2D polynomial of degree ``poly_order`` (global offset uniform in
    ``[-pi, pi)``) plus a smooth Gaussian random field (white noise filtered by a Gaussian
    low-pass; covariance ``exp(-r^2 / (2 l^2))``, correlation length ``l``) -- transmit / receive
    phase and shim residuals;
(b) **susceptibility (B0) field**: classes tissue / air / bone from the magnitude
    (:func:`segment`), susceptibility ``chi`` (ppm) per class, field ``delta = D * chi`` (ppm)
    by a dipole convolution in k-space (:func:`dipole_kernel`, a finite-slab 2D approximation
    of ``1/3 - k_z^2 / |k|^2``), phase ``2 pi gamma_bar B0 TE delta``;
(c) **tissue offsets**: the tissue is split into ``n_classes`` classes at quantiles of its
    magnitude; each class gets a small frequency offset (ppm), phase ``2 pi gamma_bar B0 TE
    offset``.

Units and geometry. Lengths are fractions of the field of view (FOV): the longer image axis
spans 1, pixels are square with size ``1 / max(ny, nx)``. Polynomial coordinates ``u`` are
``(i - n // 2) / (max(ny, nx) / 2)`` (the longer axis spans ``[-1, 1)``). ``B0`` in tesla,
``TE`` in milliseconds, susceptibilities and field offsets in ppm, phases in radians.

Randomness. :class:`PhaseModel` holds the parameter distributions; :func:`sample_params` draws
one :class:`PhaseParams` (plain numbers, JSON-serialisable, including the seed of the random
field) from a ``torch.Generator``; :func:`phase_from_params` is deterministic given the params.
So a slice is reproducible from its recorded params alone, on any device.

Multi-coil data: :func:`simulate_acquisition` (birdcage or given coil maps, randomly rotated
and zoomed, correlated noise at a given SNR) and :func:`noise_covariance_from_cfl` (a
``(coil, coil)`` covariance from a BART noise file, reduced to fewer coils).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mriprior.data.dataset import (DatasetWriter, _locate, check_output, open_dataset,
                                   open_magnitude_source)
from mriprior.errors import InputError
from mriprior.seeds import derive_seed
from mriprior.io.files import locks_output
from mriprior.physics.phantom import birdcage_maps
from mriprior.physics.phase import (GAMMA_BAR_MHZ_PER_T, check_magnitude, dipole_field,
                                    gaussian_blur, gaussian_random_field,
                                    polynomial_phase, segment, susceptibility_map)
from mriprior.physics.simulate import (estimate_noise_covariance, simulate_multicoil,
                                       snr_to_sigma)
from mriprior.io.cfl import COIL_DIM, read_cfl

__all__ = [
    "PhaseModel", "PhaseParams", "sample_params", "slice_seed",
    "phase_from_params", "random_phase", "complex_from_magnitude",
    "transform_maps", "simulate_acquisition", "noise_covariance_from_cfl", "reduce_covariance",
    "KSpaceOptions", "KSpaceShards", "simulate_dataset",
]


# --------------------------------------------------------------------------------------------
# parameter distributions and draws
# --------------------------------------------------------------------------------------------


def _plain(params) -> dict:
    """A dataclass as a JSON-ready dict (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items()}


@dataclass(frozen=True)
class PhaseModel:
    """Distributions of the phase parameters; ``(lo, hi)`` pairs are uniform ranges.

    Background (a): ``poly_order``; ``poly_std[d - 1]`` is the standard deviation (rad) of each
    degree-``d`` coefficient (``u`` in ``[-1, 1)``); ``grf_std`` the field's RMS (rad);
    ``grf_length`` its correlation length (FOV fraction, log-uniform).
    B0 (b): ``b0`` tesla values (one chosen uniformly); ``te_ms`` echo time (ms);
    ``tilt_deg``: angle between B0 and the slice normal, drawn with ``cos(tilt)`` uniform in
    ``[cos(hi), cos(lo)]`` (isotropic directions); the in-plane azimuth of B0 is uniform;
    ``slab``: through-plane extent ``T`` of the susceptibility pattern (FOV fraction, see
    :func:`dipole_kernel`).
    Offsets (c): ``n_classes`` tissue classes, offsets normal with std ``class_std_ppm``.
    Segmentation (fixed): see :func:`segment`.
    """

    poly_order: int = 2
    poly_std: tuple[float, ...] = (0.5, 0.25)
    grf_std: tuple[float, float] = (0.2, 0.8)
    grf_length: tuple[float, float] = (0.05, 0.2)
    b0: tuple[float, ...] = (1.5, 3.0)
    te_ms: tuple[float, float] = (2.0, 6.0)
    tilt_deg: tuple[float, float] = (0.0, 90.0)
    slab: tuple[float, float] = (0.3, 1.0)
    n_classes: int = 3
    class_std_ppm: float = 0.02
    support_threshold: float = 0.1
    air_threshold: float = 0.05
    bone_band: float = 0.06
    bone_threshold: float = 0.3

    def __post_init__(self):
        if int(self.poly_order) < 0 or len(self.poly_std) < self.poly_order:
            raise InputError(f"poly_order={self.poly_order} needs that many poly_std values "
                             f"(got {len(self.poly_std)})")
        for name in ("grf_std", "grf_length", "te_ms", "tilt_deg", "slab"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise InputError(f"{name}=({lo}, {hi}): expected a finite range lo <= hi")
        if min(self.grf_length) <= 0 or min(self.slab) <= 0 or min(self.te_ms) < 0:
            raise InputError("grf_length and slab must be > 0 and te_ms >= 0")
        if not self.b0 or min(self.b0) < 0:
            raise InputError(f"b0={self.b0}: expected one or more field strengths >= 0 (T)")
        if not 0 <= self.tilt_deg[0] <= self.tilt_deg[1] <= 90:
            raise InputError(f"tilt_deg={self.tilt_deg}: expected 0 <= lo <= hi <= 90")
        if int(self.n_classes) < 1:
            raise InputError(f"n_classes={self.n_classes}: expected >= 1")

    def to_dict(self) -> dict:
        return _plain(self)


@dataclass(frozen=True)
class PhaseParams:
    """One slice's phase parameters (all plain numbers: JSON-serialisable via ``to_dict``).

    ``poly_coef``: coefficients of the monomials ``u_y^i u_x^j``, ordered by degree
    ``d = i + j = 0 .. order`` then by ``i`` descending (see :func:`polynomial_phase`).
    ``grf_seed``: seed of the random field's white noise (CPU ``torch.Generator``).
    ``tilt_deg``/``azimuth_deg``: B0 direction (angle from the slice normal; in-plane azimuth
    from +x towards +y). ``class_ppm``: offsets of the tissue classes, darkest first.
    """

    poly_order: int
    poly_coef: tuple[float, ...]
    grf_std: float
    grf_length: float
    grf_seed: int
    b0: float
    te_ms: float
    tilt_deg: float
    azimuth_deg: float
    slab: float
    class_ppm: tuple[float, ...]
    support_threshold: float = 0.1
    air_threshold: float = 0.05
    bone_band: float = 0.06
    bone_threshold: float = 0.3

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PhaseParams":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown phase parameters {sorted(unknown)}")
        try:
            return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
        except TypeError as e:
            raise InputError(f"bad phase parameters: {e}") from None

    def replace(self, **kw) -> "PhaseParams":
        return PhaseParams(**{**asdict(self), **kw})


def slice_seed(seed: int, index: int, stream: int = 0) -> int:
    """Per-slice seed from ``(seed, index, stream)`` (NumPy ``SeedSequence``): a 63-bit int.

    ``stream`` 0: phase parameters; 1: k-space (map transform and noise).
    """
    return derive_seed(seed, index, stream)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))


def _normal(g: torch.Generator, n: int, std: float) -> list[float]:
    return (std * torch.randn(n, generator=g, dtype=torch.float64)).tolist()


def sample_params(model: PhaseModel, generator: torch.Generator) -> PhaseParams:
    """Draw one :class:`PhaseParams` from ``model``'s distributions with ``generator`` (CPU).

    The draws happen in a fixed order (polynomial, random field, B0, TE, orientation, slab,
    class offsets), so a seed gives the same params on every machine.
    """
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise InputError("sample_params needs a CPU torch.Generator (no hidden randomness)")
    g = generator
    coef = [_uniform(g, -math.pi, math.pi)]
    for d in range(1, model.poly_order + 1):
        coef += _normal(g, d + 1, model.poly_std[d - 1])
    lo, hi = (math.log(v) for v in model.grf_length)
    grf_length = math.exp(_uniform(g, lo, hi))
    grf_std = _uniform(g, *model.grf_std)
    grf_seed = int(torch.randint(0, 2 ** 62, (), generator=g))
    b0 = float(model.b0[int(torch.randint(0, len(model.b0), (), generator=g))])
    te = _uniform(g, *model.te_ms)
    c_hi, c_lo = (math.cos(math.radians(a)) for a in model.tilt_deg)
    tilt = math.degrees(math.acos(min(1.0, max(0.0, _uniform(g, c_lo, c_hi)))))
    azimuth = _uniform(g, 0.0, 360.0)
    slab = _uniform(g, *model.slab)
    class_ppm = sorted(_normal(g, model.n_classes, model.class_std_ppm))
    return PhaseParams(model.poly_order, tuple(coef), grf_std, grf_length, grf_seed, b0, te,
                       tilt, azimuth, slab, tuple(class_ppm), model.support_threshold,
                       model.air_threshold, model.bone_band, model.bone_threshold)


# --------------------------------------------------------------------------------------------
# the full phase
# --------------------------------------------------------------------------------------------


def _as_param_list(params, batch: int) -> list[PhaseParams]:
    if isinstance(params, PhaseParams):
        params = [params] * batch
    params = list(params)
    if len(params) != batch:
        raise InputError(f"{len(params)} phase parameter sets for a batch of {batch}")
    if len({(p.poly_order, len(p.class_ppm)) for p in params}) != 1:
        raise InputError("all phase parameter sets of a batch need the same poly_order and "
                         "number of tissue classes")
    return params


def _param_vector(params: list[PhaseParams], name: str, device) -> torch.Tensor:
    return torch.tensor([float(getattr(p, name)) for p in params], dtype=torch.float64,
                        device=device)


def _ppm_to_rad(p: PhaseParams) -> float:
    """Phase (rad) per ppm of frequency offset: ``2 pi gamma_bar B0 TE``."""
    return 2.0 * math.pi * GAMMA_BAR_MHZ_PER_T * p.b0 * p.te_ms * 1e-3


def _segment_per_item(m: torch.Tensor, params: list[PhaseParams]) -> dict[str, torch.Tensor]:
    keys = ("support_threshold", "air_threshold", "bone_band", "bone_threshold")
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(tuple(getattr(p, k) for k in keys), []).append(i)
    out: dict[str, torch.Tensor] = {}
    n_classes = len(params[0].class_ppm)
    for seg_args, idx in groups.items():
        part = segment(m[idx], *seg_args, n_classes=n_classes)
        for k, v in part.items():
            if k not in out:
                out[k] = torch.empty((m.shape[0],) + v.shape[1:], dtype=v.dtype, device=v.device)
            out[k][idx] = v
    return out


def phase_from_params(magnitude, params, return_components: bool = False):
    """Phase (rad, float32 ``(batch, y, x)``) of magnitude ``(batch, y, x)`` given the params.

    ``params``: one :class:`PhaseParams` for the whole batch or one per item. Deterministic.
    With ``return_components=True`` returns ``(phase, components)``, ``components`` a dict of
    float32 ``(batch, y, x)`` tensors ``"polynomial"``, ``"grf"``, ``"b0"`` (the dipole field's
    phase; its median over tissue is 0), ``"tissue"`` (class offsets), ``"field_ppm"`` (the
    susceptibility field itself, ppm) and the segmentation masks of :func:`segment`
    (``"support"``, ``"air"``, ``"bone"``, ``"tissue_mask"``, ``"labels"``).
    """
    m = check_magnitude(magnitude)
    b, ny, nx = m.shape
    params = _as_param_list(params, b)
    dev, f64 = m.device, torch.float64
    poly = polynomial_phase([p.poly_coef for p in params], params[0].poly_order, (ny, nx),
                            device=dev)
    grf = torch.stack([p.grf_std * gaussian_random_field((ny, nx), p.grf_length, p.grf_seed,
                                                         device=dev) for p in params])
    seg = _segment_per_item(m, params)
    chi = susceptibility_map(seg, reference="air")
    field_ppm = dipole_field(chi.to(f64), *(_param_vector(params, k, dev)
                                            for k in ("tilt_deg", "azimuth_deg", "slab")))
    ref = torch.stack([field_ppm[i][seg["tissue"][i]].median() if seg["tissue"][i].any()
                       else field_ppm.new_zeros(()) for i in range(b)])
    field_ppm = field_ppm - ref.reshape(-1, 1, 1)
    scale = torch.tensor([_ppm_to_rad(p) for p in params], dtype=f64, device=dev).reshape(-1, 1, 1)
    b0_phase = scale * field_ppm
    offsets = torch.tensor([list(p.class_ppm) for p in params], dtype=f64, device=dev)
    lab = seg["labels"]
    tissue_ppm = torch.where(lab >= 0, torch.gather(offsets, 1, lab.clamp_min(0).flatten(1))
                             .reshape(lab.shape), torch.zeros((), dtype=f64, device=dev))
    tissue_phase = scale * gaussian_blur(tissue_ppm, 1.0)
    phase = (poly + grf + b0_phase + tissue_phase).to(torch.float32)
    if not return_components:
        return phase
    comps = {"polynomial": poly, "grf": grf, "b0": b0_phase, "tissue": tissue_phase,
             "field_ppm": field_ppm}
    comps = {k: v.to(torch.float32) for k, v in comps.items()}
    comps.update(support=seg["support"], air=seg["air"], bone=seg["bone"],
                 tissue_mask=seg["tissue"], labels=seg["labels"])
    return phase, comps


def _params_for_batch(batch: int, model: PhaseModel, generator, seeds) -> list[PhaseParams]:
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != batch:
            raise InputError(f"{len(seeds)} seeds for a batch of {batch}")
        return [sample_params(model, torch.Generator().manual_seed(s)) for s in seeds]
    if generator is None:
        raise InputError("give a generator or per-item seeds (no hidden global randomness)")
    return [sample_params(model, generator) for _ in range(batch)]  # checks it is a CPU one


def random_phase(magnitude, generator: torch.Generator | None = None, seeds=None,
                 model: PhaseModel = PhaseModel(), return_components: bool = False):
    """Random phase for magnitude ``(batch, y, x)``: params drawn, then :func:`phase_from_params`.

    Randomness only from ``generator`` (a CPU ``torch.Generator``, items drawn in order) or
    ``seeds`` (one int per item; item ``i`` uses ``torch.Generator().manual_seed(seeds[i])``,
    independent of the batch it is in). Returns ``(phase, params)`` or, with
    ``return_components``, ``(phase, params, components)``.
    """
    m = check_magnitude(magnitude)
    params = _params_for_batch(m.shape[0], model, generator, seeds)
    out = phase_from_params(m, params, return_components)
    return (out, params) if not return_components else (out[0], params, out[1])


def complex_from_magnitude(magnitude, generator: torch.Generator | None = None, seeds=None,
                           model: PhaseModel = PhaseModel(), params=None,
                           return_components: bool = False):
    """Complex image ``magnitude * exp(i phase)`` (complex64 ``(batch, y, x)``) and its params.

    Either ``params`` (one :class:`PhaseParams` or a list; deterministic) or a ``generator`` /
    ``seeds`` to draw them (see :func:`random_phase`). ``|image| == magnitude`` up to float32
    rounding (computed in float64, one rounding per real / imaginary part). Returns
    ``(image, params)``, plus the components dict with ``return_components=True``.
    """
    m = check_magnitude(magnitude)
    if params is None:
        params = _params_for_batch(m.shape[0], model, generator, seeds)
    params = _as_param_list(params, m.shape[0])
    out = phase_from_params(m, params, return_components)
    phase = out[0] if return_components else out
    img = torch.polar(m.to(torch.float64), phase.to(torch.float64)).to(torch.complex64)
    return (img, params) if not return_components else (img, params, out[1])


# --------------------------------------------------------------------------------------------
# multi-coil acquisition
# --------------------------------------------------------------------------------------------


def _rotation_grid(out_shape, in_shape, ang: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` grid ``(batch, y, x, 2)``: output pixel -> input location.

    Both grids use the FOV coordinates ``u = (i - n // 2) / (n / 2)`` (centre ``n // 2``, as
    the FFT and :func:`~mriprior.physics.phantom.birdcage_maps`); the input location is
    ``R(-angle) u / zoom`` with the rotation done in pixel units (rigid on non-square grids);
    converted to ``grid_sample``'s ``align_corners=False`` coordinates ``(2 i + 1) / n - 1``.
    """
    (ny, nx), (my, mx) = out_shape, in_shape
    dev = ang.device
    uy = ((torch.arange(ny, device=dev, dtype=torch.float64) - ny // 2) / (ny / 2))[:, None]
    ux = ((torch.arange(nx, device=dev, dtype=torch.float64) - nx // 2) / (nx / 2))[None, :]
    c = (torch.cos(ang) / zoom).double().reshape(-1, 1, 1)
    s = (torch.sin(ang) / zoom).double().reshape(-1, 1, 1)
    vx = c * ux + s * uy * (ny / nx)    # pixel-unit rotation, back to FOV units per axis
    vy = -s * ux * (nx / ny) + c * uy
    gx = (vx * (mx / 2) + mx // 2) * (2.0 / mx) + 1.0 / mx - 1.0
    gy = (vy * (my / 2) + my // 2) * (2.0 / my) + 1.0 / my - 1.0
    return torch.stack([gx, gy], -1).float()


def transform_maps(maps: torch.Tensor, shape, angle_deg=0.0, zoom=1.0) -> torch.Tensor:
    """Rotate by ``angle_deg`` and zoom coil maps ``(batch|1, coil, y0, x0)`` onto ``shape``.

    Bilinear resampling (real and imaginary parts) in FOV coordinates (each axis spans the
    FOV, centre ``n // 2``, so a different ``(y0, x0)`` is resized to ``shape``), edge values
    extended outside. Positive angles turn from +x towards +y about the centre (``+90`` maps
    ``in[y, x]`` to ``out[x, n - y]`` on a square grid); ``zoom > 1`` magnifies the maps.
    ``angle_deg`` / ``zoom``: scalars or ``(batch,)``. Returns ``(batch, coil, y, x)``
    complex64.
    """
    maps = torch.as_tensor(maps)
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim != 4:
        raise InputError(f"coil maps have shape {tuple(maps.shape)}; expected (coil, y, x) or "
                         "(batch, coil, y, x)")
    dev = maps.device
    ang = torch.deg2rad(torch.as_tensor(angle_deg, dtype=torch.float32, device=dev).reshape(-1))
    zm = torch.as_tensor(zoom, dtype=torch.float32, device=dev).reshape(-1)
    b = max(maps.shape[0], ang.shape[0], zm.shape[0])
    ang, zm = ang.expand(b), zm.expand(b)
    if (zm <= 0).any():
        raise InputError(f"zoom must be > 0; got {zm.tolist()}")
    ny, nx = (int(s) for s in shape)
    m = maps.expand(b, -1, -1, -1)
    c = m.shape[1]
    grid = _rotation_grid((ny, nx), m.shape[-2:], ang, zm)
    ri = torch.cat([m.real, m.imag], 1).float()
    out = F.grid_sample(ri, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.complex(out[:, :c], out[:, c:]).to(torch.complex64)


def _draw(g, lo, hi, n, dev) -> torch.Tensor:
    """``n`` uniform draws in ``[lo, hi]`` with ``g``; no draw (and no generator needed) if
    ``lo == hi``."""
    lo, hi = float(lo), float(hi)
    if lo == hi:
        return torch.full((n,), lo, dtype=torch.float64, device=dev)
    if g is None:
        raise InputError("random map transforms need a generator (no hidden global randomness)")
    u = torch.rand(n, generator=g, dtype=torch.float64, device=g.device)
    return (lo + (hi - lo) * u).to(dev)


def _scaled_cov(cov: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Scale ``cov`` per item so its mean coil noise power is ``sigma^2``: ``(batch, c, c)``."""
    c = cov.to(torch.complex128)
    mean_power = c.diagonal(dim1=-2, dim2=-1).real.mean(-1)
    return c[None] * (sigma.to(torch.float64) ** 2 / mean_power).reshape(-1, 1, 1)


def simulate_acquisition(image: torch.Tensor, n_coils: int | None = 8, maps="birdcage",
                         rotation_deg=(0.0, 360.0), zoom=(1.0, 1.0), noise_cov=None,
                         snr: float | None = None, mask=None,
                         generator: torch.Generator | None = None, return_info: bool = False):
    """Multi-coil k-space of complex images ``(batch, y, x)``; returns ``(ksp, maps_used)``.

    ``maps``: ``"birdcage"`` (:func:`~mriprior.physics.phantom.birdcage_maps` with ``n_coils``
    coils, RSS-normalised) or a tensor ``(coil, y0, x0)`` / ``(batch, coil, y0, x0)`` (e.g.
    ESPIRiT maps of real data; smooth and nonzero over the FOV, e.g. ``bart ecalib -c 0``;
    resized to the image). Each item's map set is rotated by an angle drawn uniformly from
    ``rotation_deg`` (degrees) and zoomed by a factor drawn uniformly from ``zoom``
    (:func:`transform_maps`); pass ``(0, 0)`` and ``(1, 1)`` for no transform (then the maps
    are used as given, no resampling).
    Noise: ``noise_cov`` ``None``, a float sigma or a ``(coil, coil)`` covariance. With
    ``snr`` (see :func:`~mriprior.physics.simulate.snr_to_sigma`: RMS of the noiseless
    k-space over the noise sigma), the covariance (identity if ``None``) is rescaled per item
    to that SNR (mean noise power per coil ``sigma^2``); a float sigma and ``snr`` together
    are ambiguous. ``mask``: real, broadcastable to ``(batch, coil, y, x)``.
    Returns k-space ``(batch, coil, y, x)`` and the maps used ``(batch, coil, y, x)``; with
    ``return_info`` also a dict of per-item lists ``rotation_deg``, ``zoom`` and ``sigma``
    (noise sigma per coil on average; ``None`` without noise).
    """
    img = torch.as_tensor(image)
    if img.ndim != 3:
        raise InputError(f"image has shape {tuple(img.shape)}; expected (batch, y, x)")
    img = img.to(torch.complex64)
    b, ny, nx = img.shape
    dev = img.device
    if isinstance(maps, str):
        if maps != "birdcage":
            raise InputError(f"maps must be 'birdcage' or a tensor; got {maps!r}")
        if n_coils is None or int(n_coils) < 1:
            raise InputError(f"n_coils must be >= 1 for birdcage maps; got {n_coils}")
        base = birdcage_maps(int(n_coils), (ny, nx), normalize="rss", device=dev)[None]
    else:
        base = torch.as_tensor(maps).to(dev)
        base = base[None] if base.ndim == 3 else base
        if base.ndim != 4 or base.shape[0] not in (1, b):
            raise InputError(f"coil maps have shape {tuple(torch.as_tensor(maps).shape)}; "
                             f"expected (coil, y, x) or ({b}, coil, y, x)")
        if n_coils is not None and base.shape[1] != int(n_coils):
            raise InputError(f"coil maps have {base.shape[1]} coils but n_coils={n_coils}")
    ang = _draw(generator, *rotation_deg, b, dev)
    zm = _draw(generator, *zoom, b, dev)
    if (tuple(rotation_deg) == (0.0, 0.0) and tuple(zoom) == (1.0, 1.0)
            and base.shape[-2:] == (ny, nx)):
        used = base.to(torch.complex64).expand(b, -1, -1, -1)
    else:
        used = transform_maps(base, (ny, nx), ang, zm)
    cov, sigma = noise_cov, None
    if snr is not None:
        if isinstance(noise_cov, (int, float)):
            raise InputError("give either a noise sigma or an snr, not both")
        clean = simulate_multicoil(img, used, None)
        sigma = snr_to_sigma(clean, snr)
        c = torch.eye(used.shape[1], dtype=torch.complex128) if noise_cov is None else \
            torch.as_tensor(noise_cov)
        cov = _scaled_cov(c.to(dev), sigma)
    if cov is not None and generator is None:
        raise InputError("noise needs a generator (no hidden global randomness)")
    ksp = simulate_multicoil(img, used, cov, mask=mask, generator=generator)
    if not return_info:
        return ksp, used
    if sigma is None and cov is not None:
        c = torch.as_tensor(cov)
        sigma = (torch.full((b,), float(c)) if c.ndim == 0 else
                 c.to(torch.complex128).diagonal(dim1=-2, dim2=-1).real.mean(-1).sqrt()
                 .expand(b))
    info = {"rotation_deg": ang.tolist(), "zoom": zm.tolist(),
            "sigma": None if sigma is None else [float(v) for v in sigma]}
    return ksp, used, info


# --------------------------------------------------------------------------------------------
# noise covariance from a BART noise file
# --------------------------------------------------------------------------------------------


def reduce_covariance(cov: torch.Tensor, n_coils: int, method: str = "spread") -> torch.Tensor:
    """A ``(n, n)`` covariance from a ``(C, C)`` one, ``n <= C``.

    ``"spread"``: the sub-block of ``n`` coils evenly spread over the channel indices
    (``round(j C / n)``; neighbouring channels are usually neighbouring elements, so this keeps
    real correlations and unequal noise levels of coils spread around the array);
    ``"first"``: the leading ``n x n`` sub-block; ``"svd"``: SVD (PCA) coil compression onto
    the ``n`` principal noise components, ``U_n^H C U_n`` (diagonal: the ``n`` largest
    eigenvalues -- decorrelated, as after whitening-free compression of pure noise).
    """
    cov = torch.as_tensor(cov)
    C = cov.shape[-1]
    if cov.ndim != 2 or cov.shape[0] != C:
        raise InputError(f"covariance has shape {tuple(cov.shape)}; expected (coil, coil)")
    n = int(n_coils)
    if not 1 <= n <= C:
        raise InputError(f"cannot make {n} coils from a {C}-coil noise covariance")
    if method == "spread":
        idx = [int(round(j * C / n)) for j in range(n)]  # distinct, since C / n >= 1
        return cov[idx][:, idx]
    if method == "first":
        return cov[:n, :n]
    if method == "svd":
        lam, V = torch.linalg.eigh(cov.to(torch.complex128))
        U = V[:, -n:].flip(-1)
        return (U.mH @ cov.to(torch.complex128) @ U).to(cov.dtype)
    raise InputError(f"method must be 'spread', 'first' or 'svd'; got {method!r}")


def noise_covariance_from_cfl(path, n_coils: int | None = None, method: str = "spread",
                              remove_mean: bool = True) -> torch.Tensor:
    """Noise covariance ``(coil, coil)`` complex64 from a BART noise file (dims ``n x .. x C``).

    BART dim 3 is the coil dim; every other dim counts as independent samples. The sample
    covariance (:func:`~mriprior.physics.simulate.estimate_noise_covariance`, mean removed by
    default: receiver noise may carry a DC offset) is reduced to ``n_coils`` coils with
    :func:`reduce_covariance` (``None``: all coils).
    """

    arr = read_cfl(path, squeeze=False)
    samples = np.moveaxis(arr, COIL_DIM, -1).reshape(-1, arr.shape[COIL_DIM])
    if samples.shape[0] < 2:
        raise InputError(f"{path}: {samples.shape[0]} noise sample(s) per coil; need >= 2")
    cov = estimate_noise_covariance(torch.from_numpy(np.ascontiguousarray(samples)),
                                    remove_mean=remove_mean)
    if n_coils is not None:
        cov = reduce_covariance(cov, n_coils, method)
    return cov.to(torch.complex64)


# --------------------------------------------------------------------------------------------
# datasets: magnitude -> complex (+ multi-coil k-space)
# --------------------------------------------------------------------------------------------

KSPACE_DIR = "kspace"


@dataclass(frozen=True)
class KSpaceOptions:
    """How :func:`simulate_dataset` makes multi-coil k-space (see :func:`simulate_acquisition`).

    ``maps``: ``"birdcage"`` or a ``(coil, y, x)`` tensor; ``maps_source``: a label for the
    manifest (e.g. the file the maps came from); ``noise_cov``: ``(coil, coil)`` or ``None``
    (white); ``snr``: ``None`` means noiseless (then ``noise_cov`` must be ``None``).
    """

    coils: int = 8
    maps: object = "birdcage"
    maps_source: str = "birdcage"
    noise_cov: object = None
    noise_source: str | None = None
    snr: float | None = None
    rotation_deg: tuple[float, float] = (0.0, 360.0)
    zoom: tuple[float, float] = (1.0, 1.0)

    def to_dict(self) -> dict:
        return {"coils": self.coils, "maps": self.maps_source, "noise_cov": self.noise_source,
                "snr": self.snr, "rotation_deg": list(self.rotation_deg),
                "zoom": list(self.zoom)}


def _kspace_slice(img: torch.Tensor, opts: KSpaceOptions, seed: int):
    """One slice ``(y, x)`` -> k-space and maps ``(coil, y, x)`` (CPU) and its record."""
    g = torch.Generator().manual_seed(seed)
    if opts.noise_cov is not None and opts.snr is None:
        raise InputError("a noise covariance needs an snr (its absolute scale is meaningless "
                         "for normalised images)")
    ksp, maps, info = simulate_acquisition(img[None], opts.coils, opts.maps, opts.rotation_deg,
                                           opts.zoom, opts.noise_cov, opts.snr, generator=g,
                                           return_info=True)
    rec = {"seed": seed, "rotation_deg": info["rotation_deg"][0], "zoom": info["zoom"][0],
           "sigma": None if info["sigma"] is None else info["sigma"][0]}
    return ksp[0].cpu(), maps[0].cpu(), rec


class KSpaceShards:
    """Read the k-space written by :func:`simulate_dataset` (``--kspace``): memory-mapped.

    ``ks[i]`` -> ``(ksp, maps)``, each ``(coil, y, x)`` complex64 NumPy arrays, for slice ``i``
    of the dataset (manifest order).
    """

    def __init__(self, dataset_path):
        ds = open_dataset(dataset_path)
        info = ds.manifest.get("options", {}).get("simulate", {}).get("kspace")
        if not info:
            raise InputError(f"{dataset_path}: has no simulated k-space (made without --kspace)")
        root = Path(dataset_path)
        self.ksp, self.maps, starts = [], [], [0]
        for f in info["files"]:
            k = np.load(root / f["ksp"], mmap_mode="r", allow_pickle=False)
            m = np.load(root / f["maps"], mmap_mode="r", allow_pickle=False)
            if k.shape != m.shape or k.shape[0] != f["count"]:
                raise InputError(f"{root / f['ksp']}: shape {k.shape} / maps {m.shape} do not "
                                 f"match the manifest count {f['count']}")
            self.ksp.append(k)
            self.maps.append(m)
            starts.append(starts[-1] + f["count"])
        self._starts = np.asarray(starts)
        if starts[-1] != len(ds):
            raise InputError(f"{dataset_path}: k-space holds {starts[-1]} slices, dataset "
                             f"{len(ds)}")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int):
        s, j = _locate(self._starts, i)
        return self.ksp[s][j], self.maps[s][j]


@locks_output("out", "data simulate")
def simulate_dataset(src, out, seed: int = 0, model: PhaseModel = PhaseModel(),
                     kspace: KSpaceOptions | None = None, overwrite: bool = False,
                     batch_size: int = 16, device=None, progress=None) -> dict:
    """Magnitude dataset ``src`` -> complex dataset ``out`` with simulated phase; returns a summary.

    Slice ``i`` uses the phase params drawn with seed :func:`slice_seed` ``(seed, i)``; its
    manifest record is the source record plus ``"simulation": {"seed": ..., "phase": {params}}``
    (and ``"kspace": {"seed", "rotation_deg", "zoom"}`` with k-space), so every slice can be
    remade from its record alone (:func:`PhaseParams.from_dict`, :func:`phase_from_params`).
    Output is independent of ``batch_size`` and ``device`` (up to float rounding on GPUs).
    Negative magnitudes (interpolation undershoot) are set to 0 and counted.

    With ``kspace``: ``out/kspace/ksp-NNNNN.npy`` and ``out/kspace/maps-NNNNN.npy``, ``(n, coil,
    y, x)`` complex64, one pair per image shard (same slices), listed in the manifest under
    ``options.simulate.kspace.files``; read them with :class:`KSpaceShards`.
    ``progress``: optional callable ``(done, total)``.
    """
    from mriprior import __version__

    src, out = Path(src), Path(out)
    ds = open_magnitude_source(src, out, "simulate expects a magnitude dataset")
    check_output(out, overwrite)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    options = {"simulate": {"seed": int(seed), "model": model.to_dict(),
                            "kspace": None if kspace is None else kspace.to_dict()},
               "source_options": ds.manifest.get("options", {})}
    provenance = {"tool": "mriprior data simulate", "version": __version__,
                  "source_dataset": str(src), "source_provenance": ds.manifest.get("provenance",
                                                                                   {})}
    n, clamped = len(ds), 0
    with DatasetWriter(out, "complex", ds.shape, options=options, provenance=provenance,
                       overwrite=overwrite) as w:
        kbuf: list[tuple] = []
        kfiles: list[dict] = []
        for start in range(0, n, max(1, int(batch_size))):
            idx = list(range(start, min(n, start + int(batch_size))))
            mag = torch.from_numpy(np.stack([np.asarray(ds[i], dtype=np.float32) for i in idx]))
            clamped += int((mag < 0).sum())
            mag = mag.clamp_min(0).to(dev)
            seeds = [slice_seed(seed, i) for i in idx]
            img, params = complex_from_magnitude(mag, seeds=seeds, model=model)
            for j, i in enumerate(idx):
                sim = {"seed": seeds[j], "phase": params[j].to_dict()}
                if kspace is not None:
                    ksp, maps, rec = _kspace_slice(img[j], kspace, slice_seed(seed, i, 1))
                    sim["kspace"] = rec
                    kbuf.append((ksp.numpy(), maps.numpy()))
                    if len(kbuf) == w.shard_size or i == n - 1:  # as the image shards
                        kfiles.append(_flush_kspace(w.tmp, len(kfiles), kbuf))
                        kbuf = []
                w.add(img[j].cpu().numpy(), dict(ds.records[i], simulation=sim))
            if progress is not None:
                progress(idx[-1] + 1, n)
        if kspace is not None:
            w.options["simulate"]["kspace"]["files"] = kfiles
        w.summary = {"count": n, "negative_pixels_clamped": clamped,
                     "kspace": kspace is not None}
    return {"out": str(out), "count": n, "negative_pixels_clamped": clamped,
            "kspace_files": len(kfiles)}


def _flush_kspace(root, k: int, buf: list[tuple]) -> dict:
    (root / KSPACE_DIR).mkdir(exist_ok=True)
    names = {key: f"{KSPACE_DIR}/{key}-{k:05d}.npy" for key in ("ksp", "maps")}
    for j, name in enumerate(names.values()):  # buf: (ksp, maps) pairs
        np.save(root / name, np.stack([b[j] for b in buf]).astype(np.complex64))
    return dict(names, count=len(buf))
