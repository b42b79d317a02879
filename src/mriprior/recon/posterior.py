"""Reconstruction with a generative prior: posterior sampling (MMSE + uncertainty) and prior PICS.

Forward model ``y = A x + n`` with ``A = M F S`` (:class:`mriprior.physics.sense.Sense`: mask, centred
orthonormal FFT, coil maps ``(batch, coil, y, x)`` or ``(batch, maps, coil, y, x)``); k-space
``(batch, coil, y, x)``. The prior works in its own normalisation (max magnitude ~ 1), so every
method first divides the data by a per-slice ``scale`` (``scaling="cg"``: the maximum magnitude
of a 10-iteration CG-SENSE image; ``"adjoint"``: of ``A^H y``, the founding paper's choice; or a
number) and multiplies the result back: scaling the k-space by ``c`` scales every output by
``c`` (``|c|`` for the standard deviation).

Methods (each runs ``chains`` independent chains per slice as one batch, each from its own
random start, and summarises them with :func:`summarise`; chain ``j`` of a slice draws its noise
from its own stream seeded by ``(seed, j)``, ``seed`` one int or one per slice, so a slice's
result does not depend on the slices batched with it):

:func:`langevin_posterior`
    the founding talk's Algorithm 1 (published settings as defaults). Noise levels
    ``sigma_1 > ... > sigma_N`` geometric between the prior's ``sigma_max`` and ``sigma_min``,
    the first ``skip`` dropped, ``sigma_{N+1} = 0``; at each level ``K`` steps::

        x <- x + (s_i^2 - s_{i+1}^2) score(x, s_i) + lam tau_i A^H (y - A x) + tau_i z,
        tau_i = sqrt(s_{i+1}^2 (s_i^2 - s_{i+1}^2) / s_i^2)

    (``lam`` is the data-consistency weight of the paper, 20-25; ``z`` complex, unit variance
    per component; start uniform on [0, 1) per component). ``noise_var=`` (per-component
    variance of the k-space noise, in the data's units) switches to annealed Langevin dynamics
    with the exact Gaussian likelihood: ``K`` steps ``x <- x + (a_i / 2) g + sqrt(a_i) z`` with
    ``g = score(x, s_i) + A^H (y - A x) / noise_var`` and ``a_i = step_size / (1 / s_i^2 +
    1 / noise_var)`` (a fraction of the local posterior scale, so the stiff likelihood stays
    stable), then one Tweedie step at the last level (``tweedie=False`` leaves the samples of
    ``p_{s_N}(x) p(y | x)``); it samples the true posterior as the
    levels go to 0 (tested on a Gaussian prior, where the posterior is known in closed form).
:func:`fast_posterior`
    a DDS-style sampler (Chung et al. 2024, "Decomposed diffusion sampler"): per noise level one
    network evaluation gives the Tweedie denoised image ``x0 = x + s^2 score(x, s)``, a few CG
    iterations on the data term started at ``x0`` make it data-consistent, and a DDIM step
    re-noises it to the next level (``eta`` = share of fresh noise). Starts from the CG-SENSE
    image plus noise at ``sigma_start``. ``nfe`` evaluations per chain.
:func:`prior_pics`
    accelerated gradient descent (FISTA with the prior's gradient in the gradient step) on
    ``0.5 ||A x - y||^2 + lam R(x)`` with ``grad R`` = :meth:`ImagePrior.reg_grad` (for diffusion
    priors the RED gradient ``x - D(x, sigma_r)``; for explicit-likelihood priors the NLL
    gradient): the semantics of BART's ``pics -R TF:graph:lambda``, except that the image is
    scaled to the prior's normalisation once (from the data) rather than re-scaled by its own
    maximum every iteration, so the objective is fixed and decreases. ``wavelet > 0`` adds
    ``wavelet ||W x||_1`` (BART's second ``-R W:7:0:wavelet``) through FISTA's proximal step.

Uncertainty: ``var`` is the complex pixelwise variance over chains (unbiased, ``E|x - mmse|^2``),
``std = sqrt(var)``. A complex Gaussian error of variance ``var`` lies within radius
``std * sqrt(ln(1 / (1 - p)))`` with probability ``p``; the error of the mean of ``n`` chains,
with ``var`` estimated from those chains, within the wider radius of :func:`interval_radius`
with ``chains=n`` (1.37 x at 4 chains); :func:`credibility_map` marks pixels
whose ``p``-interval radius exceeds ``rel`` times the MMSE magnitude (inside the object): the
places where the reconstruction may be hallucinating.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch

from mriprior.diffusion.noise import ItemNoise
from mriprior.diffusion.samplers import (ancestral_ve, annealed_langevin, counting_callback,
                                         ve_noise_scale)
from mriprior.diffusion.schedules import randn_like
from mriprior.errors import InputError
from mriprior.physics.linop import broadcast_shape
from mriprior.physics.sense import Sense
from mriprior.recon.classical import estimate_pattern
from mriprior.recon.priors import FlipAveraged, ImagePrior
from mriprior.recon.solvers import conjugate_gradient, fista

__all__ = ["PosteriorResult", "langevin_posterior", "fast_posterior", "prior_pics",
           "summarise", "credibility_map", "interval_radius", "data_scale", "estimate_noise_var",
           "METHODS", "OPTIONS", "method_defaults", "tuned_options"]


@dataclass
class PosteriorResult:
    """Outputs in the data's units. ``mmse``/``std``/``var``: image shape ``(batch, [maps,] y,
    x)``; ``samples``: ``(batch, chains, [maps,] y, x)`` or None; ``scale``: ``(batch,)`` the data
    were divided by; ``nfe``: network evaluations per chain."""

    mmse: torch.Tensor
    var: torch.Tensor
    std: torch.Tensor
    samples: torch.Tensor | None
    scale: torch.Tensor
    nfe: int


# ----------------------------------------------------------------------------- problem set-up

def _check(ksp, maps, mask):
    if not torch.is_tensor(ksp) or not ksp.is_complex() or ksp.ndim != 4:
        raise InputError(f"k-space must be complex (batch, coil, y, x), got "
                         f"{getattr(ksp, 'dtype', type(ksp))} {tuple(getattr(ksp, 'shape', ()))}")
    if maps.ndim not in (4, 5) or maps.shape[-3:] != ksp.shape[-3:]:
        raise InputError(f"coil maps {tuple(maps.shape)} do not match k-space "
                         f"{tuple(ksp.shape)} (coil, y, x must agree)")
    if maps.shape[0] not in (1, ksp.shape[0]):
        raise InputError(f"coil maps batch {maps.shape[0]} does not match k-space batch "
                         f"{ksp.shape[0]}")
    if mask is None:
        mask = estimate_pattern(ksp)
    mask = torch.as_tensor(mask, device=ksp.device).to(ksp.real.dtype)
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask.unsqueeze(1)
    try:
        broadcast_shape(mask.shape, ksp.shape)
        if mask.ndim != 4:
            raise RuntimeError
    except RuntimeError:
        raise InputError(f"mask shape {tuple(mask.shape)} does not broadcast to k-space "
                         f"{tuple(ksp.shape)}") from None
    return maps.to(device=ksp.device, dtype=ksp.dtype), mask


def estimate_noise_var(ksp: torch.Tensor, mask=None, fraction: float = 0.05) -> float:
    """Per-component variance of the k-space noise, in ``ksp``'s units, from the data alone.

    The outermost ``fraction`` of the sampled points (by k-space radius, all coils, at least
    64 values) hold little signal: for complex Gaussian noise ``|y|^2`` is exponential with mean
    ``2 var``, so ``var = median(|y|^2) / (2 ln 2)``. What signal is left there makes this an
    overestimate, i.e. the data are trusted slightly less than they deserve. ``ksp``
    ``(batch, coil, y, x)``: one value for the whole batch.
    """
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    ny, nx = ksp.shape[-2:]
    yy = (torch.arange(ny, device=ksp.device) - ny // 2).to(ksp.real.dtype) / max(ny // 2, 1)
    xx = (torch.arange(nx, device=ksp.device) - nx // 2).to(ksp.real.dtype) / max(nx // 2, 1)
    r = (yy[:, None].square() + xx[None, :].square()).expand(ny, nx)
    sampled = (ksp.abs().sum(dim=tuple(range(ksp.ndim - 2))) > 0) if mask is None else (
        mask.reshape(-1, ny, nx).amax(0) > 0)
    radii = r[sampled]
    if radii.numel() == 0:
        raise InputError("k-space is zero everywhere: cannot estimate its noise")
    k = max(1, min(radii.numel(), math.ceil(fraction * radii.numel())))
    cut = torch.topk(radii, k).values.min()
    vals = ksp[..., sampled & (r >= cut)].abs().square().flatten()
    if vals.numel() < 64:
        raise InputError(f"too few sampled k-space points ({vals.numel()}) to estimate the noise")
    return float(vals.median()) / (2 * math.log(2))


def _resolve_noise_var(noise_var, ksp, mask):
    """``None``, a number, or ``"auto"`` (:func:`estimate_noise_var`) -> ``None`` or a number."""
    if isinstance(noise_var, str):
        if noise_var != "auto":
            raise InputError(f"noise_var must be a number or 'auto', not {noise_var!r}")
        return estimate_noise_var(ksp, mask)
    return noise_var


def data_scale(ksp, maps, mask=None, scaling="cg") -> torch.Tensor:
    """The per-slice factor ``(batch,)`` that brings the image to max magnitude ~ 1."""
    maps, mask = _check(ksp, maps, mask)
    b = ksp.shape[0]
    if scaling is None:
        return torch.ones(b, dtype=ksp.real.dtype, device=ksp.device)
    if not isinstance(scaling, str):
        s = torch.as_tensor(scaling, dtype=ksp.real.dtype, device=ksp.device).reshape(-1)
        s = s.expand(b).clone()
        if not bool(torch.all(s > 0)):
            raise InputError(f"scaling must be positive, got {scaling}")
        return s
    op = Sense(maps, mask)
    adj = op.adjoint(ksp * mask)
    if scaling == "adjoint":
        img = adj
    elif scaling == "cg":
        img = conjugate_gradient(op.normal, adj, max_iter=10)
    else:
        raise InputError(f"scaling must be 'cg', 'adjoint', a number or None, not {scaling!r}")
    for name, t in (("k-space", ksp), ("coil maps", maps), ("mask", mask)):
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{name} contains NaN or Inf: cannot scale the data")
    if not bool(maps.abs().amax() > 0):
        raise InputError("the coil maps are zero everywhere: cannot scale the data")
    s = img.abs().reshape(b, -1).amax(1)
    if not bool(torch.all(s > 0)):
        raise InputError("k-space is zero where sampled: cannot scale the data")
    return s


class _Problem:
    """The scaled problem with ``chains`` copies per slice (state index = slice * chains + j)."""

    def __init__(self, ksp, maps, mask, chains: int, scaling, support: bool = True):
        if chains < 1:
            raise InputError(f"chains must be >= 1, got {chains}")
        maps, mask = _check(ksp, maps, mask)
        self.b, self.k = ksp.shape[0], chains
        self.scale = data_scale(ksp, maps, mask, scaling)
        y = ksp * mask / self.scale.reshape(-1, 1, 1, 1)
        rep = lambda t: t.repeat_interleave(chains, dim=0) if t.shape[0] > 1 else t  # noqa: E731
        self.op = Sense(rep(maps), rep(mask))
        self.adj_y = rep(Sense(maps, mask).adjoint(y))
        sup = maps.abs().square().sum(-3) > 0  # (b | 1, [maps,] y, x)
        self.support = rep(sup) if support and not bool(sup.all()) else None

    def project(self, x):
        """Zero outside the coil maps' support (identity when there is none to restrict to)."""
        return x if self.support is None else x * self.support

    def renoise_outside(self, x, s: float, g):
        """Outside the support the clean image is 0: replace ``x`` there by fresh noise at ``s``."""
        if self.support is None:
            return x
        return torch.where(self.support, x, s * randn_like(x, g) if s > 0 else torch.zeros_like(x))

    def residual_grad(self, x):
        """``A^H (y - A x)``."""
        return self.adj_y - self.op.normal(x)

    def cg_image(self, iters: int = 30) -> torch.Tensor:
        return conjugate_gradient(self.op.normal, self.adj_y, max_iter=iters)

    def chains_view(self, x):
        return x.reshape(self.b, self.k, *x.shape[1:])

    def unscale(self, x):
        return x * self.scale.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def summarise(samples: torch.Tensor):
    """``samples (batch, chains, ...)`` -> ``(mmse, var, std)`` over chains (complex variance,
    unbiased; 0 with a single chain)."""
    mmse = samples.mean(1)
    k = samples.shape[1]
    var = (samples - mmse.unsqueeze(1)).abs().square().sum(1) / max(k - 1, 1)
    return mmse, var, var.sqrt()


