"""Shepp-Logan phantom (raster and analytic k-space), birdcage maps, ``mriprior phantom`` CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl
from mriprior.physics.fft import fft2c, ifft2c
from mriprior.physics.phantom import (SHEPP_LOGAN_MODIFIED, bart_kspace_scale, birdcage_maps,
                                      jinc, phantom_ft, shepp_logan, shepp_logan_kspace)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return ((a - b).norm() / b.norm()).item()


def interior(img: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels >= ``width`` px (Chebyshev distance) from any jump of a piecewise-constant image."""
    x = img.real[None, None].float()
    hi = F.max_pool2d(x, 2 * width + 1, 1, width)[0, 0]
    lo = -F.max_pool2d(-x, 2 * width + 1, 1, width)[0, 0]
    return hi == lo


# --- image -------------------------------------------------------------------------------


def test_image_shape_values_and_orientation():
    img = shepp_logan(128)
    assert img.shape == (128, 128) and img.dtype == torch.complex64
    assert img.imag.abs().max() == 0
    values = set(np.round(img.real.double().numpy().ravel(), 6).tolist())
    assert {0.0, 0.2, 1.0, 0.3} <= values <= {0.0, 0.1, 0.2, 0.3, 0.4, 1.0}
    # Long axis (0.92) along x, short (0.69) along y: BART's placement (X = y, Y = -x).
    support = img.real != 0
    extent_y = support.any(1).sum().item() / 64
    extent_x = support.any(0).sum().item() / 64
    assert extent_x == pytest.approx(2 * 0.92, abs=2 / 64)
    assert extent_y == pytest.approx(2 * 0.69, abs=2 / 64)
    # The small ellipses at table Y = -0.605 lie at x = +0.605 (column 64 + 39).
    assert img[64, 64 + 39].real.item() == pytest.approx(0.3)
    assert img[64, 64 - 39].real.item() == pytest.approx(0.2)


def test_rectangular_shapes_stretch_to_the_field_of_view():
    """Each axis spans [-1, 1): (96, 64) is the 192 x 192 phantom sampled every 2nd row and
    3rd column."""
    assert torch.equal(shepp_logan((96, 64)), shepp_logan(192)[::2, ::3])
    with pytest.raises(InputError, match="shape"):
        shepp_logan((0, 4))


# --- analytic k-space --------------------------------------------------------------------


def test_jinc_matches_scipy():
    z = torch.linspace(0, 300, 30001, dtype=torch.float64)
    ref = np.ones_like(z.numpy())
    ref[1:] = 2 * scipy.special.j1(z.numpy()[1:]) / z.numpy()[1:]
    # torch.special.bessel_j1 is accurate to ~5e-7 near z = 5 (its polynomial switch).
    assert np.abs(jinc(z).numpy() - ref).max() < 2e-6


def test_phantom_ft_at_dc_is_the_integral():
    area = sum(e.intensity * math.pi * e.a * e.b for e in SHEPP_LOGAN_MODIFIED)
    F0 = phantom_ft(torch.zeros(()), torch.zeros(()))
    assert F0.item() == pytest.approx(area, rel=1e-12)


def test_analytic_kspace_matches_fft_of_high_resolution_raster():
    """Centre N x N of the FFT of an M x M raster, scaled by N/M, converges to the analytic
    k-space. Measured relative L2 errors for N = 64: M = 256: 3.8e-2, 512: 9.8e-3,
    1024: 4.7e-3, 2048: 1.2e-3, 4096: 4.4e-4 (point-sampling error of the edges, which falls
    like M^-1.5, plus aliasing). We check M = 1024 against 1e-2 (2x margin) and the decay."""
    n = 64
    ref = shepp_logan_kspace(n, dtype=torch.complex128)

    def err(m: int) -> float:
        k = fft2c(shepp_logan(m, dtype=torch.complex128))
        c = m // 2 - n // 2
        return rel(k[c:c + n, c:c + n] * (n / m), ref)

    e256, e1024 = err(256), err(1024)
    assert e1024 < 1e-2
    assert e1024 < e256 / 4


