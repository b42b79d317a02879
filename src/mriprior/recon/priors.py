"""Image priors as reconstruction sees them: one small interface over trained and analytic priors.

Images are complex ``(batch, y, x)`` (or ``(batch, maps, y, x)``: the maps are treated as
independent images) in the **prior's normalisation** (max magnitude ~ 1, see
:mod:`mriprior.priors.export`); the reconstruction methods scale the data to it and back.

An :class:`ImagePrior` offers

``score(x, sigma)``
    ``grad_x log p_sigma(x)`` of the prior smoothed by complex Gaussian noise with per-component
    standard deviation ``sigma`` (the VE-like convention of :mod:`mriprior.diffusion`), complex,
    same shape as ``x`` (``d/dRe + i d/dIm``). ``sigma`` is a number.
``reg_grad(x, sigma=None)``
    the gradient of the regulariser a PICS reconstruction adds to its data term (see
    :func:`mriprior.recon.posterior.prior_pics`): for a diffusion prior the RED form
    ``x - D(x, sigma_r) = -sigma_r^2 score(x, sigma_r)`` with ``sigma_r`` = ``sigma``, else
    ``reg_sigma`` (dimensionless step weights, stable for ``step * lam <= 1`` at every
    ``sigma_r``); for an explicit-likelihood prior the gradient of its NLL in nats.
``reg_lipschitz``
    a Lipschitz bound of ``reg_grad`` (1 for the RED form), which sets PICS's default step.
``sigma_min``, ``sigma_max``
    the noise range the prior was trained on (None for priors without noise levels).
``nfe``
    network evaluations so far (one batched call counts once), for benchmarks.
``recon_defaults``
    reconstruction settings tuned for this prior (its sidecar's ``recon_defaults``, e.g.
    ``{"fast": {"sigma_start": 1.0}, "pics": {"lam": 0.2}}``; empty when none were written),
    which `mriprior recon` uses where its command line gives none.

:class:`DiffusionPrior` wraps an exported score network (complex 2-channel, or magnitude
1-channel, whose score is carried to the complex image by the chain rule through ``|x|``);
it zero-pads images to the network's size multiple and crops the result, so any image size
works. :class:`FlipAveraged` wraps any prior with a score so that the score is averaged over
the four flips of the image axes (test-time averaging; exact for flip-invariant priors).
:class:`GaussianPrior` is the analytic prior ``x ~ N(mean, var)`` per real component,
whose posteriors are known in closed form (tests, examples).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mriprior.diffusion.schedules import ve_sigmas
from mriprior.errors import InputError
from mriprior.diffusion.losses import PARAMETRISATIONS, ScoreModel
from mriprior.diffusion.schedules import BETA_MAX, BETA_MIN, vp_sigma
from mriprior.priors.export import load_prior, prior_kind
from mriprior.priors.pixelcnn import image_nll

__all__ = ["ImagePrior", "DiffusionPrior", "FlipAveraged", "GaussianPrior", "PixelCNNPrior",
           "load_image_prior", "flip_ensemble"]


class ImagePrior:
    """Base class; subclasses implement :meth:`score` and/or :meth:`nll`."""

    sigma_min: float | None = None
    sigma_max: float | None = None
    reg_sigma: float | None = None
    reg_lipschitz: float = 1.0  # Lipschitz bound of reg_grad, sets prior_pics' default step
    sigma_data: float | None = None  # the data's per-component std, where the prior knows it

    def __init__(self):
        self.nfe = 0
        self.recon_defaults: dict = {}

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no score function")

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no explicit likelihood")

    def levels(self, n: int, sigma_max=None, sigma_min=None) -> torch.Tensor:
        """``n`` geometric noise levels (float64) from ``sigma_max`` down to ``sigma_min``
        (default: the prior's own); ``n = 1`` gives ``[sigma_min]``."""
        hi = float(sigma_max if sigma_max is not None else self.sigma_max)
        lo = float(sigma_min if sigma_min is not None else self.sigma_min)
        if not hi >= lo > 0:
            raise InputError(f"need sigma_max >= sigma_min > 0, got {hi}, {lo}")
        if n < 1:
            raise InputError(f"number of noise levels must be >= 1, got {n}")
        return ve_sigmas(n, lo, hi, append_zero=False) if n > 1 else torch.tensor(
            [lo], dtype=torch.float64)

    def local_variance(self, sigma: float) -> float | None:
        """Variance per component of the clean image given one at noise level ``sigma``: the
        sidecar's measured ``denoising_error`` (interpolated in log-log, held at its ends),
        else that of data with std ``sigma_data`` (``sigma^2 sd^2 / (sigma^2 + sd^2)``), else
        None (unknown)."""
        de = getattr(self, "denoising_error", None)
        if de:
            rel = math.exp(float(np.interp(math.log(sigma), np.log(de["sigmas"]),
                                           np.log(de["loss"]))))
            return sigma * sigma * min(rel, 1.0)
        if self.sigma_data is not None:
            sd2 = self.sigma_data ** 2
            return sigma * sigma * sd2 / (sigma * sigma + sd2)
        return None

    def score_fn(self):
        """The score as a sampler's ``score_fn(x, sigma)`` (``sigma`` a ``(batch,)`` tensor of one
        level, see :mod:`mriprior.diffusion.samplers`)."""
        return lambda x, sigma: self.score(x, float(sigma.reshape(-1)[0]))

    def reg_grad(self, x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """Gradient of the PICS regulariser at ``x`` (see the module docstring); ``sigma``: the
        denoiser's level instead of ``reg_sigma`` (priors with a score only)."""
        sigma = self.reg_sigma if sigma is None else sigma
        if sigma is not None:
            return -(sigma ** 2) * self.score(x, sigma)
        with torch.enable_grad():
            v = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.nll(v).sum(), v)
        return g.detach()


def _as_images(x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """``(b, y, x)`` or ``(b, m, y, x)`` -> ``(b*m, y, x)`` and the shape to restore."""
    if not x.is_complex() or x.ndim not in (3, 4):
        raise InputError(f"prior images must be complex (batch, y, x) or (batch, maps, y, x), "
                         f"got {x.dtype} {tuple(x.shape)}")
    return x.reshape(-1, *x.shape[-2:]), x.shape


class DiffusionPrior(ImagePrior):
    """A trained score network (from :func:`mriprior.priors.export.load_prior`) as an image prior.

    Args:
        net, meta: the network and sidecar returned by ``load_prior``.
        reg_sigma: the noise level whose denoiser defines :meth:`reg_grad` (default: 2 x the
            prior's ``sigma_min``, where the network is trained well and still sharp).
        max_batch: split larger batches into chunks of this many images (memory on CPU).
    """

    def __init__(self, net: torch.nn.Module, meta: dict, reg_sigma: float | None = None,
                 max_batch: int | None = None):
        super().__init__()

        if meta.get("parametrisation") not in PARAMETRISATIONS:
            raise InputError(f"prior parametrisation {meta.get('parametrisation')!r} is not a "
                             "diffusion prior")
        self.model = ScoreModel.from_meta(net.eval(), meta)
        self.meta = meta
        self.recon_defaults = dict(meta.get("recon_defaults") or {})
        diff = meta["diffusion"]
        if diff["type"] in ("ve", "edm"):
            self.sigma_min, self.sigma_max = float(diff["sigma_min"]), float(diff["sigma_max"])
        else:  # VP in the VE-like form: sigma(t) over t in [1e-3, 1]
            b0, b1 = diff.get("beta_min", BETA_MIN), diff.get("beta_max", BETA_MAX)
            self.sigma_min = float(vp_sigma(torch.tensor(1e-3), b0, b1))
            self.sigma_max = float(vp_sigma(torch.tensor(1.0), b0, b1))
        self.reg_sigma = float(reg_sigma) if reg_sigma is not None else 2 * self.sigma_min
        if diff.get("sigma_data") is not None:
            self.sigma_data = float(diff["sigma_data"])
        self.denoising_error = meta.get("denoising_error")
        self.channels = int(getattr(net, "config", {}).get("in_channels", 2))
        if self.channels not in (1, 2):
            raise InputError(f"prior network has {self.channels} input channels; expected 2 "
                             "(complex) or 1 (magnitude)")
        self.cond_channels = int(getattr(net, "config", {}).get("cond_channels", 0))
        self.cond = None  # set by conditioned_on
        self.multiple = int(getattr(net, "size_multiple", 1))
        self.max_batch = max_batch
        p = next(net.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.dtype = p.dtype if p is not None else torch.float32
        if self.device.type == "cpu" and hasattr(net, "use_channels_last"):
            net.use_channels_last(True)  # oneDNN's faster layout for inference on the CPU

    def conditioned_on(self, cond: torch.Tensor) -> "DiffusionPrior":
        """This conditional prior with its condition fixed (``(batch, cond_channels, y, x)``
        real, e.g. the normalised magnitude): ``score(x, sigma)`` is then the score of
        ``p_sigma(x | cond)`` for ``x`` of the same batch and size."""
        import copy

        if not self.cond_channels:
            raise InputError("this prior is not conditional (cond_channels = 0)")
        if cond.ndim != 4 or cond.shape[1] != self.cond_channels:
            raise InputError(f"condition must be (batch, {self.cond_channels}, y, x), got "
                             f"{tuple(cond.shape)}")
        bound = copy.copy(self)
        bound.cond = cond.to(device=self.device, dtype=self.dtype)
        return bound

    def _net_score(self, v: torch.Tensor, sigma: float) -> torch.Tensor:
        """Score of the network's own variable (complex image, or real magnitude)."""

        h, w = v.shape[-2:]
        cond = self.cond
        if self.cond_channels:
            if cond is None:
                raise InputError("a conditional prior: call conditioned_on(cond) first")
            if cond.shape[0] != v.shape[0] or cond.shape[-2:] != (h, w):
                raise InputError(f"condition {tuple(cond.shape)} does not match the images "
                                 f"{tuple(v.shape)}")
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:  # zero padding (air) around the field of view, centred
            pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
            v = (torch.complex(F.pad(v.real, pad), F.pad(v.imag, pad)) if v.is_complex()
                 else F.pad(v, pad))
            cond = F.pad(cond, pad) if cond is not None else None
        out = []
        step = self.max_batch or v.shape[0]
        for i in range(0, v.shape[0], step):
            model = (self.model if cond is None else
                     ScoreModel(self.model.net, self.model.parametrisation, cond[i:i + step],
                                sigma_data=self.model.sigma_data))
            out.append(model.score(v[i:i + step], sigma))
        s = torch.cat(out)
        if ph or pw:
            s = s[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]
        return s

    @torch.no_grad()
    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        imgs, shape = _as_images(x)
        work = imgs.to(device=self.device, dtype=torch.complex64 if self.dtype == torch.float32
                       else torch.complex128)
        self.nfe += 1
        if self.channels == 2:
            s = self._net_score(work, float(sigma))
        else:
            # Magnitude prior: d/dx log p(|x|) = p'(|x|)/p(|x|) * x / |x| (0 where x = 0).
            mag = work.abs()
            sm = self._net_score(mag.unsqueeze(1), float(sigma)).squeeze(1)
            unit = torch.where(mag > 0, work / mag.clamp_min(1e-12), torch.zeros_like(work))
            s = sm * unit
        return s.to(device=x.device, dtype=x.dtype).reshape(shape)


FLIPS = ((), (-2,), (-1,), (-2, -1))  # the flips of the last two (image) axes


def flip_ensemble(fn):
    """``fn(x, sigma, *extra)`` averaged over the four flips ``g`` of the image axes:
    ``mean_g g^-1 fn(g x, sigma, *(g e for e in extra))`` (``extra``: images that flip with
    ``x``; None passes through). For the score or denoiser of a flip-invariant density this is
    the same function, with the network's errors partly averaged out."""

    def ensemble(x, sigma, *extra):
        out = None
        for dims in FLIPS:
            def g(t, dims=dims):
                return t.flip(dims) if dims and t is not None else t
            y = g(fn(g(x), sigma, *(g(e) for e in extra)))
            out = y if out is None else out + y
        return out / len(FLIPS)

    return ensemble


class FlipAveraged(ImagePrior):
    """``prior`` with its score (and NLL) averaged over the four flips of the image axes
    (:func:`flip_ensemble`): for a prior trained with random y / x flips (``data.flips``) the
    density is flip-invariant, so this is the same score with the network's errors partly
    averaged out (on the bundled prior 0.2 dB less held-out denoising error at small sigma).
    Costs four network evaluations per score, counted in ``nfe``; everything else is
    ``prior``'s."""

    def __init__(self, prior: ImagePrior):
        if isinstance(prior, FlipAveraged):
            raise InputError("this prior is flip-averaged already")
        self.prior = prior
        for name in ("sigma_min", "sigma_max", "reg_sigma", "reg_lipschitz", "sigma_data",
                     "recon_defaults"):
            setattr(self, name, getattr(prior, name))
        self._score = flip_ensemble(prior.score)

    @property
    def nfe(self) -> int:
        return self.prior.nfe

    def __getattr__(self, name):  # the wrapped prior's model, meta, device, ...
        if name == "prior":
            raise AttributeError(name)
        return getattr(self.prior, name)

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self._score(x, sigma)

    def nll(self, x: torch.Tensor) -> torch.Tensor:  # (PICS with an explicit likelihood)
        return sum(self.prior.nll(x.flip(d) if d else x) for d in FLIPS) / len(FLIPS)

    def local_variance(self, sigma: float) -> float | None:
        return self.prior.local_variance(sigma)


class GaussianPrior(ImagePrior):
    """``x ~ N(mean, var)`` independently per real component (complex ``x``: real and imaginary
    parts each have variance ``var``). ``p_sigma = N(mean, var + sigma^2)``, so
    ``score(x, sigma) = (mean - x) / (var + sigma^2)`` and ``nll`` is exact (up to a constant).
    ``mean`` is a number or a complex tensor broadcastable to the images."""

    def __init__(self, mean=0.0, var: float = 1.0, sigma_min: float = 0.01,
                 sigma_max: float = 10.0, reg_sigma: float | None = None):
        super().__init__()
        if not var > 0:
            raise InputError(f"GaussianPrior variance must be positive, got {var}")
        self.mean, self.var = mean, float(var)
        self.sigma_data = math.sqrt(self.var)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.reg_sigma = reg_sigma
        self.reg_lipschitz = 1.0 if reg_sigma is not None else 1.0 / self.var

    def _mean(self, x):
        return torch.as_tensor(self.mean, device=x.device).to(x.dtype)

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.nfe += 1
        return (self._mean(x) - x) / (self.var + float(sigma) ** 2)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.view_as_real(x - self._mean(x)) if x.is_complex() else x - self._mean(x)
        n = d[0].numel()
        return (d.reshape(d.shape[0], -1).square().sum(1) / (2 * self.var)
                + 0.5 * n * math.log(2 * math.pi * self.var))


class PixelCNNPrior(ImagePrior):
    """A PixelCNN++ prior (explicit likelihood) as a reconstruction prior: ``nll`` and its
    gradient. A 2-channel prior scores (real, imaginary); a 1-channel (magnitude) prior scores
    ``|x|`` (the gradient reaches ``x`` through ``|x|``, zero at ``x = 0``). The network is fully
    convolutional and causal, so any image size works. It has no noise levels, so only
    :func:`mriprior.recon.posterior.prior_pics` can use it; ``reg_grad`` is the gradient of the
    NLL in nats (BART's ``pics -R TF`` semantics), and ``lam`` must be tuned for it (the NLL
    gradient per pixel is of the order of 1 / bin width)."""

    reg_lipschitz = 1.0

    def __init__(self, net: torch.nn.Module, meta: dict):
        super().__init__()
        self.net = net.eval()
        self.meta = meta
        self.recon_defaults = dict(meta.get("recon_defaults") or {})
        self.channels = int(getattr(net, "config", {}).get("in_channels", 2))
        p = next(net.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")

    @property
    def model(self):  # parameter counting in demos / benchmarks
        return self.net

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """NLL in nats per batch item (maps summed)."""

        imgs, shape = _as_images(x)
        imgs = imgs.to(self.device)
        self.nfe += 1
        v = imgs if self.channels == 2 else imgs.abs()
        out = image_nll(self.net, v).to(x.device)
        return out.reshape(shape[0], -1).sum(1)


def load_image_prior(path, device=None, reg_sigma: float | None = None,
                     max_batch: int | None = None) -> ImagePrior:
    """Load an exported prior (``NAME.safetensors`` + ``NAME.json``) as an :class:`ImagePrior`."""

    net, meta = load_prior(path, device=device)
    if prior_kind(meta) == "pixelcnn" or meta.get("parametrisation") == "nll":
        return PixelCNNPrior(net, meta)  # explicit likelihood
    if int(net.config.get("cond_channels", 0) if hasattr(net, "config") else 0):
        raise InputError(f"{path}: a conditional model (phase given magnitude), not an image "
                         "prior; it is used by `mriprior augment --method conditional`")
    return DiffusionPrior(net, meta, reg_sigma=reg_sigma, max_batch=max_batch)
