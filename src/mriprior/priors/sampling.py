"""Unconditional samples from an exported prior (for sanity checks and figures).

Samples live where the network works: ``(n, C, H, W)`` real channels (C = 2: real, imaginary of
a complex image; C = 1: magnitude), in the prior's normalisation (images scaled to max |x| ~ 1).
VE priors start from ``sigma_max * z`` on a geometric sigma ladder; VP priors from
``sqrt(1 + sigma_0^2) z`` on the VP ladder in the VE-like form (see :mod:`mriprior.diffusion`).
"""

from __future__ import annotations

import torch

from mriprior.diffusion.losses import ScoreModel
from mriprior.diffusion.samplers import (ancestral_ve, ancestral_vp, annealed_langevin,
                                         predictor_corrector)
from mriprior.diffusion.schedules import randn_like, ve_sigmas, vp_sigmas
from mriprior.errors import InputError

__all__ = ["sample_prior", "SAMPLERS"]

SAMPLERS = ("ancestral", "pc", "langevin")


def sample_prior(net: torch.nn.Module, meta: dict, n: int = 16, size=(128, 128),
                 sampler: str = "ancestral", steps: int = 100, seed: int = 0,
                 device="cpu", callback=None) -> torch.Tensor:
    """Draw ``n`` samples ``(n, C, H, W)`` from the prior ``(net, meta)`` of :func:`load_prior`."""
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {SAMPLERS}, not {sampler!r}")
    if n < 1 or steps < 1:
        raise InputError(f"n ({n}) and steps ({steps}) must be >= 1")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    mult = getattr(net, "size_multiple", 1)
    if h % mult or w % mult:
        raise InputError(f"size {h} x {w} is not divisible by {mult} (the network's levels)")
    channels = net.config.get("in_channels", 2) if hasattr(net, "config") else 2
    model = ScoreModel(net.to(device).eval(), meta["parametrisation"])
    diff = meta["diffusion"]
    g = torch.Generator(device=device).manual_seed(seed)
    shape = torch.zeros(n, channels, h, w, device=device)
    if diff["type"] == "ve":
        sigmas = ve_sigmas(steps, diff["sigma_min"], diff["sigma_max"])
        x = float(sigmas[0]) * randn_like(shape, g)
    elif diff["type"] == "vp":
        sigmas = vp_sigmas(steps, diff.get("beta_min", 0.1), diff.get("beta_max", 20.0))
        x = float((1 + sigmas[0] ** 2) ** 0.5) * randn_like(shape, g)
    else:
        raise InputError(f"unknown diffusion type {diff['type']!r} in the prior's sidecar")

    def score(v, s):
        return model.score(v, s)

    with torch.no_grad():
        if sampler == "ancestral":
            run = ancestral_ve if diff["type"] == "ve" else ancestral_vp
            return run(score, x, sigmas, generator=g, callback=callback)
        if sampler == "pc":
            return predictor_corrector(score, x, sigmas, generator=g, callback=callback)
        step_lr = 2e-5 * (float(sigmas[sigmas > 0][-1]) / 0.01) ** 2
        return annealed_langevin(score, x, sigmas, generator=g, callback=callback,
                                 n_steps=3, step_lr=step_lr)