def interval_radius(std: torch.Tensor, level: float = 0.9, chains: int | None = None
                    ) -> torch.Tensor:
    """Radius of the central ``level`` credible disc of a circular complex Gaussian error.

    ``chains=None``: ``std`` is the error's exact standard deviation (``|e|^2 ~ std^2 Exp(1)``),
    radius ``std sqrt(ln(1 / (1 - level)))``. ``chains=n``: ``std`` is the unbiased estimate of
    :func:`summarise` from ``n`` chains and the error is that of their mean (the MMSE) against
    the truth; both the mean's own sampling error (variance ``std^2 / n``) and the estimate's
    uncertainty (``2 (n - 1)`` degrees of freedom) widen the disc: ``|e|^2 / ((1 + 1/n) std^2)``
    is F(2, 2(n - 1))-distributed, so the radius is ``std sqrt((1 + 1/n) F_level)`` with
    ``F_level = (n - 1) ((1 - level)^(-1 / (n - 1)) - 1)``. With 4 chains that is 1.37 x the
    known-variance radius; the known-variance radius used with 4 chains covers 76 %, not 90 %.
    """
    if not 0 < level < 1:
        raise InputError(f"credibility level must be in (0, 1), got {level}")
    if chains is None:
        return std * math.sqrt(-math.log(1 - level))
    if int(chains) < 2:
        raise InputError(f"an interval from chains needs at least 2 chains, got {chains}")
    n = int(chains)
    f = (n - 1) * ((1 - level) ** (-1 / (n - 1)) - 1)
    return std * math.sqrt((1 + 1 / n) * f)


