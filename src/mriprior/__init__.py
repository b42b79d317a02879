"""mriprior: MRI reconstruction with generative image priors, in PyTorch.

Data flow (imports point one way): io -> physics -> data -> priors -> recon / augment
-> experiments -> cli. See docs/design.md; the common path is importable from here
(docs/api.md)::

    import mriprior as mp
    ksp, layout = mp.read_kspace("ksp")          # BART cfl -> (1, coil, y, x), its layout
    maps = mp.espirit(ksp, calib=24, maps=1)[:, 0]
    prior = mp.load_image_prior("bundled")
    r = mp.fast_posterior(ksp, maps, prior, noise_var="auto")   # r.mmse, r.std

Names are imported on first use (``import mriprior`` stays fast for the command line).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from mriprior.errors import InputError, MriPriorError  # noqa: E402

# public name -> module that defines it (imported lazily, PEP 562)
_API = {
    # files
    "read_cfl": "mriprior.io.cfl", "write_cfl": "mriprior.io.cfl",
    "BartLayout": "mriprior.io.cfl", "read_kspace": "mriprior.io.cfl",
    "read_fastmri": "mriprior.io.fastmri",
    # physics
    "fft2c": "mriprior.physics.fft", "ifft2c": "mriprior.physics.fft",
    "Sense": "mriprior.physics.sense", "espirit": "mriprior.physics.espirit",
    "poisson_disc": "mriprior.physics.masks", "variable_density_1d": "mriprior.physics.masks",
    "shepp_logan": "mriprior.physics.phantom", "birdcage_maps": "mriprior.physics.phantom",
    # reconstruction
    "pics": "mriprior.recon.classical",
    "load_image_prior": "mriprior.recon.priors",
    "fast_posterior": "mriprior.recon.posterior",
    "langevin_posterior": "mriprior.recon.posterior",
    "prior_pics": "mriprior.recon.posterior",
    "estimate_noise_var": "mriprior.recon.posterior",
    "reconstruct_volume": "mriprior.recon.volume",
    # priors
    "load_prior": "mriprior.priors.export", "save_prior": "mriprior.priors.export",
    "export_torchscript": "mriprior.priors.deploy",
    # metrics
    "evaluate": "mriprior.metrics", "psnr": "mriprior.metrics", "ssim": "mriprior.metrics",
    "nmse": "mriprior.metrics", "evaluate_volume": "mriprior.metrics",
}

__all__ = ["__version__", "InputError", "MriPriorError", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mriprior' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
