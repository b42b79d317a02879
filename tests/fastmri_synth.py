"""A fastMRI-like multi-coil volume made by the tests themselves (import and volume tests):
64 readout rows (2x oversampled) x 32 phase encodes, a known complex object in the central 32
rows, smooth coil sensitivities with sum_c |s_c|^2 = 1."""

from __future__ import annotations

import numpy as np

RECON_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
<encodedSpace><matrixSize><x>64</x><y>32</y><z>1</z></matrixSize></encodedSpace>
<reconSpace><matrixSize><x>32</x><y>32</y><z>1</z></matrixSize></reconSpace>
<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"""


def fft2c(a):
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(a, axes=ax), axes=ax, norm="ortho"),
                           axes=ax)


def oversampled_volume(n_slices: int = 2, coils: int = 6):
    """``(images, kspace)``: the complex images (64 x 32 each) and their fully sampled
    multi-coil k-space ``(slices, coils, 64, 32)`` complex64."""
    y = np.linspace(-2, 2, 64)[:, None]
    x = np.linspace(-1, 1, 32)[None, :]
    obj = (((y / 0.8) ** 2 + (x / 0.7) ** 2) <= 1) * (1 + 0.5 * (((y - 0.2) / 0.3) ** 2
                                                             + (x / 0.25) ** 2 <= 1))
    images = [obj * (1 + 0.3 * s) * np.exp(1j * np.pi * 0.3 * (x + s * y))
              for s in range(n_slices)]
    sens = []
    for c in range(coils):
        a = 2 * np.pi * c / coils
        sens.append(np.exp(-((y / 2 - np.sin(a)) ** 2 + (x - np.cos(a)) ** 2) / 1.5)
                    * np.exp(1j * (a + 0.5 * (y * np.cos(a) - x * np.sin(a)))))
    sens = np.array(sens)
    sens /= np.sqrt((np.abs(sens) ** 2).sum(0))
    return images, np.stack([fft2c(sens * im) for im in images]).astype(np.complex64)