def credibility_map(mmse: torch.Tensor, std: torch.Tensor, level: float = 0.9,
                    rel: float = 0.2, support: float = 0.1, chains: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ratio, flagged)``: ratio = ``level``-interval radius / |MMSE|; flagged where the ratio
    exceeds ``rel`` inside the object (``|mmse| > support * max |mmse|`` per slice). ``chains``:
    the number of chains ``std`` was estimated from (see :func:`interval_radius`)."""
    mag = mmse.abs()
    r = interval_radius(std, level, chains)
    ratio = r / mag.clamp_min(torch.finfo(mag.dtype).tiny)
    peak = mag.reshape(mag.shape[0], -1).amax(1).reshape(-1, *([1] * (mag.ndim - 1)))
    inside = mag > support * peak
    return ratio, (ratio > rel) & inside


def _result(prob: _Problem, x: torch.Tensor, nfe: int, keep: bool) -> PosteriorResult:
    samples = prob.unscale(prob.chains_view(x))
    mmse, var, std = summarise(samples)
    return PosteriorResult(mmse, var, std, samples if keep else None, prob.scale, nfe)


def _noise_var(noise_var, ksp, mask, prob: "_Problem", ndim: int):
    """``None`` or the per-chain noise variance in the prior's units, shaped to broadcast."""
    noise_var = _resolve_noise_var(noise_var, ksp, mask)
    if noise_var is None:
        return None
    if not noise_var > 0:
        raise InputError(f"noise_var must be positive, got {noise_var}")
    return (float(noise_var) / prob.scale.repeat_interleave(prob.k) ** 2).reshape(
        -1, *([1] * (ndim - 1))).to(ksp.real.dtype)


