"""Centred orthonormal FFTs over the last axes (BART ``fft -u`` convention).

The centre of an axis of length N is index N // 2 (as in ``numpy.fft.fftshift`` and BART).
"""

from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c", "fftnc", "ifftnc", "fourier_resize"]


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


def fourier_resize(img: torch.Tensor, shape) -> torch.Tensor:
    """Complex ``(y, x)`` -> ``shape`` keeping the field of view's aspect: the centred k-space is
    cropped (lower resolution, no aliasing) to fit ``shape``, then the image is zero-padded.
    Intensities are kept (the orthonormal FFT's size factor is undone)."""
    ny, nx = img.shape
    ty, tx = shape
    f = min(ty / ny, tx / nx, 1.0)
    my, mx = max(2, int(round(ny * f))), max(2, int(round(nx * f)))
    k = fft2c(img)
    y0, x0 = ny // 2 - my // 2, nx // 2 - mx // 2
    small = ifft2c(k[y0:y0 + my, x0:x0 + mx]) * ((my * mx) / (ny * nx)) ** 0.5  # same intensity
    out = torch.zeros(shape, dtype=small.dtype)
    py, px = ty // 2 - my // 2, tx // 2 - mx // 2
    out[py:py + my, px:px + mx] = small
    return out
