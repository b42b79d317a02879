"""Classical reconstructions: zero-filled, CG-SENSE (Tikhonov), and PICS with l1-wavelet / l2 / TV.

Shapes follow :mod:`mriprior.physics`: k-space ``(batch, coil, y, x)``, maps ``(batch, coil, y, x)``
or ``(batch, maps, coil, y, x)``, images ``(batch, y, x)`` or ``(batch, maps, y, x)``.

:func:`pics` follows BART 0.8's ``pics`` so the same flags give the same image:

* the sampling pattern is where any coil's k-space is nonzero (unless a mask is given);
* automatic data scaling (:func:`bart_scaling`): k-space is divided by a robust maximum of a
  low-resolution RSS image of the calibration region; the output stays in those scaled units
  unless ``rescale=True`` (BART's ``-S``);
* l1-wavelet: FISTA with step 0.95 (or 0.95 / max eigenvalue with ``eigen=True``: BART ``-e``),
  Daubechies-2 wavelet thresholding with BART's random cycle spinning;
* l2: conjugate gradients on (A^H A + lambda I) x = A^H y;
* TV: isotropic total variation by ADMM (BART ``-R T:3:0:lambda``; BART's ADMM has extra
  heuristics, so TV agrees with BART only approximately).
"""

from __future__ import annotations

import math

import torch

from mriprior.errors import InputError
from mriprior.physics.fft import ifft2c
from mriprior.physics.sense import Sense, sense_combine  # noqa: F401 (re-exported)
from mriprior.recon.solvers import admm, conjugate_gradient, fista, power_method
from mriprior.recon.wavelet import WaveletThreshold

__all__ = ["estimate_pattern", "bart_scaling", "zero_filled_rss", "sense_combine", "cg_sense",
           "pics"]


def estimate_pattern(ksp: torch.Tensor) -> torch.Tensor:
    """Sampling pattern ``(batch, 1, y, x)``: 1 where any coil is nonzero (BART's convention)."""
    return (ksp != 0).any(dim=1, keepdim=True).to(ksp.real.dtype)


def _check_ksp(ksp: torch.Tensor, name: str = "k-space"):
    if not torch.is_tensor(ksp) or ksp.ndim != 4 or not torch.is_complex(ksp):
        raise InputError(f"{name} must be a complex tensor (batch, coil, y, x), got "
                         f"{getattr(ksp, 'dtype', type(ksp))} {tuple(getattr(ksp, 'shape', ()))}")
    if not torch.isfinite(torch.view_as_real(ksp)).all():
        raise InputError(f"{name} contains NaN or Inf values")