# ----------------------------------------------------------------------------- samplers

def langevin_posterior(ksp: torch.Tensor, maps: torch.Tensor, prior: ImagePrior, *,
                       mask=None, chains: int = 10, n_levels: int = 100, skip: int = 31,
                       steps: int = 5, lam: float = 20.0, noise_var: float | None = None,
                       step_size: float = 0.2, tweedie: bool = True, scaling="cg", init: str = "uniform",
                       seed: int = 0, keep_samples: bool = False, callback=None,
                       sigma_max=None, sigma_min=None, support: bool = True) -> PosteriorResult:
    """Posterior sampling by annealed Langevin dynamics (see the module docstring).

    ``n_levels`` geometric levels, the first ``skip`` dropped, ``steps`` per level: with the
    defaults 69 x 5 = 345 network evaluations per chain (the published setting). ``init``:
    ``"uniform"`` (published) or ``"cg"`` (CG-SENSE image plus noise at the first level).
    ``support``: see :func:`fast_posterior`. ``callback(done, total)`` after every step.
    """
    if not 0 <= skip < n_levels or steps < 1:
        raise InputError(f"need 0 <= skip < n_levels and steps >= 1 (got skip {skip}, "
                         f"n_levels {n_levels}, steps {steps})")
    prob = _Problem(ksp, maps, mask, chains, scaling, support)
    sig = prior.levels(n_levels, sigma_max, sigma_min)[skip:].tolist()
    g = ItemNoise.for_chains(seed, prob.b, prob.k, ksp.device)  # one stream per chain
    shape = (prob.b * prob.k,) + prob.adj_y.shape[1:]
    if init == "uniform":
        u = g.rand((*shape, 2), dtype=ksp.real.dtype, device=ksp.device)
        x = torch.complex(u[..., 0], u[..., 1])
    elif init == "cg":
        x0 = prob.cg_image().expand(shape).clone()
        x = x0 + sig[0] * randn_like(x0, g)
    else:
        raise InputError(f"init must be 'uniform' or 'cg', not {init!r}")
    total = len(sig) * steps
    tick = counting_callback(callback, total)
    nfe0 = prior.nfe
    nv = _noise_var(noise_var, ksp, mask, prob, x.ndim)
    kw = dict(generator=g, callback=tick, project=lambda v, s: prob.renoise_outside(v, s, g))
    if nv is not None:  # annealed Langevin on p_s(x) p(y | x), steps a fraction of the local scale
        x = annealed_langevin(prior.score_fn(), x, sig, n_steps=steps,
                              step_fn=lambda s: step_size / (1.0 / (s * s) + 1.0 / nv),
                              likelihood_grad=lambda v, s: prob.residual_grad(v) / nv, **kw)
        if tweedie:  # remove the last level's noise
            x = x + sig[-1] ** 2 * prior.score(x, sig[-1])
    else:  # the published update: SMLD ancestral steps with the data term weighted lam tau_i
        weight = {s: lam * ve_noise_scale(s, s_next) / (s * s - s_next * s_next)
                  for s, s_next in zip(sig, sig[1:] + [0.0])}
        x = ancestral_ve(prior.score_fn(), x, sig + [0.0], n_steps=steps,
                         likelihood_grad=lambda v, s: weight[s] * prob.residual_grad(v), **kw)
    return _result(prob, prob.project(x), prior.nfe - nfe0, keep_samples)


