"""Multi-coil simulation, correlated noise, covariance estimation and whitening.

Statistical tolerances: for circular complex Gaussian noise with covariance C, the sample
covariance over n independent samples has E|C^_ij - C_ij|^2 = C_ii C_jj / n. We allow
Z = 5 such standard deviations per entry (false-failure probability < 1e-6 per entry; the
tests are seeded, so they are deterministic anyway).
"""

from __future__ import annotations

import math

import pytest
import torch

from mriprior.errors import InputError
from mriprior.physics.fft import fft2c
from mriprior.physics.phantom import birdcage_maps, shepp_logan
from mriprior.physics.simulate import (complex_noise, estimate_noise_covariance, noise_factor,
                                       simulate_multicoil, snr_to_sigma, whiten,
                                       whitening_matrix)

Z = 5.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def correlated_cov(n_coils: int = 4, seed: int = 0) -> torch.Tensor:
    """A realistic-looking Hermitian PD covariance: unequal coil noise, correlations ~0.2-0.6."""
    g = gen(seed)
    a = torch.randn(n_coils, n_coils, dtype=torch.complex128, generator=g)
    c = a @ a.mH + 0.5 * torch.eye(n_coils, dtype=torch.complex128)
    d = torch.linspace(1.0, 2.5, n_coils, dtype=torch.float64).sqrt()
    return (d[:, None] * c * d[None, :]) / c.diagonal().real.mean()


def assert_cov_close(est: torch.Tensor, cov: torch.Tensor, n: int):
    """Every entry within Z standard errors sqrt(C_ii C_jj / n)."""
    est, cov = est.to(torch.complex128), cov.to(torch.complex128)
    d = cov.diagonal().real
    se = torch.sqrt(d[:, None] * d[None, :] / n)
    assert ((est - cov).abs() <= Z * se).all(), ((est - cov).abs() / se).max()


def phantom_batch(n: int = 32, coils: int = 4, batch: int = 2):
    img = torch.stack([shepp_logan(n), 0.5j * shepp_logan(n)])[:batch]
    maps = birdcage_maps(coils, n)[None]
    return img, maps


# --- noiseless forward model ------------------------------------------------------------


def test_zero_noise_is_exact_forward_model():
    img, maps = phantom_batch()
    mask = (torch.rand(32, 32, generator=gen(1)) < 0.4).float()
    ksp = simulate_multicoil(img, maps, None, mask=mask)
    assert ksp.shape == (2, 4, 32, 32) and ksp.dtype == torch.complex64
    assert torch.equal(ksp, fft2c(maps * img[:, None]) * mask)
    assert torch.equal(simulate_multicoil(img, maps, 0.0, mask=mask), ksp)
    assert torch.equal(simulate_multicoil(img, maps[0]), fft2c(maps * img[:, None]))


def test_multiple_espirit_maps_sum_over_maps():
    img, maps = phantom_batch()
    img2 = torch.stack([img, 0.3 * img.flip(-1)], dim=1)  # (batch, maps, y, x)
    maps2 = torch.stack([maps, birdcage_maps(4, 32, radius=2.0)[None]], dim=1)
    ksp = simulate_multicoil(img2, maps2)
    expect = fft2c(maps2[:, 0] * img2[:, 0, None] + maps2[:, 1] * img2[:, 1, None])
    assert torch.allclose(ksp, expect, atol=1e-6)


def test_shape_errors_name_the_shapes():
    img, maps = phantom_batch()
    with pytest.raises(InputError, match=r"\(1, 4, 16, 16\)"):
        simulate_multicoil(img, birdcage_maps(4, 16)[None])
    with pytest.raises(InputError, match=r"\(3, 4, 32, 32\)"):
        simulate_multicoil(img, maps.expand(3, -1, -1, -1))
    with pytest.raises(InputError, match=r"mask \(5, 32\)"):
        simulate_multicoil(img, maps, mask=torch.ones(5, 32))


# --- noise --------------------------------------------------------------------------------


