"""Samplers: small functions with one signature, the sampling loop written once per method.

Every sampler is called as::

    x = sampler(score_fn, x_init, sigmas, *, generator, callback=None, likelihood_grad=None,
                project=None, ...)

``score_fn(x, sigma)``
    the prior: ``grad_x log p_sigma(x)`` of the VE-like marginal ``p_sigma = p_0 * N(0, sigma^2)``
    (e.g. a :class:`~mriprior.diffusion.ScoreModel`); ``sigma`` arrives as a ``(batch,)`` tensor.
``x_init``
    the starting state, real or complex, any shape ``(batch, ...)``; the caller draws it (VE:
    ``sigmas[0] * randn_like``; VP in VE-like form: ``sqrt(1 + sigmas[0]^2) * randn_like``;
    NCSN: anything, e.g. uniform). Its dtype is the working dtype of ``score_fn`` calls.
``sigmas``
    decreasing 1-D levels (see :mod:`~mriprior.diffusion.schedules`); a trailing 0 asks for a
    final noise-free step to ``sigma = 0``.
``generator``
    the noise source, passed in so runs repeat: a ``torch.Generator`` on ``x_init``'s device, or
    an :class:`~mriprior.diffusion.noise.ItemNoise` (one stream per batch item, so an item's
    result does not depend on its batch).
``callback``
    called after every update with ``{"i": level index, "sigma": float, "x": state}``.
``likelihood_grad``
    optional ``(x, sigma) -> grad_x log p(y | x)`` (``sigma``: the level of the step, a float;
    same shape and dtype as ``x``; for complex ``x``,
    ``d/dRe + i d/dIm``, e.g. ``A^H (y - A x) / noise_var`` for ``y = A x + n`` with complex
    noise of per-component variance ``noise_var``). It is a plain additive term: wherever a
    sampler uses the prior score ``s`` it uses ``g = s + likelihood_grad(x)`` instead (same step
    size), i.e. it samples ``p_sigma(x) p(y | x)``, which tends to the posterior as ``sigma -> 0``.
    Heuristic weightings (the anchors' ``lambda * tau_i``, a function of the level) belong in
    the callable: posterior reconstruction (data consistency), phase augmentation (magnitude
    likelihood) and prior sampling (none) are these loops with different callables. Only Langevin
    steps (:func:`annealed_langevin`, the corrector of :func:`predictor_corrector`) target
    ``p_sigma(x) p(y | x)``; in predictor / ancestral steps the term is a heuristic guidance
    (their noise scales belong to the prior's reverse process: for a Gaussian prior and
    likelihood the mean is right but the variance comes out too small, see the tests). The term
    is not damped at large sigma: a stiff likelihood (``step * ||A^H A|| / noise_var >~ 2``)
    diverges, so scale it or start at a smaller ``sigmas[0]``.
``project``
    optional ``(x, sigma) -> x`` applied after every update, ``sigma`` the level the state is now
    at (e.g. replace the image outside the coil maps' support by noise of that level).

The state is kept in float64 (complex128) between steps; ``score_fn`` and ``likelihood_grad`` are
called in ``x_init``'s dtype and the result is returned in it. Noise ``z`` is ``N(0, 1)`` per
real component (:func:`~mriprior.diffusion.schedules.randn_like`).

Update rules (``s_i = sigmas[i]``, ``g_i(x) = score_fn(x, s_i) + likelihood_grad(x)``,
``z`` fresh noise each time):

* :func:`annealed_langevin` (NCSN, Song & Ermon 2019, Alg. 1): for each positive level ``s_i``,
  ``n_steps`` times ``x <- x + (a_i / 2) g_i(x) + sqrt(a_i) z`` with
  ``a_i = step_lr * s_i^2 / s_L^2`` (``s_L`` = smallest positive level; or ``a_i =
  step_fn(s_i)``, a number or a per-item tensor). With a trailing 0:
  a final ``x <- x + s_L^2 g_L(x)`` (Tweedie denoising).
* :func:`predictor_corrector` (VE, Song et al. 2021): for each positive level ``s_i`` with next
  level ``s_{i+1}`` (0 after the last): ``n_corrector`` Langevin corrector steps
  ``x <- x + e g_i(x) + sqrt(2 e) z``, ``e = 2 (snr ||z|| / ||g_i(x)||)^2`` (norms per sample over
  all real components), then the reverse-diffusion predictor
  ``x <- x + (s_i^2 - s_{i+1}^2) g_i(x) + sqrt(s_i^2 - s_{i+1}^2) z``, without the noise when
  ``s_{i+1} = 0`` (the final denoising step).
* :func:`ancestral_vp` (DDPM ancestral sampling written in the VE-like form
  ``y = x_vp / sqrt(alpha_bar)``): ``y <- y + (s_i^2 - s_{i+1}^2) g_i(y) + c_i z`` with
  ``c_i^2 = (s_i^2 - s_{i+1}^2) (1 + s_{i+1}^2) / (1 + s_i^2)``. This is exactly
  ``x_{i+1} = (x_i + beta_i score_vp(x_i)) / sqrt(1 - beta_i) + sqrt(beta_i) z`` in the VP variable,
  ``1 - beta_i = alpha_bar_{i+1} / alpha_bar_i``.
* :func:`ancestral_ve` (SMLD ancestral sampling; the anchors' Algorithm 1 with ``n_steps`` per
  level): ``x <- x + (s_i^2 - s_{i+1}^2) g_i(x) + c_i z``, ``c_i^2 = s_{i+1}^2 (s_i^2 - s_{i+1}^2)
  / s_i^2``, repeated ``n_steps`` times at each level.

The ancestral samplers share one loop; only the pure noise-scale function differs.
"""

