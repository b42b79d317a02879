"""Centred orthonormal FFT against `bart fft -u`, library and CLI."""

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.io.cfl import read_cfl, write_cfl
from mriprior.physics.fft import fft2c, fftnc, ifft2c


@pytest.mark.parametrize("shape", [(8, 8), (230, 180), (7, 5), (10, 9)])
def test_fft2c_matches_bart(bart, shape):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    write_cfl(bart.path("a"), a)  # BART order (dim0, dim1) = our (x, y)
    bart("fft", "-u", 3, "a", "A")
    bart("fft", "-u", "-i", 3, "a", "Ai")
    t = torch.from_numpy(np.ascontiguousarray(a.T))
    for ours, ref in ((fft2c(t), read_cfl(bart.path("A"))), (ifft2c(t), read_cfl(bart.path("Ai")))):
        ref = ref.reshape(shape, order="F")
        assert np.abs(ours.numpy().T - ref).max() <= 1e-6 * np.abs(ref).max()


def test_cli_fft_matches_bart_on_other_dims(bart):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((6, 5, 4, 3)) + 1j * rng.standard_normal((6, 5, 4, 3))).astype(
        np.complex64)
    write_cfl(bart.path("a"), a)
    for flags in (["6"], ["-i", "5"], ["-u", "7"]):
        bart("fft", "-u", *flags, "a", "ref")
        assert main(["fft", *flags, bart.path("a"), bart.path("ours")]) == 0
        ref, ours = read_cfl(bart.path("ref")), read_cfl(bart.path("ours"))
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


def test_unitary_and_inverse():
    x = torch.randn(2, 3, 12, 9, dtype=torch.complex128)
    assert torch.allclose(ifft2c(fft2c(x)), x)
    assert torch.allclose(torch.linalg.vector_norm(fft2c(x)), torch.linalg.vector_norm(x))
    assert torch.allclose(fftnc(x, (-1,)), torch.fft.fftshift(
        torch.fft.fft(torch.fft.ifftshift(x, dim=-1), dim=-1, norm="ortho"), dim=-1))
    assert main(["fft", "70000", "x", "y"]) == 2