def _calib_box(pattern: torch.Tensor, dims, calsize):
    """BART's calib_geom: grow a centred box, one step per axis in turn, while fully sampled.

    ``pattern`` is a bool tensor over ``dims`` (BART order: READ first); returns (size, pos).
    """
    n = len(dims)
    cal = [1] * n
    pos = [(dims[i] - 1) // 2 for i in range(n)]
    stop = [False] * n
    while not all(stop):
        for i in range(n):
            if cal[i] == dims[i] or cal[i] >= calsize[i]:
                stop[i] = True
            if stop[i]:
                continue
            cal[i] += 1
            pos[i] = (dims[i] - cal[i]) // 2
            block = pattern[tuple(slice(pos[j], pos[j] + cal[j]) for j in range(n))]
            if not bool(block.all()):
                cal[i] -= 1
                pos[i] = (dims[i] - cal[i]) // 2
                stop[i] = True
    return cal, pos


def bart_scaling(ksp: torch.Tensor, x_is_read: bool = True, calsize: int = 32) -> torch.Tensor:
    """BART's automatic data scaling (``estimate_scaling``), one factor per batch item.

    ``x_is_read``: whether the x axis is BART's READ dim (dim 0), which BART treats specially
    (full extent searched for the calibration block's energy maximum); False when the slice lies
    in BART dims 1 and 2. Returns a real tensor ``(batch,)``.
    """
    _check_ksp(ksp)
    out = []
    for k in ksp:  # (coil, y, x)
        # BART order of spatial dims: (READ, PHS1, PHS2) -> our axes
        kb = k.permute(0, 2, 1) if x_is_read else k.permute(0, 2, 1).unsqueeze(1)
        # kb: (coil, x, y) if x is READ, else (coil, READ=1, x, y)
        dims = list(kb.shape[1:])
        tmp_pos, tmp_dims = [], []
        for i, d in enumerate(dims):
            is_read = (i == 0)
            td = d if is_read else min(calsize, d)
            tmp_dims.append(td)
            tmp_pos.append((d - td) // 2)
        tmp = kb[(slice(None),) + tuple(slice(p, p + d) for p, d in zip(tmp_pos, tmp_dims))]
        pattern = (tmp != 0).any(dim=0)
        cal, pos = _calib_box(pattern, tmp_dims, [calsize] * len(dims))
        # move along readout to the position of maximum energy
        energy_best, best = 0.0, 0
        for r in range(tmp_dims[0] - cal[0] + 1):
            p = [r] + pos[1:]
            blk = tmp[(slice(None),) + tuple(slice(p[j], p[j] + cal[j]) for j in range(len(cal)))]
            e = float(torch.sum(torch.abs(blk) ** 2))
            if e > energy_best:
                energy_best, best = e, r
        pos[0] = best
        blk = tmp[(slice(None),) + tuple(slice(pos[j], pos[j] + cal[j]) for j in range(len(cal)))]
        fdims = tuple(range(1, blk.ndim))
        img = torch.fft.ifftn(blk, dim=fdims, norm="ortho")
        rss = torch.sqrt(torch.sum(torch.abs(img) ** 2, dim=0)).flatten()
        s, _ = torch.sort(rss)
        imsize = s.numel()
        rescale = math.prod(math.sqrt(d / c) for d, c in zip(dims, cal))
        median = float(s[imsize // 2]) / rescale
        p90 = float(s[int(math.trunc(imsize * 0.9))]) / rescale
        mx = float(s[-1]) / rescale
        scale = p90 if (mx - p90) < 2 * (p90 - median) else mx
        out.append(scale)
    return torch.tensor(out, dtype=ksp.real.dtype, device=ksp.device)


def zero_filled_rss(ksp: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares of the zero-filled coil images: ``(batch, y, x)`` real."""
    _check_ksp(ksp)
    return torch.sqrt(torch.sum(torch.abs(ifft2c(ksp)) ** 2, dim=1))


def _operator(ksp, maps, mask):
    _check_ksp(ksp)
    if maps.shape[-3:] != ksp.shape[-3:]:
        raise InputError(f"coil maps {tuple(maps.shape)} do not match k-space {tuple(ksp.shape)} "
                         "(coil, y, x must agree)")
    if not torch.is_complex(maps):
        maps = maps.to(ksp.dtype)
    if mask is None:
        mask = estimate_pattern(ksp)
    return Sense(maps.to(ksp.dtype), mask), mask


def cg_sense(ksp: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None,
             lam: float = 0.0, max_iter: int = 30, tol: float = 0.0,
             x0: torch.Tensor | None = None, callback=None) -> torch.Tensor:
    """CG-SENSE with Tikhonov regularisation: solves (A^H A + lam I) x = A^H y."""
    op, _ = _operator(ksp, maps, mask)
    return conjugate_gradient(op.normal, op.adjoint(ksp), x0=x0, max_iter=max_iter, tol=tol,
                              lam=lam, callback=callback)


def _grad2(x):
    """Periodic forward differences over (y, x): (2, ...) stacked on a new leading axis."""
    return torch.stack([torch.roll(x, -1, dims=-2) - x, torch.roll(x, -1, dims=-1) - x])


def _grad2_adjoint(g):
    return (torch.roll(g[0], 1, dims=-2) - g[0]) + (torch.roll(g[1], 1, dims=-1) - g[1])


def _joint_soft(v, t):
    mag = torch.sqrt(torch.sum(torch.abs(v) ** 2, dim=0, keepdim=True))
    scale = torch.clamp(mag - t, min=0) / torch.where(mag > 0, mag, torch.ones_like(mag))
    return v * scale


def pics(ksp: torch.Tensor, maps: torch.Tensor, reg: str | None = "l1", lam: float = 0.0,
         max_iter: int = 30, mask: torch.Tensor | None = None, step: float = 0.95,
         eigen: bool = False, scaling: str | float | torch.Tensor | None = "bart",
         x_is_read: bool = True, rescale: bool = False, wavelet_shift: str = "bart",
         generator: torch.Generator | None = None, x0: torch.Tensor | None = None,
         tol: float = 0.0, admm_rho: float = 0.5, admm_cg_iter: int = 10, callback=None):
    """Parallel-imaging compressed-sensing reconstruction (BART ``pics`` semantics).

    ``reg``: ``"l1"`` (wavelet), ``"l2"`` (Tikhonov), ``"tv"`` or None (plain CG-SENSE).
    ``scaling``: ``"bart"`` (automatic, see :func:`bart_scaling`), a number / per-batch tensor
    (the data are divided by it, like BART's ``-w``), or None / 1 for no scaling.
    ``x0`` is a warm start in the output's units. Returns ``(image, scale)`` where ``scale``
    is the ``(batch,)`` factor the data were divided by.
    """
    op, mask = _operator(ksp, maps, mask)
    b = ksp.shape[0]
    if isinstance(scaling, str):
        if scaling != "bart":
            raise InputError(f"scaling must be 'bart', a number or None, not {scaling!r}")
        scale = bart_scaling(ksp * mask, x_is_read=x_is_read)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    elif scaling is None:
        scale = torch.ones(b, dtype=ksp.real.dtype, device=ksp.device)
    else:
        scale = torch.as_tensor(scaling, dtype=ksp.real.dtype, device=ksp.device).expand(b).clone()
    bshape = (-1,) + (1,) * (ksp.ndim - 1)
    y = ksp * mask / scale.reshape(bshape)
    adj_y = op.adjoint(y)
    img_b = (-1,) + (1,) * (adj_y.ndim - 1)
    if x0 is not None:
        x0 = x0.to(adj_y.dtype) / (scale.reshape(img_b) if rescale else 1.0)
    if reg is None or reg == "l2":
        x = conjugate_gradient(op.normal, adj_y, x0=x0, max_iter=max_iter, tol=tol,
                               lam=lam if reg == "l2" else 0.0, callback=callback)
    elif reg == "l1":
        if eigen:
            step = step / power_method(op.normal, adj_y.shape, device=adj_y.device,
                                       dtype=adj_y.dtype, generator=generator)
        wt = WaveletThreshold(shift=wavelet_shift, generator=generator)
        x = fista(op.normal, adj_y, lambda v, mu: wt(v, lam * mu), step=step, max_iter=max_iter,
                  x0=x0, tol=tol, callback=callback)
    elif reg == "tv":
        x = admm(op.normal, adj_y, _grad2, _grad2_adjoint, lambda v, t: _joint_soft(v, lam * t),
                 rho=admm_rho, max_iter=max_iter, cg_iter=admm_cg_iter, x0=x0, tol=tol,
                 callback=callback)
    else:
        raise InputError(f"unknown regulariser {reg!r}: use 'l1', 'l2', 'tv' or None")
    if rescale:
        x = x * scale.reshape(img_b)
    return x, scale


def bart_pics_phase(shape) -> tuple[float, bool]:
    """The global sign BART's ``pics`` output carries relative to the centred-FFT model.

    BART implements the centred FFT in ``pics`` by modulating data and maps, which for an even
    size N multiplies the solution by (-1)^(N/2) per axis. Returns (factor, exact): ``exact`` is
    False when a size is odd (BART's modulation is then not a global factor).
    """
    f, exact = 1.0, True
    for n in shape:
        if n % 2:
            exact = False
        elif (n // 2) % 2:
            f = -f
    return f, exact
