"""pix2pix-style conditional GAN networks: phase given magnitude (a baseline of the second
founding study).

Generator ``G(m) -> (cos phi, sin phi)``: a U-Net (Isola et al. 2017: 4 x 4 stride-2
convolutions down, transposed convolutions up, skip connections, instance norm, dropout in the
innermost up-blocks as the noise source) from the normalised magnitude ``m`` ``(B, 1, H, W)`` to
a unit phasor ``(B, 2, H, W)`` (unit length: no phase wrap to learn). Discriminator: a PatchGAN on
``(m, Re, Im)`` of ``m * phasor`` (real pairs) or ``m * G(m)`` (generated pairs). Training, the
config and the losses: :mod:`mriprior.priors.gan_train`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mriprior.errors import InputError

__all__ = ["PhaseGenerator", "PatchDiscriminator"]


class PhaseGenerator(nn.Module):
    """pix2pix U-Net ``(B, 1, H, W)`` magnitude -> ``(B, 2, H, W)`` unit phasor; H, W multiples
    of ``2**depth``."""

    def __init__(self, base_channels: int = 32, depth: int = 5, dropout: float = 0.5):
        super().__init__()
        if depth < 1 or base_channels < 1 or not 0 <= dropout < 1:
            raise InputError(f"pix2pix: need depth >= 1, base_channels >= 1, 0 <= dropout < 1 "
                             f"(got {depth}, {base_channels}, {dropout})")
        self.config = {"type": "pix2pix", "base_channels": int(base_channels),
                       "depth": int(depth), "dropout": float(dropout)}
        self.size_multiple = 2 ** depth
        ch = [min(base_channels * 2 ** i, base_channels * 8) for i in range(depth)]
        self.down = nn.ModuleList()
        c_in = 1
        for i, c in enumerate(ch):
            layers = [nn.Conv2d(c_in, c, 4, 2, 1)]
            if 0 < i < depth - 1:
                layers.append(nn.InstanceNorm2d(c, affine=True))
            self.down.append(nn.Sequential(*layers))
            c_in = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_out = ch[i - 1] if i > 0 else base_channels
            c_inp = ch[i] if i == depth - 1 else 2 * ch[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_inp, c_out, 4, 2, 1),
                      nn.InstanceNorm2d(c_out, affine=True)]
            if dropout and i >= depth - 3 and i > 0:  # innermost up-blocks, as pix2pix
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        self.out = nn.Conv2d(base_channels, 2, 3, padding=1)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        if m.ndim != 4 or m.shape[1] != 1 or m.shape[-1] % self.size_multiple or \
                m.shape[-2] % self.size_multiple:
            raise InputError(f"pix2pix generator: input must be (B, 1, H, W) with H, W multiples "
                             f"of {self.size_multiple}, got {tuple(m.shape)}")
        skips, h = [], m
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.leaky_relu(h, 0.2))
            skips.append(h)
        for j, block in enumerate(self.up):
            if j > 0:
                h = torch.cat([h, skips[len(skips) - 1 - j]], 1)
            h = block(h)
        v = self.out(F.relu(h))
        return v / v.square().sum(1, keepdim=True).add(1e-12).sqrt()


class PatchDiscriminator(nn.Module):
    """PatchGAN on ``(B, 3, H, W)`` = (magnitude, Re, Im); logits ``(B, 1, h, w)``."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        mods, c_in = [], 3
        for i in range(layers):
            c = channels * 2 ** min(i, 3)
            mods += [nn.Conv2d(c_in, c, 4, 2, 1)]
            if i > 0:
                mods.append(nn.InstanceNorm2d(c, affine=True))
            mods.append(nn.LeakyReLU(0.2))
            c_in = c
        mods += [nn.Conv2d(c_in, c_in, 4, 1, 1), nn.InstanceNorm2d(c_in, affine=True),
                 nn.LeakyReLU(0.2), nn.Conv2d(c_in, 1, 4, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)
