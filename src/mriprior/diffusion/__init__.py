"""Diffusion core: schedules, the prior interface, losses, EMA and samplers.

Conventions (VE-like form ``x = x0 + sigma z``, sigma tensors, complex noise) are written once at
the top of :mod:`mriprior.diffusion.schedules`; sampler signature and update rules at the top of
:mod:`mriprior.diffusion.samplers`.
"""

from mriprior.diffusion.schedules import (  # noqa: F401
    append_dims, randn_like, ve_sigma, ve_t, ve_sigmas, vp_beta, vp_log_alpha_bar, vp_alpha_bar,
    vp_sigma, vp_t, vp_sigmas, ddpm_sigmas,
)
from mriprior.diffusion.losses import (  # noqa: F401
    complex_to_channels, channels_to_complex, ScoreModel, ve_dsm_loss, vp_eps_loss, edm_loss,
    edm_preconditioning,
    heldout_dsm_loss,
)
from mriprior.diffusion.ema import EMA  # noqa: F401
from mriprior.diffusion.samplers import (  # noqa: F401
    annealed_langevin, predictor_corrector, ancestral_vp, ancestral_ve,
)

__all__ = [
    "append_dims", "randn_like", "ve_sigma", "ve_t", "ve_sigmas", "vp_beta", "vp_log_alpha_bar",
    "vp_alpha_bar", "vp_sigma", "vp_t", "vp_sigmas", "ddpm_sigmas",
    "complex_to_channels", "channels_to_complex", "ScoreModel", "ve_dsm_loss", "vp_eps_loss",
    "edm_loss", "edm_preconditioning",
    "heldout_dsm_loss", "EMA",
    "annealed_langevin", "predictor_corrector", "ancestral_vp", "ancestral_ve",
]