def test_noise_covariance_matches_request_within_sampling_error():
    cov = correlated_cov(4)
    img, maps = phantom_batch(n=128)
    clean = simulate_multicoil(img, maps)
    noisy = simulate_multicoil(img, maps, cov, generator=gen(2))
    noise = (noisy - clean).to(torch.complex128)
    samples = noise.movedim(1, -1).reshape(-1, 4)  # (batch * y * x, coil)
    n = samples.shape[0]
    assert n == 2 * 128 * 128
    assert_cov_close(estimate_noise_covariance(samples), cov, n)
    # Circular: pseudo-covariance E[n n^T] = 0 (real and imaginary parts each carry half).
    pseudo = samples.mT @ samples / n
    d = cov.diagonal().real
    assert (pseudo.abs() <= Z * torch.sqrt(d[:, None] * d[None, :] / n)).all()
    # White across k-space: neighbouring samples are uncorrelated.
    lag = (noise[..., 1:] * noise[..., :-1].conj()).mean(dim=(0, 2, 3)) / d
    assert (lag.abs() <= Z / math.sqrt(noise[..., 1:].numel() / 4)).all()


def test_float_sigma_and_per_batch_sigma():
    shape = (3, 2, 64, 64)
    n = complex_noise(shape, 0.5, gen(3)).to(torch.complex128)
    m = n.numel()
    power = n.abs().pow(2).mean().item()
    # E|n|^2 = sigma^2; |n|^2 ~ sigma^2 Exp(1) has standard deviation sigma^2.
    assert abs(power - 0.25) <= Z * 0.25 / math.sqrt(m)
    assert abs(n.real.pow(2).mean().item() - 0.125) <= Z * 0.125 * math.sqrt(2 / m)
    # A (batch,) sigma scales the same standard draws item by item.
    sig = torch.tensor([0.0, 1.0, 2.0])
    z = complex_noise(shape, None, gen(3))
    assert torch.equal(complex_noise(shape, 1.0, gen(3)), z)
    assert torch.allclose(complex_noise(shape, sig, gen(3)), sig.view(-1, 1, 1, 1) * z)
    with pytest.raises(InputError, match=r"sigma has shape \(2,\)"):
        complex_noise(shape, torch.ones(2), gen(3))


