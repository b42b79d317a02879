"""Unconditional samples from an exported prior (for sanity checks and figures).

Samples live where the network works: ``(n, C, H, W)`` real channels (C = 2: real, imaginary of
a complex image; C = 1: magnitude), in the prior's normalisation (images scaled to max |x| ~ 1).
VE priors start from ``sigma_max * z`` on a geometric sigma ladder; VP priors from
``sqrt(1 + sigma_0^2) z`` on the VP ladder in the VE-like form (see :mod:`mriprior.diffusion`).
PixelCNN++ priors (sidecar ``"prior_type": "pixelcnn"``) are sampled ancestrally pixel by pixel
(:func:`mriprior.priors.pixelcnn.sample_pixelcnn`; ``sampler`` must be ``"ancestral"``,
``steps`` does not apply, ``H * W`` network calls).

:func:`sample_grid_images` turns samples into magnitude / phase image grids (for TensorBoard).
"""

from __future__ import annotations

import math

import torch

from mriprior.diffusion.losses import ScoreModel
from mriprior.diffusion.samplers import (ancestral_ve, ancestral_vp, annealed_langevin,
                                         predictor_corrector)
from mriprior.diffusion.schedules import BETA_MAX, BETA_MIN, randn_like, ve_sigmas, vp_sigmas
from mriprior.errors import InputError
from mriprior.priors.export import prior_kind
from mriprior.priors.pixelcnn import sample_pixelcnn

__all__ = ["sample_prior", "sample_grid_images", "SAMPLERS"]

SAMPLERS = ("ancestral", "pc", "langevin")


def sample_prior(net: torch.nn.Module, meta: dict, n: int = 16, size=(128, 128),
                 sampler: str = "ancestral", steps: int = 100, seed: int = 0,
                 device="cpu", callback=None, temperature: float = 1.0) -> torch.Tensor:
    """Draw ``n`` samples ``(n, C, H, W)`` from the prior ``(net, meta)`` of :func:`load_prior`.

    ``temperature`` applies to PixelCNN++ priors only (1: the model itself)."""
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {SAMPLERS}, not {sampler!r}")
    if n < 1 or steps < 1:
        raise InputError(f"n ({n}) and steps ({steps}) must be >= 1")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if int(getattr(net, "config", {}).get("cond_channels", 0)):
        raise InputError("a conditional model (phase given magnitude) has no unconditional "
                         "samples; use `mriprior augment --method conditional`")
    if prior_kind(meta) == "pixelcnn":
        if sampler != "ancestral":
            raise InputError(f"a pixelcnn prior is sampled ancestrally (pixel by pixel); "
                             f"sampler {sampler!r} is for diffusion priors")
        return sample_pixelcnn(net, n=n, size=(h, w), seed=seed, device=device,
                               temperature=temperature, callback=callback)
    if temperature != 1.0:
        raise InputError("temperature applies to pixelcnn priors only")
    mult = getattr(net, "size_multiple", 1)
    if h % mult or w % mult:
        raise InputError(f"size {h} x {w} is not divisible by {mult} (the network's levels)")
    channels = net.config.get("in_channels", 2) if hasattr(net, "config") else 2
    model = ScoreModel.from_meta(net.to(device).eval(), meta)
    diff = meta["diffusion"]
    g = torch.Generator(device=device).manual_seed(seed)
    shape = torch.zeros(n, channels, h, w, device=device)
    if diff["type"] in ("ve", "edm"):
        sigmas = ve_sigmas(steps, diff["sigma_min"], diff["sigma_max"])
        x = float(sigmas[0]) * randn_like(shape, g)
    elif diff["type"] == "vp":
        sigmas = vp_sigmas(steps, diff.get("beta_min", BETA_MIN), diff.get("beta_max", BETA_MAX))
        x = float((1 + sigmas[0] ** 2) ** 0.5) * randn_like(shape, g)
    else:
        raise InputError(f"unknown diffusion type {diff['type']!r} in the prior's sidecar")

    def score(v, s):
        return model.score(v, s)

    with torch.no_grad():
        if sampler == "ancestral":
            run = ancestral_vp if diff["type"] == "vp" else ancestral_ve
            return run(score, x, sigmas, generator=g, callback=callback)
        if sampler == "pc":
            return predictor_corrector(score, x, sigmas, generator=g, callback=callback)
        step_lr = 2e-5 * (float(sigmas[sigmas > 0][-1]) / 0.01) ** 2
        return annealed_langevin(score, x, sigmas, generator=g, callback=callback,
                                 n_steps=3, step_lr=step_lr)


def _tile(imgs: torch.Tensor, cols: int) -> torch.Tensor:
    """``(n, H, W)`` -> ``(1, rows * H, cols * W)`` (empty cells black)."""
    n, h, w = imgs.shape
    rows = -(-n // cols)
    out = imgs.new_zeros(rows * h, cols * w)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = imgs[k]
    return out[None]


def sample_grid_images(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Samples ``(n, C, H, W)`` (prior normalisation) -> ``{"magnitude": (1, h, w)[, "phase":
    (1, h, w)]}`` float32 on the CPU in ``[0, 1]``: magnitude clamped to ``[0, 1]`` (images are
    normalised to max magnitude 1), phase ``(angle + pi) / (2 pi)``; samples tiled in a square
    grid."""
    if x.ndim != 4 or x.shape[1] not in (1, 2):
        raise InputError(f"samples must be (n, 1 or 2, H, W), got shape {tuple(x.shape)}")
    x = x.detach().float().cpu()
    cols = math.ceil(math.sqrt(x.shape[0]))
    if x.shape[1] == 1:
        return {"magnitude": _tile(x[:, 0].abs().clamp(0, 1), cols)}
    mag = torch.hypot(x[:, 0], x[:, 1]).clamp(0, 1)
    phase = (torch.atan2(x[:, 1], x[:, 0]) + math.pi) / (2 * math.pi)
    return {"magnitude": _tile(mag, cols), "phase": _tile(phase, cols)}
