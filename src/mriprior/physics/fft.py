"""Centred orthonormal FFTs over the last axes (BART ``fft -u`` convention).

The centre of an axis of length N is index N // 2 (as in ``numpy.fft.fftshift`` and BART).
"""

from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c", "fftnc", "ifftnc"]


def fftnc(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Centred orthonormal forward FFT over ``dims``."""
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.fftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


def ifftnc(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Centred orthonormal inverse FFT over ``dims``."""
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.ifftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two axes ``(y, x)``: ``bart fft -u 3``."""
    return fftnc(x, (-2, -1))


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D inverse FFT over ``(y, x)``: ``bart fft -u -i 3``."""
    return ifftnc(x, (-2, -1))
