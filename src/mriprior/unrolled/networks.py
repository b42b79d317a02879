"""Unrolled reconstruction networks: an end-to-end VarNet and MoDL, for multi-coil Cartesian data.

Shapes (the conventions of :mod:`mriprior.physics`): k-space ``y`` ``(batch, coil, y, x)``
complex64, zero where not sampled; coil maps ``S`` ``(batch, coil, y, x)`` (ESPIRiT-like,
``sum_c |S_c|^2 = 1`` on the object); mask ``(batch, 1, y, x)`` or ``(batch, 1, 1, x)`` real 0/1;
images ``(batch, y, x)`` complex64. Both networks map ``(y, maps, mask) -> image`` and are fully
convolutional (any size divisible by ``2 ** pools``; other sizes are padded internally).

* :class:`VarNet` (Sriram et al. 2020, the fastMRI baseline, with given maps): the state is the
  coil k-space ``k`` (starting at ``y``); cascade ``t`` refines it with a small image-domain
  U-Net on the coil-combined image and then enforces data consistency with a learnt weight
  ``lambda_t >= 0``::

      r  = k - F S U_t(S^H F^H k)                          (refinement, as fastMRI's VarNet)
      k' = (1 - M) r + M (r + lambda_t y) / (1 + lambda_t)  (weighted data consistency)

  so the sampled entries of ``k'`` tend to ``y`` as ``lambda_t`` grows (exact in the limit).
  Output: ``S^H F^H k`` of the last cascade.
* :class:`MoDL` (Aggarwal et al. 2019): one shared denoiser ``D(x) = x - U(x)``, then
  ``x' = argmin_x ||A x - y||^2 + mu ||x - D(x)||^2``, i.e. ``(A^H A + mu I) x' = A^H y +
  mu D(x)``, by ``cg_iters`` conjugate-gradient steps (unrolled, differentiable), ``mu`` learnt.

The U-Nets see complex images as two real channels, normalised per image by the mean and
standard deviation of the input (as in fastMRI); their correction is scaled back by the std, so
both networks are exactly equivariant to the scale of the data (k-space x c -> image x c).
The U-Nets' last layers start at zero: an untrained VarNet returns the zero-filled SENSE image
(for sampled lines, with its data consistency) and an untrained MoDL a regularised SENSE
solution, so training starts from the classical answer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mriprior.errors import InputError
from mriprior.physics.linop import broadcast_shape
from mriprior.physics.fft import fft2c, ifft2c
from mriprior.recon.solvers import conjugate_gradient

__all__ = ["UNet", "VarNet", "MoDL", "build_network", "NETWORKS", "sense_expand",
           "sense_reduce"]


def sense_expand(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Image ``(b, y, x)`` -> coil k-space ``F (S x)`` ``(b, c, y, x)``."""
    return fft2c(maps * x[:, None])


