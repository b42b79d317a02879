"""Phase for magnitude images: the methods that turn a magnitude archive into complex data.

Shapes: magnitudes ``(batch, y, x)`` real, >= 0, any scale; every method returns complex64
``(batch, y, x)`` images whose magnitude is the input magnitude (float32 rounding) and whose phase
the method supplies. Randomness comes only from the integer seeds given per item (one noise
stream per image, :class:`~mriprior.diffusion.noise.ItemNoise`), so an item's output does not
depend on the batch it is processed in; the exception is ``gan``, whose dropout noise is drawn
for the batch from one seed.

Methods (:data:`METHODS`):

``zero``
    phase 0 (the baseline of training on magnitudes as if they were complex).
``smooth``
    a smooth random phase: the background component of the simulator
    (:mod:`mriprior.data.simulate`, ``docs/simulation.md``) alone, i.e. a random 2nd-order
    polynomial with a uniform global offset plus a low-pass Gaussian random field; no
    susceptibility field and no tissue offsets (:data:`SMOOTH_MODEL`).
``langevin``
    the first founding study's posterior sampling with an unconditional complex prior and a
    magnitude likelihood (:func:`langevin_phase`).
``gan``
    a pix2pix-style conditional GAN (:mod:`mriprior.priors.gan`): the second founding study's
    GAN baseline (:func:`gan_phase`).
``conditional``
    the second founding study's approach: a score model of the complex image *given* its
    magnitude (a U-Net with the normalised magnitude as an extra input channel, trained by
    ``mriprior train`` with ``model.cond_channels: 1``), sampled by VE predictor-corrector
    (:func:`conditional_phase`).
"""

from __future__ import annotations

import math
import numbers

import torch

from mriprior.data.simulate import PhaseModel, complex_from_magnitude
from mriprior.diffusion.noise import ItemNoise
from mriprior.seeds import derive_seed
from mriprior.diffusion.samplers import (ancestral_ve, annealed_langevin, counting_callback,
                                         predictor_corrector)
from mriprior.diffusion.schedules import randn_like
from mriprior.errors import InputError
from mriprior.recon.priors import ImagePrior

__all__ = ["METHODS", "SMOOTH_MODEL", "magnitude_loss", "magnitude_loss_grad", "langevin_phase",
           "conditional_phase", "gan_phase", "zero_phase", "smooth_phase", "with_phase"]

METHODS = ("langevin", "conditional", "gan", "smooth", "zero")
SMOOTH_MODEL = PhaseModel(b0=(0.0,), class_std_ppm=0.0)


def _check(mag) -> torch.Tensor:
    if not torch.is_tensor(mag) or mag.is_complex() or mag.ndim != 3:
        raise InputError(f"magnitudes must be real (batch, y, x), got "
                         f"{getattr(mag, 'dtype', type(mag))} {tuple(getattr(mag, 'shape', ()))}")
    if not bool(torch.isfinite(mag).all()) or bool((mag < 0).any()):
        raise InputError("magnitudes must be finite and >= 0")
    return mag