def test_mask_zeroes_noise_and_generator_reproduces():
    img, maps = phantom_batch()
    mask = torch.zeros(32, 32)
    mask[:, ::3] = 1
    a = simulate_multicoil(img, maps, 0.1, mask=mask, generator=gen(4))
    b = simulate_multicoil(img, maps, 0.1, mask=mask, generator=gen(4))
    c = simulate_multicoil(img, maps, 0.1, mask=mask, generator=gen(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a[..., mask == 0].abs().max() == 0


def test_singular_psd_covariance_is_allowed():
    v = torch.tensor([1.0, 1j, -0.5], dtype=torch.complex128)
    cov = v[:, None] * v.conj()[None, :]  # rank 1
    L = noise_factor(cov)
    assert torch.allclose(L @ L.mH, cov, atol=1e-12)
    n = complex_noise((1, 3, 32, 32), cov, gen(6), dtype=torch.complex128)
    # All noise lies along v: the component orthogonal to v vanishes.
    u = torch.tensor([1j, 1.0, 0.0], dtype=torch.complex128)  # u^H v = 0
    assert torch.einsum("c,bcyx->byx", u.conj(), n).abs().max() < 1e-12


@pytest.mark.parametrize("cov, match", [
    (torch.tensor([[1.0, 0.5j], [0.5j, 1.0]]), r"not Hermitian"),
    (torch.tensor([[1.0, 2.0], [2.0, 1.0]]), r"not positive semi-definite"),
    (torch.eye(3), r"shape \(3, 3\) but the data have 2 coils: expected \(2, 2\)"),
    (torch.ones(2, 3), r"shape \(2, 3\); expected square"),
    (torch.eye(2)[None].expand(3, 2, 2), r"\(3, 2, 2\)"),
])
def test_bad_covariance_raises_input_error(cov, match):
    img = shepp_logan(16)[None]
    maps = birdcage_maps(2, 16)[None]
    with pytest.raises(InputError, match=match):
        simulate_multicoil(img, maps, cov, generator=gen(0))


def test_bad_sigma_raises():
    img, maps = shepp_logan(16)[None], birdcage_maps(2, 16)[None]
    with pytest.raises(InputError, match="sigma"):
        simulate_multicoil(img, maps, -1.0)
    with pytest.raises(InputError, match="sigma"):
        simulate_multicoil(img, maps, float("nan"))


# --- estimation and whitening ---------------------------------------------------------------


def test_estimate_noise_covariance_on_known_samples():
    cov = correlated_cov(6, seed=7)
    L = torch.linalg.cholesky(cov)
    z = torch.randn(40000, 6, dtype=torch.complex128, generator=gen(8))
    x = z @ L.mT  # rows x_s = L z_s
    est = estimate_noise_covariance(x.numpy())  # NumPy (n, coil)
    assert est.dtype == torch.complex128 and est.shape == (6, 6)
    assert torch.allclose(est, est.mH)
    assert_cov_close(est, cov, 40000)
    # Any (..., coil) layout gives the same estimate.
    est2 = estimate_noise_covariance(x.reshape(100, 20, 20, 6))
    assert torch.allclose(est, est2, atol=1e-12)
    # A mean offset is removed on request.
    est3 = estimate_noise_covariance(x + 3.0, remove_mean=True)
    assert_cov_close(est3, cov, 40000)
    with pytest.raises(InputError, match=r"\(1, 6\)"):
        estimate_noise_covariance(torch.zeros(1, 6))


@pytest.mark.parametrize("method", ["cholesky", "symmetric"])
def test_whitening_gives_identity(method):
    cov = correlated_cov(4)
    W = whitening_matrix(cov, method=method)
    eye = torch.eye(4, dtype=torch.complex128)
    assert torch.allclose(W @ cov @ W.mH, eye, atol=1e-10)
    if method == "symmetric":
        assert torch.allclose(W, W.mH, atol=1e-12)
    else:
        assert torch.equal(W, W.tril())
    # Whitened simulated noise has identity covariance within sampling error.
    n = complex_noise((2, 4, 128, 128), cov, gen(9), dtype=torch.complex128)
    w = whiten(n, W)
    samples = w.movedim(1, -1)
    assert_cov_close(estimate_noise_covariance(samples), eye, samples[..., 0].numel())


def test_whiten_k_space_and_maps_consistently():
    cov = correlated_cov(4).to(torch.complex64)
    W = whitening_matrix(cov)
    assert W.dtype == torch.complex64
    img, maps = phantom_batch()
    ksp = simulate_multicoil(img, maps)
    assert torch.allclose(whiten(ksp, W), simulate_multicoil(img, whiten(maps, W)), atol=1e-4)
    with pytest.raises(InputError, match=r"\(3, 3\)"):
        whiten(ksp, torch.eye(3))
    with pytest.raises(InputError, match="singular"):
        whitening_matrix(torch.zeros(2, 2))


def test_snr_to_sigma_definition():
    img, maps = phantom_batch(n=64)
    clean = simulate_multicoil(img, maps)
    sigma = snr_to_sigma(clean, 20.0)
    assert sigma.shape == (2,)
    assert torch.allclose(snr_to_sigma(clean, 20 * math.log10(20.0), db=True), sigma)
    noisy = simulate_multicoil(img, maps, sigma, generator=gen(10))
    noise = noisy - clean
    for b in range(2):
        rms = clean[b].abs().pow(2).mean().sqrt()
        measured = rms / noise[b].abs().pow(2).mean().sqrt()
        # Relative standard error of the noise power over m samples is 1/sqrt(m).
        assert measured.item() == pytest.approx(20.0, rel=Z / math.sqrt(noise[b].numel()))
    with pytest.raises(InputError, match="snr"):
        snr_to_sigma(clean, 0.0)
