"""The prior interface (:class:`ScoreModel`) and the training losses.

Conventions are those of :mod:`mriprior.diffusion.schedules` (VE-like form
``x = x0 + sigma z``; complex noise has unit-variance real and imaginary parts).

Networks are called as ``net(x_net, sigma)`` with ``sigma`` of shape ``(batch,)`` (the VE-like
level; a network conditioned on VP time can convert with :func:`~.schedules.vp_t`). Complex
images ``(batch, *spatial)`` enter networks as two real channels ``(batch, 2, *spatial)``
(:func:`complex_to_channels`); real data enter unchanged.

Parametrisations (what ``net`` was trained to output):

``"score"``  (VE / SMLD / NCSN) ``net(x, sigma) ~= sigma * grad log p_sigma(x)`` (i.e. ``-z``),
             input ``x = x0 + sigma z``; trained with :func:`ve_dsm_loss`.
``"eps"``    (VP / DDPM) ``net(x_vp, sigma) ~= eps`` with the VP input
             ``x_vp = x / sqrt(1 + sigma^2) = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``;
             trained with :func:`vp_eps_loss`. Score ``= -eps / sigma``.
``"edm"``    (Karras et al. 2022, "EDM") the network is the preconditioned part of a denoiser
             ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` with ``sd = sigma_data``,
             ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
             ``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = log(sigma) / 4``; trained with
             :func:`edm_loss`. Score ``= (D(x, sigma) - x) / sigma^2``. Our networks embed
             ``log`` of the level they are given, so ``F`` is called with ``sigma^(1/4)``: its
             embedding then sees exactly ``c_noise``. As ``sigma -> 0`` the network's error
             enters ``D`` scaled by ``c_out ~ sigma``, so the small-sigma score stays accurate.

Losses are unreduced: one value per sample, the mean over that sample's real elements (so the
numbers do not depend on the image size); the training loop reduces and logs.
"""

from __future__ import annotations

import torch
from torch import nn

from mriprior.errors import InputError
from mriprior.diffusion.schedules import (
    BETA_MAX, BETA_MIN, append_dims, randn_like, ve_sigma, vp_log_alpha_bar, vp_sigma,
)

__all__ = [
    "complex_to_channels",
    "channels_to_complex",
    "ScoreModel",
    "ve_dsm_loss",
    "vp_eps_loss",
    "edm_loss",
    "edm_preconditioning",
    "heldout_dsm_loss",
    "PARAMETRISATIONS",
    "PARAMETRISATION_OF",
]

PARAMETRISATIONS = ("score", "eps", "edm")
# diffusion type (of a config or sidecar) -> the parametrisation its training loss produces
PARAMETRISATION_OF = {"ve": "score", "vp": "eps", "edm": "edm"}


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(batch, *spatial)`` -> real ``(batch, 2, *spatial)`` (real, imaginary)."""
    if not x.is_complex():
        raise InputError(f"complex_to_channels expects a complex tensor, got {x.dtype}")
    if x.ndim < 1:
        raise InputError("complex_to_channels expects a batch dimension")
    return torch.stack([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``(batch, 2, *spatial)`` -> complex ``(batch, *spatial)``."""
    if x.is_complex() or x.ndim < 2 or x.shape[1] != 2:
        raise InputError(
            f"channels_to_complex expects a real (batch, 2, ...) tensor, got {x.dtype} "
            f"{tuple(x.shape)}")
    return torch.complex(x[:, 0], x[:, 1])