def fast_posterior(ksp: torch.Tensor, maps: torch.Tensor, prior: ImagePrior, *, mask=None,
                   chains: int = 8, nfe: int = 30, sigma_start: float | None = None,
                   sigma_end: float | None = None, eta: float = 0.85, cg_iters: int = 5,
                   scaling="cg", seed: int = 0, keep_samples: bool = False,
                   callback=None, support: bool = True,
                   noise_var: float | str | None = None, draws: bool = False,
                   flips: bool = False) -> PosteriorResult:
    """DDS-style posterior sampler with ``nfe`` steps per chain (module docstring).

    ``noise_var`` (per-component k-space noise variance in the data's units, or ``"auto"``:
    :func:`estimate_noise_var`): the data-consistency step then solves for the most probable
    image given the data and the denoised image, ``(A^H A + nv / s^2) d = A^H y + nv / s^2 D``
    (``cg_iters`` CG iterations from ``D``), instead of ``cg_iters`` plain CG iterations on the
    data alone (whose early stop is the only regularisation).

    ``sigma_start`` (default: the prior's ``sigma_max``) is the level at which the CG-SENSE start
    is noised; levels are geometric down to ``sigma_end`` (default: the prior's ``sigma_min``).
    ``support`` (default on): the image is 0 where every coil map is 0 (ESPIRiT's cropped
    support): nothing there is measured, and without it the samplers return unconditional prior
    samples there. No effect for maps without zeros.

    ``draws`` (needs ``noise_var``): every step draws the chain from the Gaussian posterior of
    its data step instead of taking its mean, ``N(d, (A^H A / nv + 1 / c^2)^-1)`` by
    perturb-and-MAP (the same CG solve with the data and the denoised image perturbed by their
    own noise), with ``c^2`` the variance of the clean image given the noisy one
    (:meth:`~mriprior.recon.priors.ImagePrior.local_variance`: the prior's measured denoising
    error, else ``s^2 sd^2 / (s^2 + sd^2)`` for data of per-component std ``sd``, the prior's
    ``sigma_data`` or the start image's RMS), and renoises the draw with fresh noise (``eta`` =
    1). For a
    Gaussian prior this samples the posterior (tested: variance within a few % of it, where the
    means-only chains reach 0.4-0.7 of it), so its spread is the uncertainty; the mean of a few
    draws is noisier than that of the means-only chains (4 chains: + posterior variance / 4).

    ``flips``: the prior's score averaged over the four image-axis flips at every step
    (:class:`~mriprior.recon.priors.FlipAveraged`; 4 network evaluations per step).
    """
    if nfe < 1 or cg_iters < 0 or not 0 <= eta <= 1:
        raise InputError(f"need nfe >= 1, cg_iters >= 0, 0 <= eta <= 1 (got {nfe}, {cg_iters}, "
                         f"{eta})")
    if draws and (noise_var is None or not cg_iters):
        raise InputError("draws needs noise_var (a number or 'auto') and cg_iters >= 1: the "
                         "draw is from the data step's Gaussian posterior")
    prior = FlipAveraged(prior) if flips else prior
    prob = _Problem(ksp, maps, mask, chains, scaling, support)
    sig = prior.levels(nfe, sigma_start, sigma_end).tolist()
    g = ItemNoise.for_chains(seed, prob.b, prob.k, ksp.device)  # one stream per chain
    nv = _noise_var(noise_var, ksp, mask, prob, prob.adj_y.ndim)
    x0 = prob.cg_image().expand((prob.b * prob.k,) + prob.adj_y.shape[1:]).clone()
    x = x0 + sig[0] * randn_like(x0, g)
    nfe0 = prior.nfe
    d = x0
    sd2 = float(x0.abs().square().mean() / 2)  # data of this RMS: where the prior knows nothing

    def local_variance(s):  # of the clean image given the noisy one at level s
        c2 = prior.local_variance(s)
        return c2 if c2 is not None else s * s * sd2 / (s * s + sd2)
    for i, s in enumerate(sig):
        den = x + (s * s) * prior.score(x, s)  # Tweedie: E[x0 | x]
        d = den
        if cg_iters and nv is not None:  # MAP of the data and N(den, c^2): weight nv / c^2
            c2 = local_variance(s) if draws else s * s
            w = nv / c2
            normal = lambda v, w=w: prob.op.normal(v) + w * v  # noqa: E731
            d = conjugate_gradient(normal, prob.adj_y + w * den, x0=den, max_iter=cg_iters)
            if draws:  # perturb-and-MAP: the same solve, data and denoised image perturbed
                kn = randn_like(prob.op.forward(d), g)
                pn = math.sqrt(c2) * randn_like(d, g)
                rhs = prob.op.adjoint(nv.reshape(-1, *([1] * (kn.ndim - 1))).sqrt() * kn)
                d = d + conjugate_gradient(normal, rhs + w * pn, x0=pn, max_iter=cg_iters)
        elif cg_iters:
            d = conjugate_gradient(prob.op.normal, prob.adj_y, x0=den, max_iter=cg_iters)
        d = prob.project(d)
        s_next = sig[i + 1] if i + 1 < len(sig) else 0.0
        if s_next > 0:
            keep = 0.0 if draws else math.sqrt(1 - eta * eta)
            x = d + s_next * (keep * (x - den) / s + (1.0 if draws else eta) * randn_like(x, g))
        if callback is not None:
            callback(i + 1, len(sig))
    return _result(prob, d, prior.nfe - nfe0, keep_samples)


