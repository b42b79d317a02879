"""A PixelCNN++ prior (explicit likelihood) as a reconstruction prior: ``nll`` and its gradient.

Images as in :mod:`mriprior.recon.priors`: complex ``(batch, y, x)`` or ``(batch, maps, y, x)``
in the prior's normalisation (max magnitude ~ 1). A 2-channel prior scores (real, imaginary); a
1-channel (magnitude) prior scores ``|x|`` (the gradient reaches ``x`` through ``|x|``, zero at
``x = 0``). The network is fully convolutional and causal, so any image size works. It has no
noise levels, so only :func:`mriprior.recon.posterior.prior_pics` can use it; ``reg_grad`` is the
gradient of the NLL in nats (BART's ``pics -R TF`` semantics), and ``lam`` must be tuned for it
(the NLL gradient per pixel is of the order of 1 / bin width).
"""

from __future__ import annotations

import torch

from mriprior.recon.priors import ImagePrior, _as_images

__all__ = ["PixelCNNPrior"]


class PixelCNNPrior(ImagePrior):
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
        from mriprior.priors.pixelcnn import image_nll

        imgs, shape = _as_images(x)
        imgs = imgs.to(self.device)
        self.nfe += 1
        v = imgs if self.channels == 2 else imgs.abs()
        out = image_nll(self.net, v).to(x.device)
        return out.reshape(shape[0], -1).sum(1)