def test_inverse_fft_of_analytic_kspace_approximates_raster():
    """No inverse crime: ifft2c(analytic k-space) differs from the raster only by Gibbs ringing
    and aliasing at the jumps. Measured for N = 256: relative L2 error 0.155 overall (falls like
    N^-1/2: 0.335 at 64, 0.218 at 128); at pixels >= 8 px from any jump the error is at most
    0.019 (the 1/distance Gibbs tail, ~1/(pi^2 d) of the unit skull jump); DC differs 3e-3."""
    n = 256
    img = shepp_logan(n)
    ksp = shepp_logan_kspace(n)
    rec = ifft2c(ksp)
    assert 0 < rel(rec, img) < 0.2
    far = interior(img, 8)
    assert far.float().mean() > 0.5
    assert (rec - img)[far].abs().max() < 0.03
    dc_raster = img.sum().real / n  # orthonormal DFT at k = 0
    assert ksp[n // 2, n // 2].real.item() == pytest.approx(dc_raster.item(), rel=1e-2)
    assert rel(shepp_logan_kspace(64), shepp_logan_kspace(128)[32:96, 32:96] / 2) < 1e-6


# --- agreement with BART -----------------------------------------------------------------


@pytest.mark.parametrize("n", [128, 65])
def test_image_agrees_with_bart_phantom(bart, n):
    """Same ellipse table, coordinates and float64 arithmetic: bit-equal with BART 0.8 on x86-64
    (measured for N = 64, 65, 127, 128, 256). A build that fuses multiply-adds may flip a pixel
    that lies exactly on an ellipse boundary, so a few such pixels are tolerated."""
    bart("phantom", "-x", n, "img")
    ref = read_cfl(bart.path("img")).T  # BART (x, y) -> our (y, x)
    ours = shepp_logan(n).numpy()
    assert ref.shape == ours.shape
    assert (ours != ref).mean() < 1e-3
    assert np.mean((ref != 0) != (ours != 0)) < 1e-3
    assert np.corrcoef(np.abs(ours).ravel(), np.abs(ref).ravel())[0, 1] > 0.999


@pytest.mark.parametrize("n", [128, 65])
def test_kspace_agrees_with_bart_phantom_up_to_its_scale(bart, n):
    """Same analytic formula and phase; BART scales it by 8 / (pi sqrt(2 pi) N). Measured
    relative L2 difference after that factor: 3.1e-7 (float32 output, J1 accuracy)."""
    bart("phantom", "-k", "-x", n, "ksp")
    ref = read_cfl(bart.path("ksp")).T
    ours = shepp_logan_kspace(n).numpy() / bart_kspace_scale(n)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-5
    # BART's own k-space, rescaled, is consistent with its own image the same way as ours.
    bimg = shepp_logan(n)
    assert rel(ifft2c(torch.from_numpy(ref * bart_kspace_scale(n))), bimg) == pytest.approx(
        rel(ifft2c(shepp_logan_kspace(n)), bimg), rel=1e-3)


# --- birdcage maps -----------------------------------------------------------------------


def test_birdcage_shape_normalisation_and_formula():
    maps = birdcage_maps(8, (64, 48))
    assert maps.shape == (8, 64, 48) and maps.dtype == torch.complex64
    rss = maps.abs().pow(2).sum(0).sqrt()
    assert rss[32, 24].item() == pytest.approx(1.0, abs=1e-6)
    # Single-ring model (ISMRMRD / SigPy): coil 2 of 8 sits at azimuth pi/2, radius 1.5.
    raw = birdcage_maps(8, (64, 48), normalize="none").to(torch.complex128)
    y, x = (10 - 32) / 32, (5 - 24) / 24
    xc, yc, alpha = 1.5 * math.cos(math.pi / 2), 1.5 * math.sin(math.pi / 2), math.pi / 2
    expect = np.exp(1j * (math.atan2(x - xc, -(y - yc)) - alpha)) / math.hypot(x - xc, y - yc)
    assert raw[2, 10, 5].item() == pytest.approx(expect, rel=1e-6)


def test_birdcage_maps_are_smooth():
    """Second differences inside the object disc fall like h^2 (measured 0.0250, 0.0062,
    0.00155, 0.00040 of max |s| for N = 32..256): no jumps, phase wraps included."""
    def d2(n):
        m = birdcage_maps(8, n, n_rings=2).to(torch.complex128)
        u = (torch.arange(n) - n // 2) / (n / 2)
        disc = (u[:, None] ** 2 + u[None, :] ** 2) < 0.95 ** 2
        dy = (m[:, 2:] - 2 * m[:, 1:-1] + m[:, :-2]).abs()[:, disc[1:-1]].max()
        dx = (m[..., 2:] - 2 * m[..., 1:-1] + m[..., :-2]).abs()[:, disc[:, 1:-1]].max()
        return max(dx, dy).item() / m[:, disc].abs().max().item()

    a, b = d2(64), d2(128)
    assert b < 0.01 and 3.5 < a / b < 4.5


def test_birdcage_rss_normalisation_support_and_rings():
    support = shepp_logan(64).real != 0
    maps = birdcage_maps(12, 64, n_rings=3, normalize="rss", support=support)
    power = maps.abs().pow(2).sum(0)
    assert torch.allclose(power[support], torch.ones(()), atol=1e-5)
    assert power[~support].max() == 0
    # Staggered rings keep all coils independent in the centre slice.
    s = torch.linalg.svdvals(birdcage_maps(12, 64, n_rings=3).reshape(12, -1))
    assert (s[0] / s[-1]).item() < 1e3
    with pytest.raises(InputError, match="radius"):
        birdcage_maps(8, 32, radius=0.9)
    with pytest.raises(InputError, match="n_rings"):
        birdcage_maps(2, 32, n_rings=3)
    with pytest.raises(InputError, match=r"\(32, 32\)"):
        birdcage_maps(2, 32, support=torch.ones(16, 16))


# --- CLI -----------------------------------------------------------------------------------


def test_cli_writes_cfl_that_bart_reads(bart):
    assert main(["phantom", "-x", "48", "-s", "4", "-k", bart.path("cksp")]) == 0
    dims = bart("show", "-m", "cksp")
    assert "48\t48\t1\t4\t1" in dims
    ksp = read_cfl(bart.path("cksp"))
    assert ksp.shape == (48, 48, 1, 4)
    assert main(["phantom", "-x", "48", bart.path("img")]) == 0
    bart("phantom", "-x", "48", "bimg")
    assert np.abs(read_cfl(bart.path("img")) - read_cfl(bart.path("bimg"))).max() < 1e-6
    assert main(["phantom", "-x", "48", "-S", "3", bart.path("sens")]) == 0
    assert "48\t48\t1\t3\t1" in bart("show", "-m", "sens")
    # -s -k is the k-space of the analytic image times the -S maps: combine the coils back.
    assert main(["phantom", "-x", "48", "-S", "4", bart.path("sens4")]) == 0
    maps = torch.from_numpy(read_cfl(bart.path("sens4")).T.copy())[:, 0]  # (coil, y, x)
    coils = ifft2c(torch.from_numpy(ksp.T.copy())[:, 0])
    combined = (maps.conj() * coils).sum(0) / maps.abs().pow(2).sum(0)
    assert rel(combined, ifft2c(shepp_logan_kspace(48))) < 1e-5


def run_cli(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors exit directly
        return e.code


@pytest.mark.parametrize("argv", [["-x", "0"], ["-s", "2", "-S", "2"], ["-S", "2", "-k"],
                                  ["-s", "0"], ["-x", "abc"]])
def test_cli_user_errors_exit_2(tmp_path, capsys, argv):
    assert run_cli(["phantom", *argv, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
    assert not (tmp_path / "out.cfl").exists()


def test_cli_user_error_exit_code_from_the_shell(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mriprior.cli.main", "phantom", "-x", "-3",
                        str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "-x -3" in r.stderr