def prior_pics(ksp: torch.Tensor, maps: torch.Tensor, prior: ImagePrior, *, lam: float = 0.5,
               max_iter: int = 50, step: float | None = None, mask=None, scaling="cg",
               x0: torch.Tensor | None = None, callback=None, support: bool = True,
               wavelet: float = 0.0, flips: bool = False, anneal_sigma: float | None = None,
               anneal_iters: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """PICS with the prior as regulariser (module docstring). Returns ``(image, scale)`` with the
    image in the data's units.

    Accelerated (FISTA / Nesterov) gradient descent on ``0.5 ||A x - y||^2 + lam R(x)``: every
    iteration one gradient step on the sum. (BART puts the prior's gradient step where FISTA's
    proximal step goes; the fixed point of that splitting is off the minimiser by O(step).)
    ``step`` defaults to ``0.95 / (1 + lam L_R)`` with ``L_R`` the prior's
    ``reg_lipschitz`` (``||A^H A|| <= 1`` for normalised coil maps). ``x0``: warm start in the
    data's units (default: zeros, as BART). ``support``: FISTA's proximal step is the
    projection onto the coil maps' support (see :func:`fast_posterior`). ``wavelet``: a second
    regulariser ``wavelet ||W x||_1`` (BART's ``-R W:7:0:wavelet`` beside the prior's term; in
    this function's data scaling), whose proximal step (the l1-wavelet threshold with BART's
    cycle spinning, :class:`~mriprior.recon.wavelet.WaveletThreshold`) precedes the projection.
    ``flips``: the regulariser's denoiser averaged over the four image-axis flips
    (:class:`~mriprior.recon.priors.FlipAveraged`; 4 network evaluations per iteration).
    ``anneal_sigma``: the regulariser's denoiser level starts there and falls geometrically to
    the prior's ``reg_sigma`` over the first ``anneal_iters`` iterations (iteration ``k`` uses
    ``anneal_sigma (reg_sigma / anneal_sigma)^(k / anneal_iters)``), the continuation of
    plug-and-play methods: a coarse denoiser settles the aliasing first, the fine one the
    detail; a prior with a score only (``reg_sigma`` set). Default None: ``reg_sigma`` throughout.
    """
    if lam < 0 or wavelet < 0 or max_iter < 1 or (step is not None and not step > 0):
        raise InputError(f"need lam >= 0, wavelet >= 0, max_iter >= 1, step > 0 (got {lam}, "
                         f"{wavelet}, {max_iter}, {step})")
    levels = _anneal_levels(prior, anneal_sigma, anneal_iters)
    prior = FlipAveraged(prior) if flips else prior
    if step is None:
        step = 0.95 / (1.0 + lam * prior.reg_lipschitz)
    prob = _Problem(ksp, maps, mask, 1, scaling, support)
    start = None
    if x0 is not None:
        start = (x0.to(prob.adj_y.dtype)
                 / prob.scale.reshape(-1, *([1] * (x0.ndim - 1))).to(prob.adj_y.dtype))

    done = [0]  # iterations finished: the index of the next one's denoiser level

    def gradient_operator(v):  # the gradient of the objective is gradient_operator(v) - A^H y
        g = prob.op.normal(v)
        sigma = levels[min(done[0], len(levels) - 1)]
        return g + lam * prior.reg_grad(v, sigma) if lam else g

    def cb(it, v):
        done[0] = it + 1
        if callback is not None:
            callback(it + 1, max_iter)
    prox = lambda v, mu: prob.project(v)  # noqa: E731
    if wavelet:
        from mriprior.recon.wavelet import WaveletThreshold
        wt = WaveletThreshold()
        prox = lambda v, mu: prob.project(wt(v, wavelet * mu))  # noqa: E731
    x = fista(gradient_operator, prob.adj_y, prox, step=step, max_iter=max_iter, x0=start,
              callback=cb)
    return prob.unscale(prob.project(x)), prob.scale


def _anneal_levels(prior: ImagePrior, sigma: float | None, iters: int) -> list:
    """:func:`prior_pics`' denoiser level per iteration (the last one for the rest): ``[None]``
    (the prior's own regulariser) without annealing."""
    if sigma is None:
        return [None]
    if prior.reg_sigma is None:
        raise InputError(f"anneal_sigma needs a prior with a score-based regulariser "
                         f"(reg_sigma); {type(prior).__name__} has none")
    if not (isinstance(iters, int) and iters >= 1 and sigma > 0 and math.isfinite(sigma)):
        raise InputError(f"need anneal_sigma > 0 and anneal_iters >= 1 (got {sigma}, {iters})")
    lo = prior.reg_sigma
    return [sigma * (lo / sigma) ** (k / iters) for k in range(iters)] + [lo]


METHODS = {"fast": fast_posterior, "langevin": langevin_posterior, "pics": prior_pics}
# The one default of a method that is not its function's own: the fast sampler's noise model.
# "auto" (estimated from the data) won on every validation case of bench/noise_dc.py (+0.5 to
# +1.3 dB), so reconstructions of measured data use it; the function's None (plain CG steps) is
# the pure DDS sampler the benchmarks compare it with.
_RECON_DEFAULTS = {"fast": {"noise_var": "auto"}}


def method_defaults(method: str) -> dict:
    """The keyword defaults of a reconstruction method (``fast``, ``langevin``, ``pics``) as
    ``mriprior recon`` uses them: its function's own, with :data:`_RECON_DEFAULTS` on top."""
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, not {method!r}")
    params = inspect.signature(METHODS[method]).parameters.values()
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**out, **_RECON_DEFAULTS.get(method, {})}