def sense_reduce(k: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Coil k-space ``(b, c, y, x)`` -> image ``sum_c conj(S_c) F^H k_c`` ``(b, y, x)``."""
    return (maps.conj() * ifft2c(k)).sum(1)


class _Block(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm2d(cout),
            nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2))


class UNet(nn.Module):
    """fastMRI-style U-Net on complex images ``(b, y, x)`` -> a correction ``(b, y, x)``: 2 real
    channels normalised by the input's mean and std, ``pools`` levels of 2 x 2 average pooling,
    ``chans`` channels at the top (doubling per level), instance norm, leaky ReLU,
    transposed-convolution upsampling, a 1 x 1 output initialised to zero and scaled back by the
    input's std (so an untrained network changes nothing)."""

    def __init__(self, chans: int = 12, pools: int = 3):
        super().__init__()
        if chans < 1 or pools < 0:
            raise InputError(f"unet: need chans >= 1 and pools >= 0 (got {chans}, {pools})")
        self.pools = pools
        self.down = nn.ModuleList([_Block(2, chans)])
        ch = chans
        for _ in range(pools):
            self.down.append(_Block(ch, ch * 2))
            ch *= 2
        self.up_t, self.up = nn.ModuleList(), nn.ModuleList()
        for _ in range(pools):
            self.up_t.append(nn.ConvTranspose2d(ch, ch // 2, 2, stride=2))
            self.up.append(_Block(ch, ch // 2))
            ch //= 2
        self.out = nn.Conv2d(ch, 2, 1)
        nn.init.zeros_(self.out.weight)  # starts as "no correction": the cascades start as
        nn.init.zeros_(self.out.bias)    # zero-filled / SENSE and can only learn from there

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.stack([x.real, x.imag], 1)
        b = h.shape[0]
        mean = h.reshape(b, 2, -1).mean(-1)[..., None, None]
        std = h.reshape(b, -1).std(-1).clamp_min(1e-12)[:, None, None, None]
        h = (h - mean) / std
        m = 2 ** self.pools
        ny, nx = h.shape[-2:]
        py, px = (-ny) % m, (-nx) % m
        if py or px:
            h = F.pad(h, (px // 2, px - px // 2, py // 2, py - py // 2), mode="reflect")
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        skips.pop()
        for up_t, block in zip(self.up_t, self.up):
            h = block(torch.cat([up_t(h), skips.pop()], 1))
        h = self.out(h)[..., py // 2:py // 2 + ny, px // 2:px // 2 + nx]
        h = h * std  # a correction in the input's units
        return torch.complex(h[:, 0], h[:, 1])


def _check_inputs(y, maps, mask):
    if y.ndim != 4 or maps.shape != y.shape:
        raise InputError(f"k-space {tuple(y.shape)} and coil maps {tuple(maps.shape)} must both "
                         "be (batch, coil, y, x)")
    try:
        broadcast_shape(mask.shape, y.shape)
    except RuntimeError:
        raise InputError(f"mask {tuple(mask.shape)} does not broadcast to k-space "
                         f"{tuple(y.shape)}") from None


def _softplus_inv(v: float) -> float:
    """w with softplus(w) = v (for large v, softplus(w) = w to float precision)."""
    return v if v > 30 else math.log(math.expm1(v))


class VarNet(nn.Module):
    """End-to-end variational network with given coil maps (see the module docstring)."""

    def __init__(self, cascades: int = 6, chans: int = 12, pools: int = 3,
                 dc_weight: float = 1.0):
        super().__init__()
        if cascades < 1 or not dc_weight > 0:
            raise InputError(f"varnet: need cascades >= 1 and dc_weight > 0 (got {cascades}, "
                             f"{dc_weight})")
        self.config = {"type": "varnet", "cascades": int(cascades), "chans": int(chans),
                       "pools": int(pools), "dc_weight": float(dc_weight)}
        self.unets = nn.ModuleList([UNet(chans, pools) for _ in range(cascades)])
        # lambda_t = softplus(w_t): positive, initialised at dc_weight
        self.dc = nn.Parameter(torch.full((cascades,), _softplus_inv(dc_weight)))

    def kspace(self, y, maps, mask):
        """The last cascade's coil k-space ``(b, c, y, x)``."""
        _check_inputs(y, maps, mask)
        mask = mask.to(y.real.dtype)
        k = y
        for t, unet in enumerate(self.unets):
            r = k - sense_expand(unet(sense_reduce(k, maps)), maps)
            lam = F.softplus(self.dc[t])
            k = r + mask * (lam * y - lam * r) / (1 + lam)
        return k

    def forward(self, y, maps, mask):
        return sense_reduce(self.kspace(y, maps, mask), maps)


class MoDL(nn.Module):
    """MoDL: shared denoiser + unrolled CG data consistency (see the module docstring)."""

    def __init__(self, iterations: int = 6, chans: int = 16, pools: int = 2,
                 cg_iters: int = 8, mu: float = 1.0):
        super().__init__()
        if iterations < 1 or cg_iters < 1 or not mu > 0:
            raise InputError(f"modl: need iterations >= 1, cg_iters >= 1 and mu > 0 (got "
                             f"{iterations}, {cg_iters}, {mu})")
        self.config = {"type": "modl", "iterations": int(iterations), "chans": int(chans),
                       "pools": int(pools), "cg_iters": int(cg_iters), "mu": float(mu)}
        self.unet = UNet(chans, pools)
        self.mu = nn.Parameter(torch.tensor(_softplus_inv(mu)))

    def data_consistency(self, z, y, maps, mask, mu):
        """Solve ``(A^H A + mu I) x = A^H y + mu z`` with ``cg_iters`` CG steps."""
        mask = mask.to(y.real.dtype)

        def normal_mu(v):  # mu may carry a gradient: kept out of the solver's scalar `lam`
            return sense_reduce(mask * sense_expand(v, maps), maps) + mu * v

        rhs = sense_reduce(mask * y, maps) + mu * z
        return conjugate_gradient(normal_mu, rhs, max_iter=self.config["cg_iters"])

    def forward(self, y, maps, mask):
        _check_inputs(y, maps, mask)
        mu = F.softplus(self.mu)
        x = self.data_consistency(torch.zeros_like(y[:, 0]), y, maps, mask, mu)  # ~SENSE
        for _ in range(self.config["iterations"]):
            x = self.data_consistency(x - self.unet(x), y, maps, mask, mu)
        return x


NETWORKS = {"varnet": (VarNet, ("cascades", "chans", "pools", "dc_weight")),
            "modl": (MoDL, ("iterations", "chans", "pools", "cg_iters", "mu"))}


def build_network(config: dict) -> nn.Module:
    """``{"type": "varnet" | "modl", ...constructor keys}`` -> network; unknown keys fail."""
    kind = config.get("type")
    if kind not in NETWORKS:
        raise InputError(f"model.type: unknown unrolled network {kind!r} (known: "
                         f"{', '.join(NETWORKS)})")
    cls, keys = NETWORKS[kind]
    for key in config:
        if key != "type" and key not in keys:
            raise InputError(f"model.{key}: unknown key for {kind} (known: type, "
                             f"{', '.join(keys)})")
    for key, v in config.items():
        if key != "type" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InputError(f"model.{key}: expected a number, got {type(v).__name__}")
    return cls(**{k: v for k, v in config.items() if k != "type"})