from __future__ import annotations

from typing import Callable

import torch

from mriprior.errors import InputError
from mriprior.diffusion.schedules import append_dims, randn_like

__all__ = ["annealed_langevin", "predictor_corrector", "ancestral_vp", "ancestral_ve",
           "ve_noise_scale", "vp_noise_scale", "counting_callback"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hi(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def _check(x_init: torch.Tensor, sigmas) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1).cpu()
    if sigmas.numel() == 0 or sigmas[0] <= 0:
        raise InputError("sigmas must start with a positive noise level")
    if (sigmas < 0).any() or (sigmas[1:] >= sigmas[:-1]).any():
        raise InputError("sigmas must be non-negative and strictly decreasing")
    if x_init.ndim < 1:
        raise InputError("x_init needs a batch dimension")
    return sigmas


class _Drift:
    """``g(x, sigma) = score_fn(x, sigma) + likelihood_grad(x, sigma)``, called in the working
    dtype; :meth:`project` applies the caller's projection (identity without one)."""

    def __init__(self, score_fn, likelihood_grad, x_init: torch.Tensor, project=None):
        self.score_fn = score_fn
        self.likelihood_grad = likelihood_grad
        self.project_fn = project
        self.dtype = x_init.dtype
        self.real = x_init.real.dtype if x_init.is_complex() else x_init.dtype
        self.batch = x_init.shape[0]
        self.device = x_init.device

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        xw = x.to(self.dtype)
        s = torch.full((self.batch,), sigma, dtype=self.real, device=self.device)
        g = _hi(self.score_fn(xw, s))
        if self.likelihood_grad is not None:
            g = g + _hi(self.likelihood_grad(xw, sigma))
        return g

    def project(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x if self.project_fn is None else _hi(self.project_fn(x, sigma))


def counting_callback(callback, total: int):
    """A sampler ``callback`` that reports ``callback(done, total)`` after every update (a
    progress bar's signature); ``callback=None`` counts silently."""
    done = [0]

    def tick(_=None):
        done[0] += 1
        if callback is not None:
            callback(done[0], total)
    return tick


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm over all real components, shape ``(batch,)``."""
    if v.is_complex():
        v = torch.view_as_real(v)
    return v.reshape(v.shape[0], -1).norm(dim=1)


def _noise(x: torch.Tensor, generator) -> torch.Tensor:
    return randn_like(x, generator)


def annealed_langevin(score_fn: ScoreFn, x_init: torch.Tensor, sigmas, *,
                      generator, callback=None, likelihood_grad=None, project=None,
                      n_steps: int = 5, step_lr: float = 2e-5, step_fn=None) -> torch.Tensor:
    """Annealed Langevin dynamics (NCSN). See the module docstring for the exact rule.

    ``n_steps`` Langevin steps per level, step ``a_i = step_lr * s_i^2 / s_L^2``; stable for a
    Gaussian-like prior only if ``step_lr / s_L^2 < 4`` (NCSN uses ``step_lr = 2e-5`` with
    ``s_L = 0.01``). ``step_fn(s)`` replaces that rule (e.g. a fraction of the local posterior
    scale ``c / (1 / s^2 + 1 / noise_var)``, a per-item tensor).
    """
    sigmas = _check(x_init, sigmas)
    drift = _Drift(score_fn, likelihood_grad, x_init, project)
    levels = sigmas[sigmas > 0].tolist()
    s_last = levels[-1]
    x = _hi(x_init)
    for i, s in enumerate(levels):
        a = step_lr * (s / s_last) ** 2 if step_fn is None else step_fn(s)
        if torch.is_tensor(a):
            a = a.to(x.real.dtype)
        for _ in range(n_steps):
            x = x + (0.5 * a) * drift(x, s) + a ** 0.5 * _noise(x, generator)
            x = drift.project(x, s)
            if callback is not None:
                callback({"i": i, "sigma": s, "x": x})
    if sigmas[-1] == 0:
        x = drift.project(x + s_last ** 2 * drift(x, s_last), 0.0)
        if callback is not None:
            callback({"i": len(levels), "sigma": 0.0, "x": x})
    return x.to(x_init.dtype)


def predictor_corrector(score_fn: ScoreFn, x_init: torch.Tensor, sigmas, *,
                        generator, callback=None, likelihood_grad=None, project=None,
                        n_corrector: int = 1, snr: float = 0.16) -> torch.Tensor:
    """VE predictor-corrector: Langevin corrector (signal-to-noise ratio ``snr``) then the
    reverse-diffusion predictor, per level. See the module docstring for the exact rule.

    ``sigmas`` without a trailing 0 end with a noisy predictor step to ``sigma = 0``.
    """
    sigmas = _check(x_init, sigmas)
    drift = _Drift(score_fn, likelihood_grad, x_init, project)
    levels = sigmas[sigmas > 0].tolist()
    denoise_last = bool(sigmas[-1] == 0)
    x = _hi(x_init)
    for i, s in enumerate(levels):
        s_next = levels[i + 1] if i + 1 < len(levels) else 0.0
        for _ in range(n_corrector):
            g = drift(x, s)
            z = _noise(x, generator)
            e = 2 * (snr * _norm(z) / _norm(g).clamp_min(1e-30)) ** 2
            e = append_dims(e, x.ndim)
            x = drift.project(x + e * g + torch.sqrt(2 * e) * z, s)
        d = s * s - s_next * s_next
        x = x + d * drift(x, s)
        if not (s_next == 0 and denoise_last):
            x = x + d ** 0.5 * _noise(x, generator)
        x = drift.project(x, s_next)
        if callback is not None:
            callback({"i": i, "sigma": s, "x": x})
    return x.to(x_init.dtype)


def _ancestral(score_fn, x_init, sigmas, generator, callback, likelihood_grad, project,
               noise_scale, n_steps: int):
    """Shared loop: ``x <- x + (s_i^2 - s_{i+1}^2) g_i(x) + noise_scale(s_i, s_{i+1}) z``."""
    sigmas = _check(x_init, sigmas)
    if sigmas[-1] != 0:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    drift = _Drift(score_fn, likelihood_grad, x_init, project)
    x = _hi(x_init)
    sl = sigmas.tolist()
    for i in range(len(sl) - 1):
        s, s_next = sl[i], sl[i + 1]
        d = s * s - s_next * s_next
        c = noise_scale(s, s_next)
        for _ in range(n_steps):
            x = x + d * drift(x, s)
            if c > 0:
                x = x + c * _noise(x, generator)
            x = drift.project(x, s_next)
            if callback is not None:
                callback({"i": i, "sigma": s, "x": x})
    return x.to(x_init.dtype)


def vp_noise_scale(s: float, s_next: float) -> float:
    """The DDPM ancestral step's noise scale from level ``s`` to ``s_next`` (VE-like form)."""
    return ((s * s - s_next * s_next) * (1 + s_next * s_next) / (1 + s * s)) ** 0.5


def ve_noise_scale(s: float, s_next: float) -> float:
    """The SMLD ancestral step's noise scale ``sqrt(s_next^2 (s^2 - s_next^2) / s^2)``."""
    return (s_next * s_next * (s * s - s_next * s_next) / (s * s)) ** 0.5


def ancestral_vp(score_fn: ScoreFn, x_init: torch.Tensor, sigmas, *,
                 generator, callback=None, likelihood_grad=None,
                 project=None) -> torch.Tensor:
    """DDPM ancestral sampling in the VE-like form (use :func:`~.schedules.vp_sigmas` or
    :func:`~.schedules.ddpm_sigmas`; start from ``sqrt(1 + sigmas[0]^2) * randn``). The last step
    goes to ``sigma = 0`` (added if missing) and is noise-free. Returns ``x0``-space samples
    (the VP and VE-like variables coincide at ``sigma = 0``)."""
    return _ancestral(score_fn, x_init, sigmas, generator, callback, likelihood_grad, project,
                      vp_noise_scale, 1)


def ancestral_ve(score_fn: ScoreFn, x_init: torch.Tensor, sigmas, *,
                 generator, callback=None, likelihood_grad=None, project=None,
                 n_steps: int = 1) -> torch.Tensor:
    """SMLD ancestral sampling (``n_steps`` > 1 repeats each level: the anchors' Algorithm 1).
    Start from ``sigmas[0] * randn``; the last step to ``sigma = 0`` is noise-free."""
    return _ancestral(score_fn, x_init, sigmas, generator, callback, likelihood_grad, project,
                      ve_noise_scale, n_steps)