# The settings of each method a user chooses and a prior's sidecar may tune (``recon_defaults``
# names them as ``mriprior recon``'s options do): option name -> the function's keyword.
OPTIONS = {"fast": {"chains": "chains", "nfe": "nfe", "sigma_start": "sigma_start", "eta": "eta",
                    "cg": "cg_iters", "noise_var": "noise_var", "draws": "draws",
                    "flips": "flips"},
           "langevin": {"chains": "chains", "levels": "n_levels", "skip": "skip",
                        "steps": "steps", "lam": "lam", "noise_var": "noise_var"},
           "pics": {"lam": "lam", "iters": "max_iter", "wavelet": "wavelet", "flips": "flips",
                    "anneal_sigma": "anneal_sigma", "anneal_iters": "anneal_iters"}}


def tuned_options(method: str, prior, pattern: str = "2d") -> dict:
    """Keyword -> value for every setting of ``method`` in :data:`OPTIONS`: the prior's tuned
    ``recon_defaults`` where its sidecar has them (for ``pattern`` ``"1d"``, line sampling:
    those under the method's ``"1d"`` first, :func:`mriprior.physics.masks.pattern_kind`), else
    :func:`method_defaults`. What ``mriprior recon`` and
    :func:`~mriprior.recon.volume.reconstruct_volume` start from."""
    if pattern not in ("1d", "2d"):
        raise InputError(f"pattern must be '1d' or '2d', not {pattern!r}")
    library = method_defaults(method)
    tuned = (getattr(prior, "recon_defaults", None) or {}).get(method, {})
    if pattern == "1d":
        tuned = {**tuned, **tuned.get("1d", {})}
    return {key: tuned.get(option, library[key]) for option, key in OPTIONS[method].items()}
