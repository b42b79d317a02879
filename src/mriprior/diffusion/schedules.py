"""Noise schedules: pure functions of (t or n) returning sigmas, plus the two shared helpers.

Conventions (used by every module of :mod:`mriprior.diffusion`)
----------------------------------------------------------------
* **One noise variable.** Everything is expressed in the variance-exploding ("VE-like") form
  ``x_sigma = x0 + sigma * z``, ``z ~ N(0, I)``. A score is always the score of that marginal,
  ``grad_x log p_sigma(x)``, and a denoiser is ``D(x, sigma) = E[x0 | x_sigma = x]``.
* **VE / SMLD.** ``sigma(t) = sigma_min * (sigma_max / sigma_min) ** t`` for ``t`` in
  ``[eps, 1]`` (``eps = 1e-5`` in training); ``sigma`` is log-uniform when ``t`` is uniform.
* **VP / DDPM.** Continuous linear beta: ``beta(t) = beta_min + t (beta_max - beta_min)``,
  ``beta_min = 0.1``, ``beta_max = 20``, ``alpha_bar(t) = exp(-(beta_min t + (beta_max -
  beta_min) t^2 / 2))`` and ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``. Dividing by
  ``sqrt(alpha_bar)`` gives the VE-like form ``x_t / sqrt(alpha_bar) = x0 + sigma_vp(t) eps`` with
  ``sigma_vp(t) = sqrt((1 - alpha_bar) / alpha_bar) = sqrt(expm1(B(t)))``, ``B = -log alpha_bar``.
  A VP sampler therefore runs on the VE-like state and VP networks are adapted by
  :class:`mriprior.diffusion.ScoreModel` (parametrisation ``"eps"``).
* **Sampler sigmas.** A 1-D float64 tensor, strictly decreasing. A trailing ``0`` (added by
  ``append_zero=True``, the default) asks the sampler for a final noise-free step to
  ``sigma = 0`` (a Tweedie denoising step). All positive levels are "noise levels".
* **Noise.** Real tensors: ``N(0, 1)`` per element. Complex tensors: real and imaginary parts
  each ``N(0, 1)`` (so ``E|z|^2 = 2``), i.e. a complex image is treated as a real vector of twice
  the length; scores of complex images are ``d/dRe + i d/dIm``. :func:`randn_like` implements it.
* **Broadcasting.** Per-sample quantities (``sigma`` of shape ``(batch,)``) are broadcast with
  :func:`append_dims`, whatever the rank of the data.
"""

from __future__ import annotations

import math

import torch

from mriprior.diffusion.noise import ItemNoise
from mriprior.errors import InputError

__all__ = [
    "append_dims",
    "randn_like",
    "ve_sigma",
    "ve_t",
    "ve_sigmas",
    "vp_beta",
    "vp_log_alpha_bar",
    "vp_alpha_bar",
    "vp_sigma",
    "vp_t",
    "vp_sigmas",
    "ddpm_sigmas",
]

BETA_MIN = 0.1
BETA_MAX = 20.0


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to ``v`` until it has ``ndim`` dims (rank-agnostic broadcast)."""
    extra = ndim - v.ndim
    if extra < 0:
        raise InputError(f"append_dims: tensor has {v.ndim} dims, more than the target {ndim}")
    return v.reshape(*v.shape, *([1] * extra))


def randn_like(x: torch.Tensor, generator: torch.Generator | ItemNoise | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``; complex: real and imaginary parts each ``N(0, 1)``.
    ``generator``: one for the batch, or :class:`~mriprior.diffusion.noise.ItemNoise` (one per
    item along the first dimension)."""
    dtype = x.dtype if dtype is None else dtype
    real = torch.empty(0, dtype=dtype).real.dtype if dtype.is_complex else dtype
    shape = (*x.shape, 2) if dtype.is_complex else tuple(x.shape)
    if isinstance(generator, ItemNoise):
        z = generator.randn(shape, dtype=real, device=x.device)
    else:
        z = torch.randn(shape, generator=generator, device=x.device, dtype=real)
    return torch.view_as_complex(z) if dtype.is_complex else z


def _as_tensor(t) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t
    return torch.as_tensor(t, dtype=torch.float64)


def _append_zero(s: torch.Tensor) -> torch.Tensor:
    return torch.cat([s, s.new_zeros(1)])


