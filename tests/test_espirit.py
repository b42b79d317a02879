"""ESPIRiT (mriprior.physics.espirit) and the ``mriprior ecalib`` command.

Synthetic data with known smooth coil sensitivities check the maps against the truth; BART's
analytic phantom checks agreement with ``bart ecalib`` and file interop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, read_cfl, write_cfl
from mriprior.physics.espirit import (calibration_region, espirit, espirit_operator,
                                      fully_sampled_centre, signal_subspace)
from mriprior.physics.fft import fft2c, ifft2c


def synthetic(ny=64, nx=56, coils=8):
    """k-space ``(1, coil, y, x)`` of an ellipse object seen by smooth coils; sens; object."""
    y = torch.linspace(-1, 1, ny)[:, None]
    x = torch.linspace(-1, 1, nx)[None, :]
    obj = ((y / 0.75) ** 2 + (x / 0.6) ** 2 <= 1).float()
    obj = obj * (1 + 0.5 * ((y / 0.3) ** 2 + ((x - 0.2) / 0.2) ** 2 <= 1).float())
    obj = obj * torch.exp(1j * math.pi * 0.3 * x)
    sens = []
    for c in range(coils):
        a = 2 * math.pi * c / coils
        py, px = 1.4 * math.sin(a), 1.4 * math.cos(a)
        mag = torch.exp(-((y - py) ** 2 + (x - px) ** 2) / 1.5)
        sens.append(mag * torch.exp(1j * (a + 0.8 * (y * math.cos(a) - x * math.sin(a)))))
    sens = torch.stack(sens).to(torch.complex64)
    return fft2c(sens * obj)[None], sens, obj


@pytest.fixture(scope="module")
def synth():
    ksp, sens, obj = synthetic()
    maps, evals = espirit(ksp, maps=1, return_eigenvalues=True)
    return ksp, sens, obj, maps, evals


def inner_product_agreement(s1, s2):
    """Mean over pixels where both are nonzero of |<s1, s2>| / (|s1| |s2|); ``(coil, y, x)``."""
    n1, n2 = s1.abs().pow(2).sum(0).sqrt(), s2.abs().pow(2).sum(0).sqrt()
    both = (n1 > 0) & (n2 > 0)
    ip = (s1.conj() * s2).sum(0)[both]
    return (ip.abs() / (n1[both] * n2[both])).mean().item(), ip / (n1[both] * n2[both]), both


def test_maps_match_true_sensitivities(synth):
    _, sens, obj, maps, _ = synth
    assert maps.shape == (1, 1, 8, 64, 56) and maps.dtype == torch.complex64
    inside = obj.abs() > 0
    s = maps[0, 0]
    assert bool((s.abs().sum(0) > 0)[inside].all())  # nothing inside the object is cropped
    ip = (s.conj() * sens).sum(0).abs() / sens.abs().pow(2).sum(0).sqrt()
    assert ip[inside].min() > 0.999


def test_maps_reproduce_coil_images(synth):
    ksp, _, obj, maps, _ = synth
    imgs = ifft2c(ksp[0])
    s = maps[0, 0]
    proj = s * (s.conj() * imgs).sum(0)  # S S^H applied to the coil images
    inside = obj.abs() > 0
    err = (proj - imgs)[:, inside].norm() / imgs[:, inside].norm()
    assert err < 0.02


def test_maps_orthonormal_and_background_cropped(synth):
    _, _, obj, maps, evals = synth
    s = maps[0, 0]
    energy = s.abs().pow(2).sum(0)
    kept = energy > 0
    assert torch.allclose(energy[kept], torch.ones(()), atol=1e-5)
    assert not bool(kept[:6, :6].any()) and not bool(kept[-6:, -6:].any())  # corners cropped
    assert bool((evals[0, 0][kept] > 0.8).all()) and bool((evals[0, 0][~kept] <= 0.8).all())
    assert float(evals.min()) >= -1e-5 and float(evals.max()) <= 1 + 1e-5
    inside = obj.abs() > 0
    assert evals[0, 0][inside].min() > 0.99


def test_no_crop_keeps_every_pixel_and_maps_are_ordered():
    ksp, _, _, = synthetic(ny=40, nx=48, coils=6)
    maps, evals = espirit(ksp, calib=20, kernel=5, crop=0, maps=3, return_eigenvalues=True)
    assert maps.shape == (1, 3, 6, 40, 48) and evals.shape == (1, 3, 40, 48)
    assert bool((maps.abs().pow(2).sum(2) > 0.99).all())
    assert bool((evals[:, :-1] >= evals[:, 1:] - 1e-6).all())
    gram = torch.einsum("bmcyx,bncyx->bmnyx", maps.conj(), maps)  # orthonormal across maps
    eye = torch.eye(3, dtype=gram.dtype)[None, :, :, None, None]
    assert torch.allclose(gram, eye.expand_as(gram), atol=1e-4)


def test_batched_equals_one_by_one_and_odd_sizes():
    a, _, _ = synthetic(ny=51, nx=44)
    b = torch.roll(a, shifts=1, dims=1) * 1e6  # other coil order and scale
    both = espirit(torch.cat([a, b]), calib=(21, 18), kernel=5, maps=2)
    for i, k in enumerate((a, b)):
        one = espirit(k, calib=(21, 18), kernel=5, maps=2)
        assert torch.allclose(both[i], one[0], atol=1e-4)


def test_phase_is_normalised_to_first_principal_component(synth):
    ksp, _, _, maps, _ = synth
    raw = espirit(ksp, maps=1, phase_ref=False)
    assert torch.allclose(raw.abs(), maps.abs(), atol=1e-5)
    cal = calibration_region(ksp, 24)[0].reshape(8, -1)
    u = torch.linalg.eigh(cal @ cal.mH)[1][:, -1]
    proj = torch.einsum("c,cyx->yx", u.conj(), maps[0, 0])
    proj = proj[maps[0, 0].abs().sum(0) > 0]
    phase = proj / proj.abs()
    assert torch.allclose(phase, phase[0].expand_as(phase), atol=1e-3)  # one global phase


def test_calibration_errors():
    ksp, _, _ = synthetic(ny=40, nx=32)
    with pytest.raises(InputError, match=r"calibration region 34x34 .* larger than the k-space"):
        espirit(ksp, calib=34)
    mask = torch.zeros(40, 32)
    mask[1::4] = 1
    mask[20 - 8: 20 + 8, 16 - 6: 16 + 7] = 1  # fully sampled centred region of 16 x 13
    assert fully_sampled_centre(ksp * mask) == (16, 13)
    with pytest.raises(InputError, match=r"not fully sampled: the largest fully sampled centred "
                                         r"region is 16x13 \(y x x\); use calib=\(16, 13\) "
                                         r"\(-r 13:16\)"):
        espirit(ksp * mask, calib=24, shrink=False)
    explicit = espirit(ksp * mask, calib=(16, 13))
    with pytest.warns(UserWarning, match="using the fully sampled centre 16x13"):
        shrunk = espirit(ksp * mask, calib=24)  # default: shrink, like bart ecalib
    assert torch.equal(explicit, shrunk)
    with pytest.raises(InputError, match="maps=9"):
        espirit(ksp, maps=9)
    with pytest.raises(InputError, match="kernel=30"):
        espirit(ksp, calib=24, kernel=30)
    with pytest.raises(InputError, match="no signal"):
        signal_subspace(torch.zeros(1, 8, 24, 24, dtype=torch.complex64))
    with pytest.raises(InputError, match=r"\(batch, coil, y, x\)"):
        espirit(ksp[0])


def bart_phantom(bart, n=64):
    bart("phantom", "-x", n, "-s", 8, "-k", "ksp")
    arr = read_cfl(bart.path("ksp"))
    layout = BartLayout.from_dims(arr.shape)
    return layout, torch.from_numpy(layout.to_torch(arr, max_dim=3))[None]


def test_agrees_with_bart_ecalib(bart):
    layout, ksp = bart_phantom(bart)
    bart("ecalib", "-m1", "ksp", "sens")
    ref = torch.from_numpy(layout.to_torch(read_cfl(bart.path("sens")), max_dim=3))
    ours = espirit(ksp, maps=1)[0, 0]
    agreement, ip, both = inner_product_agreement(ours, ref)
    assert agreement >= 0.98
    nonzero_ours, nonzero_ref = ours.abs().sum(0) > 0, ref.abs().sum(0) > 0
    assert (nonzero_ours != nonzero_ref).float().mean() < 0.01  # same cropping
    assert abs(ip.mean()) >= 0.98  # same phase normalisation (up to a global sign)


def test_cli_roundtrip_with_bart(bart, capsys):
    layout, ksp = bart_phantom(bart)
    assert main(["ecalib", "-m", "2", bart.path("ksp"), bart.path("sens"), bart.path("ev")]) == 0
    dims = bart("show", "-m", "sens").split("AoD:")[1].split()
    assert [int(d) for d in dims[:5]] == [64, 64, 1, 8, 2]
    ev_dims = bart("show", "-m", "ev").split("AoD:")[1].split()
    assert [int(d) for d in ev_dims[:5]] == [64, 64, 1, 1, 2]
    sens = layout.to_torch(read_cfl(bart.path("sens")))
    assert np.allclose(sens, espirit(ksp)[0].numpy(), atol=1e-6)
    # BART reads our file: the map energy per pixel is 1 or 0 for map 0
    bart("rss", 8, "sens", "rss")
    rss = read_cfl(bart.path("rss"))[..., 0]
    assert np.all((np.abs(np.abs(rss) - 1) < 1e-4) | (np.abs(rss) == 0))


def test_cli_accepts_bart_style_sizes(tmp_path):
    ksp, _, _ = synthetic(ny=48, nx=40)
    # BART layout with the slice in dims 1 and 2 (dim 0 singleton), like a 2D slice of 3D data
    layout = BartLayout(1, 2, (1, 40, 48))
    write_cfl(tmp_path / "ksp", layout.to_bart(ksp[0].numpy()))
    assert main(["ecalib", "-r", "18:20", "-k", "5", "-m1", "-c", "0.5",
                 str(tmp_path / "ksp"), str(tmp_path / "sens")]) == 0
    out = read_cfl(tmp_path / "sens")
    assert out.shape == (1, 40, 48, 8)
    expected = espirit(ksp, calib=(20, 18), kernel=5, maps=1, crop=0.5)[0]
    assert np.allclose(layout.to_torch(out), expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["-r", "100"], "ksp: calibration region 100x100 (calib/-r) is larger than the k-space"),
    (["-r", "8", "-k", "3:4"], "-k 3:4: only equal in-plane kernel sizes"),
    (["-m", "12"], "ksp: maps=12 (-m)"),
])
def test_cli_user_errors_exit_2(tmp_path, capsys, argv, message):
    ksp, _, _ = synthetic(ny=48, nx=40)
    write_cfl(tmp_path / "ksp", BartLayout(0, 1, (40, 48, 1)).to_bart(ksp[0].numpy()))
    assert main(["ecalib", *argv, str(tmp_path / "ksp"), str(tmp_path / "sens")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "sens.cfl").exists()


def test_cli_missing_file_exits_2(tmp_path, capsys):
    assert main(["ecalib", str(tmp_path / "nope"), str(tmp_path / "sens")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.hdr" in err


@pytest.mark.parametrize("ny, nx, kernel", [(20, 17, 4), (9, 10, 6)])  # 9 < 2 * 6 - 1: aliasing
def test_operator_matches_direct_evaluation(ny, nx, kernel):
    g = torch.Generator().manual_seed(1)
    coils, n = 3, 3 * kernel * kernel
    vecs = torch.linalg.qr(torch.randn(1, n, n, dtype=torch.complex128, generator=g))[0]
    keep = torch.rand(1, n, generator=g) > 0.5
    ours = espirit_operator(vecs, keep, coils, kernel, (ny, nx))[0]  # (y, x, c, c)
    kern = vecs[0][:, keep[0]].T.reshape(-1, coils, kernel, kernel)  # (j, c, ky, kx)
    y = torch.arange(ny, dtype=torch.float64) - ny // 2
    x = torch.arange(nx, dtype=torch.float64) - nx // 2
    k = torch.arange(kernel, dtype=torch.float64)
    ey = torch.exp(2j * math.pi * y[:, None] * k[None] / ny)  # (y, ky)
    ex = torch.exp(2j * math.pi * x[:, None] * k[None] / nx)  # (x, kx)
    w = torch.einsum("jcab,ya,xb->yxjc", kern, ey, ex)
    direct = torch.einsum("yxjc,yxjd->yxcd", w, w.conj()) / kernel ** 2
    assert torch.allclose(ours.to(torch.complex128), direct, atol=1e-5)
