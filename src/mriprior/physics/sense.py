"""Multi-coil SENSE operator A = M F S (coil maps, centred orthonormal FFT, sampling mask).

Shapes (see :mod:`mriprior.physics`):

* one set of maps ``(batch, coil, y, x)``: image ``(batch, y, x)``;
* several ESPIRiT maps ``(batch, maps, coil, y, x)``: image ``(batch, maps, y, x)``; the forward
  model sums the maps' contributions, as BART's ``pics`` does;
* k-space ``(batch, coil, y, x)``; mask real, broadcastable to k-space (``(y, x)``,
  ``(batch, 1, y, x)``, ...) or None for full sampling.

``batch`` may be 1 in the maps or the mask and broadcast against the image.
"""

from __future__ import annotations

import torch

from mriprior.errors import InputError
from mriprior.physics.linop import broadcast_shape
from mriprior.physics.fft import fft2c, ifft2c
from mriprior.physics.linop import LinOp

__all__ = ["Sense", "sense_combine"]


class Sense(LinOp):
    """A x = mask * FFT(sum_m maps_m * x_m)."""

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor | None = None):
        if maps.ndim == 4:
            maps = maps.unsqueeze(1)
            self.multi_map = False
        elif maps.ndim == 5:
            self.multi_map = True
        else:
            raise InputError(f"coil maps must be (batch, coil, y, x) or (batch, maps, coil, y, x), "
                             f"got shape {tuple(maps.shape)}")
        self.maps = maps  # (batch, maps, coil, y, x)
        if mask is not None:
            mask = mask.to(device=maps.device, dtype=maps.real.dtype)
            try:
                broadcast_shape(mask.shape, maps.shape[:1] + maps.shape[2:])
            except RuntimeError:
                raise InputError(f"mask shape {tuple(mask.shape)} does not broadcast to k-space "
                                 f"{tuple(maps.shape[:1] + maps.shape[2:])}") from None
        self.mask = mask
        self._shifted = None  # cache for normal(): shifted maps, their conjugate, shifted mask
        self._buffers = None  # work buffer for normal() without autograd
        self.name = f"Mask * FFT * Sense[{maps.shape[1]} map(s), {maps.shape[2]} coils]"

    def _img5(self, x):
        return (x if self.multi_map else x.unsqueeze(1)).unsqueeze(2)  # (b, m, 1, y, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coil_images = torch.sum(self.maps * self._img5(x), dim=1)  # (b, c, y, x)
        k = fft2c(coil_images)
        return k if self.mask is None else k * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            y = y * self.mask
        coil_images = ifft2c(y).unsqueeze(1)  # (b, 1, c, y, x)
        x = torch.sum(self.maps.conj() * coil_images, dim=2)  # (b, m, y, x)
        return x if self.multi_map else x.squeeze(1)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x without the centring shifts.

        For even sizes the shifts cancel: F_c^H M F_c = F^H M0 F with M0 = ifftshift(M) and the
        uncentred FFT F (the image-domain shift by N/2 is a k-space modulation by (-1)^k, which
        commutes with M0 and squares to one). For odd sizes the shifts are folded into
        pre-shifted maps instead. Without autograd, a k-space-sized buffer is reused.
        """
        if self.mask is None:
            coil_images = torch.sum(self.maps * self._img5(x), dim=1, keepdim=True)
            out = torch.sum(self.maps.conj() * coil_images, dim=2)
            return out if self.multi_map else out.squeeze(1)
        if self._shifted is None:
            dims = (-2, -1)
            even = all(n % 2 == 0 for n in self.maps.shape[-2:])
            maps0 = self.maps if even else torch.fft.ifftshift(self.maps, dim=dims)
            self._shifted = (even, maps0, maps0.conj().resolve_conj(),
                             torch.fft.ifftshift(self.mask, dim=dims))
        even, maps0, maps0_conj, mask0 = self._shifted
        xs = self._img5(x) if even else torch.fft.ifftshift(self._img5(x), dim=(-2, -1))
        if torch.is_grad_enabled() and (x.requires_grad or self.maps.requires_grad):
            k = torch.fft.fft2(torch.sum(maps0 * xs, dim=1)) * mask0
            out = torch.sum(maps0_conj * torch.fft.ifft2(k).unsqueeze(1), dim=2)
        else:
            shape = broadcast_shape(maps0.shape[:1], xs.shape[:1]) + maps0.shape[2:]
            if self._buffers is None or self._buffers[0].shape != shape or \
                    self._buffers[0].dtype != x.dtype:
                self._buffers = (torch.empty(shape, dtype=x.dtype, device=x.device),)
            b1 = self._buffers[0]
            if maps0.shape[1] == 1:
                torch.mul(maps0[:, 0], xs[:, 0], out=b1)
            else:
                torch.sum(maps0 * xs, dim=1, out=b1)
            torch.mul(torch.fft.fft2(b1), mask0, out=b1)  # FFTs allocate: out= is slower
            b2 = torch.fft.ifft2(b1)
            out = torch.sum(maps0_conj * b2.unsqueeze(1), dim=2) if self.multi_map else \
                torch.mul(maps0_conj[:, 0], b2, out=b1).sum(dim=1, keepdim=True)
        if not even:
            out = torch.fft.fftshift(out, dim=(-2, -1))
        return out if self.multi_map else out.squeeze(1)

    def to(self, dtype=None, device=None) -> "Sense":
        maps = self.maps.to(dtype=dtype, device=device)
        s = Sense(maps if self.multi_map else maps.squeeze(1),
                  None if self.mask is None else self.mask.to(device=device))
        return s


def sense_combine(ksp: torch.Tensor, maps: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Zero-filled SENSE coil combination A^H y (no mask), divided by sum_c |s_c|^2 where that
    is nonzero when ``normalize``: the least-squares image for fully sampled data."""
    x = Sense(maps).adjoint(ksp)
    if normalize:
        m = maps if maps.ndim == 5 else maps.unsqueeze(1)
        norm = torch.sum(torch.abs(m) ** 2, dim=2)  # (b, maps, y, x)
        norm = norm if maps.ndim == 5 else norm.squeeze(1)
        x = torch.where(norm > 0, x / torch.where(norm > 0, norm, torch.ones_like(norm)),
                        torch.zeros_like(x))
    return x