# ----------------------------------------------------------------------------- VE / SMLD
def ve_sigma(t, sigma_min: float = 0.01, sigma_max: float = 1.0) -> torch.Tensor:
    """``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` (VE / SMLD)."""
    if not 0 < sigma_min < sigma_max:
        raise InputError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    t = _as_tensor(t)
    return sigma_min * torch.exp(t * math.log(sigma_max / sigma_min))


def ve_t(sigma, sigma_min: float = 0.01, sigma_max: float = 1.0) -> torch.Tensor:
    """Inverse of :func:`ve_sigma`: ``t = log(sigma / sigma_min) / log(sigma_max / sigma_min)``."""
    sigma = _as_tensor(sigma)
    return torch.log(sigma / sigma_min) / math.log(sigma_max / sigma_min)


def ve_sigmas(n: int, sigma_min: float = 0.01, sigma_max: float = 1.0,
              append_zero: bool = True) -> torch.Tensor:
    """``n`` geometric levels from ``sigma_max`` down to ``sigma_min`` (float64), then a 0.

    Level ``i = 0 .. n-1`` is ``sigma_max (sigma_min / sigma_max)^(i / (n - 1))`` (NCSN levels;
    ``n = 1`` gives ``[sigma_max]``).
    """
    if n < 1:
        raise InputError(f"need at least one noise level, got n={n}")
    if not 0 < sigma_min <= sigma_max:
        raise InputError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if n == 1:
        s = torch.tensor([float(sigma_max)], dtype=torch.float64)
    else:
        s = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n,
                                     dtype=torch.float64))
    return _append_zero(s) if append_zero else s


# ----------------------------------------------------------------------------- VP / DDPM
def vp_beta(t, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> torch.Tensor:
    """Linear ``beta(t) = beta_min + t (beta_max - beta_min)``."""
    return beta_min + _as_tensor(t) * (beta_max - beta_min)


def vp_log_alpha_bar(t, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> torch.Tensor:
    """``log alpha_bar(t) = -int_0^t beta = -(beta_min t + (beta_max - beta_min) t^2 / 2)``."""
    t = _as_tensor(t)
    return -(beta_min * t + 0.5 * (beta_max - beta_min) * t * t)


def vp_alpha_bar(t, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> torch.Tensor:
    """``alpha_bar(t) = exp(log_alpha_bar(t))``."""
    return torch.exp(vp_log_alpha_bar(t, beta_min, beta_max))


def vp_sigma(t, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> torch.Tensor:
    """VE-like noise level of VP time ``t``: ``sqrt((1 - alpha_bar) / alpha_bar)``."""
    return torch.sqrt(torch.expm1(-vp_log_alpha_bar(t, beta_min, beta_max)))


def vp_t(sigma, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> torch.Tensor:
    """Inverse of :func:`vp_sigma`: solve ``beta_min t + d t^2 / 2 = log(1 + sigma^2)``."""
    sigma = _as_tensor(sigma)
    b = torch.log1p(sigma * sigma)
    d = beta_max - beta_min
    if d == 0:
        return b / beta_min
    return 2 * b / (beta_min + torch.sqrt(beta_min * beta_min + 2 * d * b))


def vp_sigmas(n: int, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX, eps: float = 1e-3,
              append_zero: bool = True) -> torch.Tensor:
    """VE-like levels ``sigma_vp(t_i)`` at ``t_i = linspace(1, eps, n)`` (float64), then a 0."""
    if n < 1:
        raise InputError(f"need at least one noise level, got n={n}")
    if not 0 < eps < 1:
        raise InputError(f"need 0 < eps < 1, got {eps}")
    t = torch.linspace(1.0, eps, n, dtype=torch.float64)
    s = vp_sigma(t, beta_min, beta_max)
    return _append_zero(s) if append_zero else s


def ddpm_sigmas(n: int = 1000, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX,
                append_zero: bool = True) -> torch.Tensor:
    """Discrete DDPM levels: ``betas = linspace(beta_min / n, beta_max / n, n)``,
    ``alpha_bar_i = prod_{j<=i} (1 - beta_j)``, ``sigma_i = sqrt((1 - alpha_bar_i) / alpha_bar_i)``,
    returned decreasing (``i = n .. 1``), then a 0."""
    if n < 1:
        raise InputError(f"need at least one noise level, got n={n}")
    betas = torch.linspace(beta_min / n, beta_max / n, n, dtype=torch.float64)
    log_ab = torch.cumsum(torch.log1p(-betas), 0)
    s = torch.sqrt(torch.expm1(-log_ab)).flip(0)
    return _append_zero(s) if append_zero else s