def with_phase(mag: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mag * exp(i angle(x))`` as complex64 (angle 0 where ``x == 0``)."""
    return torch.polar(mag.to(torch.float32), torch.angle(x).to(torch.float32))


def magnitude_loss(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``L(x) = sum (|x| - m)^2`` per image, ``(batch,)``."""
    return (x.abs() - m).square().flatten(1).sum(1)


def magnitude_loss_grad(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``grad L = 2 (|x| - m) x / |x|`` (complex, ``d/dRe + i d/dIm``).

    At ``x = 0`` the gradient of ``|x|`` is undefined (every unit vector is a subgradient); we
    take 0 there, and the ratio ``x / |x|`` is computed only where ``|x|`` is above the dtype's
    smallest normal number, so no NaN or Inf can appear however small ``x`` gets.
    """
    a = x.abs()
    tiny = torch.finfo(a.dtype).tiny
    safe = a > tiny
    unit = torch.where(safe, x / torch.where(safe, a, torch.ones_like(a)), torch.zeros_like(x))
    return 2.0 * (a - m) * unit


def langevin_phase(prior: ImagePrior, mag: torch.Tensor, *, n_levels: int = 10,
                   steps: int = 50, eta: float = 0.15, seed=0, sigma_max=None,
                   sigma_min=None, likelihood_sigma: float | None = None,
                   step_size: float = 0.2, callback=None) -> torch.Tensor:
    """Sample ``x ~ p(x) exp(-L(x) / (2 s^2))`` by annealed Langevin dynamics; return
    ``mag * exp(i angle(x))``.

    The founding study's settings are the defaults: ``n_levels`` geometric noise levels from the
    prior's ``sigma_max`` to ``sigma_min`` (``sigma_{N+1} = 0``), ``steps`` steps per level::

        x <- x - eta grad L(x) + tau_i score(x, s_i) + std_i z,
        tau_i = s_i^2 - s_{i+1}^2,  std_i = sqrt(s_{i+1}^2 tau_i / s_i^2)

    with ``m = mag / max(mag)`` per image (the prior's normalisation) and ``z`` complex with unit
    variance per component. Start: ``m exp(i phi_0)`` with a random global phase ``phi_0`` per
    image plus noise at ``s_1``.

    This published update is a *cold* sampler: its noise (``std_i^2 < 2 tau_i``) is below
    what Langevin dynamics with step ``tau_i`` needs, and the last level (``std = 0``) is plain
    gradient ascent, so its phases are more concentrated than the posterior's (measured in the
    tests on a Gaussian prior). ``likelihood_sigma=s_L`` switches to annealed Langevin dynamics
    on ``p_{s_i}(x) exp(-L(x) / (2 s_L^2))``: ``x <- x + (a_i / 2) (score - grad L / (2 s_L^2))
    + sqrt(a_i) z`` with ``a_i = step_size / (1 / s_i^2 + 1 / s_L^2)``, which samples that
    posterior as the levels go to 0 (tested against numerical integration); ``eta`` then does
    not apply. ``n_levels * steps`` network evaluations per image (500 with
    the defaults); several samples of one image = repeat it in the batch with different seeds.
    ``seed``: one int per image (an image's result then depends only on it and its seed), or one
    int for the batch (image ``i`` uses ``derive_seed(seed, i)``). Both updates are the shared
    samplers of :mod:`mriprior.diffusion.samplers` (``ancestral_ve`` with the likelihood
    weighted ``-eta / tau_i``; ``annealed_langevin``) with the magnitude likelihood as their
    ``likelihood_grad``. ``callback(done, total)``.
    """
    mag = _check(mag)
    if n_levels < 1 or steps < 1 or not eta > 0:
        raise InputError(f"need n_levels >= 1, steps >= 1, eta > 0 (got {n_levels}, {steps}, "
                         f"{eta})")
    if likelihood_sigma is not None and not likelihood_sigma > 0:
        raise InputError(f"likelihood_sigma must be positive, got {likelihood_sigma}")
    m = _normalised(mag)
    g = _streams(mag, seed)
    phi0 = 2 * math.pi * g.rand((mag.shape[0], 1, 1), device=mag.device)
    sig = prior.levels(n_levels, sigma_max, sigma_min).tolist()
    x = torch.polar(m, phi0.expand_as(m)) + sig[0] * randn_like(m, g, dtype=torch.complex64)
    kw = dict(generator=g, callback=counting_callback(callback, n_levels * steps))
    if likelihood_sigma is None:  # the published update: SMLD ancestral steps, weight eta / tau_i
        tau = {s: s * s - s_next * s_next for s, s_next in zip(sig, sig[1:] + [0.0])}
        x = ancestral_ve(prior.score_fn(), x, sig + [0.0], n_steps=steps,
                         likelihood_grad=lambda v, s: -(eta / tau[s]) * magnitude_loss_grad(v, m),
                         **kw)
    else:  # annealed Langevin on p_s(x) exp(-L(x) / (2 s_L^2))
        v2 = likelihood_sigma ** 2
        x = annealed_langevin(prior.score_fn(), x, sig, n_steps=steps,
                              step_fn=lambda s: step_size / (1.0 / (s * s) + 1.0 / v2),
                              likelihood_grad=lambda v, s: -magnitude_loss_grad(v, m) / (2 * v2),
                              **kw)
    return with_phase(mag, x)


def _streams(mag: torch.Tensor, seed) -> ItemNoise:
    """One noise stream per image: ``seed`` one int per image, or one int for the batch (image
    ``i`` then uses ``derive_seed(seed, i)``, which depends on its place in the batch)."""
    n = mag.shape[0]
    if isinstance(seed, numbers.Integral):
        seeds = [derive_seed(seed, i) for i in range(n)]
    else:
        seeds = list(seed)
    if len(seeds) != n:
        raise InputError(f"got {len(seeds)} seeds for {n} magnitude images")
    return ItemNoise(seeds, mag.device)


def _normalised(mag):
    peak = mag.flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    return mag.to(torch.float32) / peak.reshape(-1, 1, 1).to(torch.float32)


def conditional_phase(prior, mag: torch.Tensor, *, n_levels: int = 200, snr: float = 0.16,
                      n_corrector: int = 1, seed=0, callback=None) -> torch.Tensor:
    """Sample ``x ~ p(x | m)`` with a conditional score model and return ``mag * exp(i
    angle(x))``.

    ``prior``: a conditional :class:`~mriprior.recon.priors.DiffusionPrior` (``cond_channels =
    1``); ``m = mag / max(mag)`` per image is its condition. VE predictor-corrector
    (:func:`mriprior.diffusion.samplers.predictor_corrector`) over ``n_levels`` geometric levels
    from the prior's ``sigma_max`` to ``sigma_min`` and a final noise-free step, starting from
    ``sigma_max`` times complex noise: ``(1 + n_corrector) * n_levels`` network evaluations
    per image (the second founding study: 1,000 levels, ~2,000 evaluations). ``seed``: as in
    :func:`langevin_phase`.
    """
    mag = _check(mag)
    if not getattr(prior, "cond_channels", 0):
        raise InputError("method 'conditional' needs a conditional model (cond_channels = 1)")
    if n_levels < 1:
        raise InputError(f"n_levels must be >= 1, got {n_levels}")
    m = _normalised(mag)
    bound = prior.conditioned_on(m[:, None])
    sig = prior.levels(n_levels).tolist() + [0.0]
    g = _streams(mag, seed)
    x0 = sig[0] * randn_like(m, g, dtype=torch.complex64)
    x = predictor_corrector(bound.score_fn(), x0, sig, generator=g, n_corrector=n_corrector,
                            snr=snr, callback=counting_callback(callback, n_levels))
    return with_phase(mag, x)


def gan_phase(G, mag: torch.Tensor, seed: int = 0, dropout: bool = True) -> torch.Tensor:
    """``mag * exp(i angle(G(m)))`` with ``m = mag / max`` and ``G`` a pix2pix
    :class:`~mriprior.priors.gan.PhaseGenerator`; any image size (zero padding to its size
    multiple). ``dropout`` on (pix2pix's noise source) with the torch RNG seeded by ``seed``
    inside a forked RNG state, so the global RNG is untouched."""
    import torch.nn.functional as F

    mag = _check(mag)
    m = _normalised(mag)[:, None]
    h, w = m.shape[-2:]
    k = G.size_multiple
    ph, pw = (-h) % k, (-w) % k
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    p = next(G.parameters())
    mp = F.pad(m, pad).to(device=p.device, dtype=p.dtype)
    was = G.training
    G.train(dropout)  # instance norm keeps no running statistics: only dropout changes
    try:
        with torch.random.fork_rng(devices=[p.device] if p.device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            v = G(mp)[..., pad[2]: pad[2] + h, pad[0]: pad[0] + w]
    finally:
        G.train(was)
    phasor = torch.complex(v[:, 0].float(), v[:, 1].float()).to(mag.device)
    return with_phase(mag, phasor)


def zero_phase(mag: torch.Tensor) -> torch.Tensor:
    return _check(mag).to(torch.complex64)


def smooth_phase(mag: torch.Tensor, seeds) -> torch.Tensor:
    """Smooth random phase (:data:`SMOOTH_MODEL`), one seed per item."""
    img, _ = complex_from_magnitude(_check(mag), seeds=[int(s) for s in seeds],
                                    model=SMOOTH_MODEL)
    return img