def _sigma_batch(sigma, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` (number, 0-d or ``(batch,)``) -> ``(batch,)`` in ``x``'s real dtype and device."""
    real = x.real.dtype if x.is_complex() else x.dtype
    if isinstance(sigma, torch.Tensor) and sigma.device == x.device:
        sigma = sigma.to(real)  # no device argument: a traced graph then has no device constant
    else:
        sigma = torch.as_tensor(sigma, device=x.device).to(real)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise InputError(f"sigma must be a number or shape ({x.shape[0]},), got "
                         f"{tuple(sigma.shape)}")
    return sigma


def _per_sample_mean(v: torch.Tensor) -> torch.Tensor:
    """Mean of ``|v|^2`` over each sample's real elements (complex counts 2 per element)."""
    if v.is_complex():
        v = torch.view_as_real(v)
    return v.reshape(v.shape[0], -1).square().mean(1)


def edm_preconditioning(sigma: torch.Tensor, sigma_data: float):
    """EDM's ``(c_skip, c_out, c_in, c_noise)`` for levels ``sigma`` (any shape, positive)."""
    sd2 = sigma_data * sigma_data
    s2 = sigma * sigma
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / torch.sqrt(s2 + sd2)
    c_in = 1 / torch.sqrt(s2 + sd2)
    c_noise = torch.log(sigma) / 4
    return c_skip, c_out, c_in, c_noise


class ScoreModel(nn.Module):
    """Turn a network ``net(x, sigma)`` into the one prior interface: ``score`` and ``denoise``.

    Args:
        net: the backbone, called as ``net(x_net, sigma)`` (see the module docstring).
        parametrisation: ``"score"``, ``"eps"`` or ``"edm"`` (what ``net`` outputs).
        cond: conditioning channels ``(batch, cond_channels, H, W)`` for conditional networks.
        sigma_data: the data's standard deviation of the ``"edm"`` preconditioning (required
            there, unused otherwise).

    ``forward(x, sigma)`` is ``score(x, sigma)``, so the model itself is a sampler's ``score_fn``.
    ``x`` may be real or complex; complex ``x`` is split into two channels at the network edge
    and the result is returned complex (``d/dRe + i d/dIm``).
    """

    def __init__(self, net: nn.Module, parametrisation: str = "score",
                 cond: torch.Tensor | None = None, sigma_data: float | None = None):
        super().__init__()
        if parametrisation not in PARAMETRISATIONS:
            raise InputError(f"unknown parametrisation {parametrisation!r}; "
                             f"choose from {PARAMETRISATIONS}")
        if parametrisation == "edm" and not (isinstance(sigma_data, (int, float))
                                             and sigma_data > 0):
            raise InputError(f"the 'edm' parametrisation needs sigma_data > 0, got "
                             f"{sigma_data!r}")
        self.net = net
        self.parametrisation = parametrisation
        self.cond = cond  # (batch, cond_channels, H, W) for conditional networks
        self.sigma_data = float(sigma_data) if parametrisation == "edm" else None

    @classmethod
    def from_meta(cls, net: nn.Module, meta: dict, cond: torch.Tensor | None = None):
        """The model of an exported prior's sidecar (``parametrisation``, ``diffusion``)."""
        diff = meta.get("diffusion") or {}
        kind = diff.get("type")
        want = PARAMETRISATION_OF.get(kind)
        if want is None:
            raise InputError(f"unknown diffusion type {kind!r} in the prior's sidecar (known: "
                             "ve, vp, edm)")
        if meta.get("parametrisation") != want:
            raise InputError(f"the prior's sidecar says parametrisation "
                             f"{meta.get('parametrisation')!r} with diffusion type {kind!r}, "
                             f"which is trained as {want!r}")
        return cls(net, want, cond=cond, sigma_data=diff.get("sigma_data"))

    def _call(self, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(v, sigma) if self.cond is None else self.net(v, sigma, self.cond)

    def _net(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if x.is_complex():
            return channels_to_complex(self._call(complex_to_channels(x), sigma))
        return self._call(x, sigma)

    def scaled_score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``sigma * score(x, sigma)`` (``~ -z``): the quantity the VE loss compares with ``-z``."""
        sigma = _sigma_batch(sigma, x)
        s = append_dims(sigma, x.ndim)
        if self.parametrisation == "score":
            return self._net(x, sigma)
        if self.parametrisation == "edm":
            return (self.denoise(x, sigma) - x) / s
        # "eps": the network sees the VP-scaled input and predicts eps = -sigma * score.
        return -self._net(x / torch.sqrt(1 + s * s), sigma)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``grad_x log p_sigma(x)`` of the VE-like marginal ``p_sigma = p_0 * N(0, sigma^2 I)``."""
        sigma = _sigma_batch(sigma, x)
        return self.scaled_score(x, sigma) / append_dims(sigma, x.ndim)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Tweedie: ``D(x, sigma) = x + sigma^2 score(x, sigma) = E[x0 | x]``."""
        sigma = _sigma_batch(sigma, x)
        if self.parametrisation == "edm":
            c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, self.sigma_data)
            f = self._net(append_dims(c_in, x.ndim) * x, torch.exp(c_noise))
            return append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * f.to(x.dtype)
        return x + append_dims(sigma, x.ndim) * self.scaled_score(x, sigma)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.score(x, sigma)


def _uniform_t(x0: torch.Tensor, generator, t_eps: float) -> torch.Tensor:
    real = x0.real.dtype if x0.is_complex() else x0.dtype
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=real)
    return t_eps + (1 - t_eps) * u


def ve_dsm_loss(net, x0: torch.Tensor, generator: torch.Generator | None = None, *,
                sigma_min: float = 0.01, sigma_max: float = 1.0, t_eps: float = 1e-5):
    """VE denoising score matching with ``lambda(sigma) = sigma^2`` (the anchors' SMLD loss).

    ``t ~ U(t_eps, 1)``, ``sigma = sigma_min (sigma_max / sigma_min)^t`` (log-uniform),
    ``z ~ N(0, I)``, loss ``= mean_elements (net(x0 + sigma z, sigma) + z)^2`` where ``net``
    outputs ``sigma * score`` (parametrisation ``"score"``; pass ``model.scaled_score`` to use
    any :class:`ScoreModel`).

    Returns ``(loss (batch,), sigma (batch,))``.
    """
    t = _uniform_t(x0, generator, t_eps)
    sigma = ve_sigma(t, sigma_min, sigma_max)
    z = randn_like(x0, generator)
    out = net(x0 + append_dims(sigma, x0.ndim) * z, sigma)
    return _per_sample_mean(out + z), sigma


def vp_eps_loss(net, x0: torch.Tensor, generator: torch.Generator | None = None, *,
                beta_min: float = BETA_MIN, beta_max: float = BETA_MAX, t_eps: float = 1e-5):
    """VP / DDPM epsilon prediction: ``t ~ U(t_eps, 1)``,
    ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``,
    loss ``= mean_elements (net(x_t, sigma_vp(t)) - eps)^2``.

    ``net`` is the raw ``"eps"`` network (VP input, conditioned on the VE-like level
    ``sigma_vp(t)``, as :class:`ScoreModel` calls it). Returns ``(loss (batch,), sigma (batch,))``.
    """
    t = _uniform_t(x0, generator, t_eps)
    log_ab = append_dims(vp_log_alpha_bar(t, beta_min, beta_max), x0.ndim)
    sigma = vp_sigma(t, beta_min, beta_max)
    eps = randn_like(x0, generator)
    x_t = torch.exp(0.5 * log_ab) * x0 + torch.sqrt(-torch.expm1(log_ab)) * eps
    return _per_sample_mean(net(x_t, sigma) - eps), sigma


def edm_loss(model: "ScoreModel", x0: torch.Tensor, generator: torch.Generator | None = None,
             *, p_mean: float = -1.2, p_std: float = 1.2):
    """EDM denoiser loss: ``ln sigma ~ N(p_mean, p_std^2)``, ``x = x0 + sigma z``,
    loss ``= lambda(sigma) mean_elements (D(x, sigma) - x0)^2`` with
    ``lambda = (sigma^2 + sd^2) / (sigma sd)^2`` (unit effective weight on the network output).

    ``model`` is a :class:`ScoreModel` with parametrisation ``"edm"`` (its ``sigma_data``).
    Returns ``(loss (batch,), sigma (batch,))``.
    """
    if getattr(model, "parametrisation", None) != "edm":
        raise InputError("edm_loss needs a ScoreModel with parametrisation 'edm'")
    real = x0.real.dtype if x0.is_complex() else x0.dtype
    n = torch.randn(x0.shape[0], generator=generator, device=x0.device, dtype=real)
    sigma = torch.exp(p_mean + p_std * n)
    z = randn_like(x0, generator)
    d = model.denoise(x0 + append_dims(sigma, x0.ndim) * z, sigma)
    sd = model.sigma_data
    weight = (sigma * sigma + sd * sd) / (sigma * sd) ** 2
    return weight * _per_sample_mean(d - x0), sigma


@torch.no_grad()
def heldout_dsm_loss(net, x0: torch.Tensor, sigmas, *, seed: int = 0) -> torch.Tensor:
    """VE DSM loss per noise level on a fixed noise draw: the prior's quality number.

    For each ``sigma`` in ``sigmas`` (levels ``<= 0`` are rejected), the loss
    ``mean_{batch, elements} (net(x0 + sigma z, sigma) + z)^2`` with ONE draw ``z`` (from
    ``torch.Generator().manual_seed(seed)`` on the CPU, then moved to ``x0``'s device) shared by all
    levels and all calls, so checkpoints are compared on identical noise. ``net`` outputs
    ``sigma * score``: pass ``ScoreModel.scaled_score`` for any parametrisation. For data
    ``N(mu, s^2 I)`` and the exact score the value is ``s^2 / (s^2 + sigma^2)``.

    Returns a float64 tensor ``(len(sigmas),)``.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if (sigmas <= 0).any():
        raise InputError("heldout_dsm_loss needs positive noise levels")
    g = torch.Generator().manual_seed(seed)
    z = randn_like(x0.cpu(), g).to(x0.device)
    out = []
    for sigma in sigmas.tolist():
        sb = _sigma_batch(sigma, x0)
        pred = net(x0 + append_dims(sb, x0.ndim) * z, sb)
        out.append(_per_sample_mean(pred + z).double().mean())
    return torch.stack(out).cpu()
