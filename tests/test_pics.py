"""Classical reconstruction: pics vs BART 0.8 side by side, scaling semantics, batching, CLI."""

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.io.cfl import BartLayout, read_cfl, write_cfl
from mriprior.recon.classical import (bart_scaling, cg_sense, estimate_pattern, pics,
                                      sense_combine, zero_filled_rss)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture
def bart_case(bart):
    """Undersampled 8-coil BART phantom (N/2 odd: exercises BART's pics sign convention)."""
    def make(n=90):
        bart("phantom", "-x", n, "-s", 8, "-k", "full")
        bart("ecalib", "-m1", "full", "sens")
        bart("poisson", "-Y", n, "-Z", n, "-y", 2, "-z", 2, "-C", 16, "-v", "-e", "-s", 3, "pat")
        bart("transpose", 0, 1, "pat", "p1")
        bart("transpose", 1, 2, "p1", "mask")
        bart("fmac", "full", "mask", "ksp")
        return bart
    return make


def run_both(b, bart_flags, ours_flags):
    b("pics", *bart_flags, "ksp", "sens", "bart_out")
    assert main(["pics", *ours_flags, b.path("ksp"), b.path("sens"), b.path("ours")]) == 0
    return read_cfl(b.path("ours")), read_cfl(b.path("bart_out"))


@pytest.mark.parametrize("flags", [
    ["-l1", "-r", "0.01", "-i", "40"],          # FISTA + BART's random cycle spinning
    ["-l1", "-r", "0.01", "-i", "40", "-n"],    # no cycle spinning
    ["-l2", "-r", "0.01", "-i", "20"],          # CG with Tikhonov
    ["-l1", "-r", "0.01", "-i", "20", "-S"],    # rescaled output
    ["-R", "W:7:0:0.02", "-i", "20"],
])
def test_pics_matches_bart(bart_case, flags):
    b = bart_case()
    ours, ref = run_both(b, flags, flags)
    assert ours.shape == ref.shape
    assert rel(ours, ref) < 1e-4


def test_pics_matches_bart_even_half_size(bart_case):
    b = bart_case(64)  # N/2 even: no sign flip
    ours, ref = run_both(b, ["-l1", "-r", "0.005", "-i", "30"], ["--l1", "-r", "0.005", "-i", "30"])
    assert rel(ours, ref) < 1e-4


def test_tv_close_to_bart_at_convergence(bart_case):
    b = bart_case(64)
    ours, ref = run_both(b, ["-R", "T:3:0:0.01", "-i", "400"], ["--tv", "-r", "0.01", "-i", "400"])
    # same objective up to BART's finite-difference boundary handling; both ADMM solvers
    assert rel(ours, ref) < 0.05


def test_bart_scaling_matches_bart_debug_output(bart_case):
    b = bart_case(64)
    out = b("pics", "-d5", "-l1", "-r", "0.01", "-i", "1", "ksp", "sens", "tmp")
    del out  # BART prints debug output on stderr; compare through -w instead:
    ksp = read_cfl(b.path("ksp"))
    lay = BartLayout.from_dims(ksp.shape)
    k = torch.from_numpy(lay.to_torch(ksp, max_dim=3))[None]
    s = float(bart_scaling(k)[0])
    # pics with our automatic scaling == BART pics with that scale given explicitly by -w
    b("pics", "-l2", "-r", "0.01", "-i", "10", "-w", f"{s:.9g}", "ksp", "sens", "bart_w")
    assert main(["pics", "-l2", "-r", "0.01", "-i", "10", b.path("ksp"), b.path("sens"),
                 b.path("ours_auto")]) == 0
    assert rel(read_cfl(b.path("ours_auto")), read_cfl(b.path("bart_w"))) < 1e-5


def simulated(batch=2, n=48, coils=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    img = ((xx ** 2 + yy ** 2) < 0.6).to(torch.complex64) * (1 + 0.5j * xx)
    img = img.expand(batch, n, n).clone()
    maps = torch.randn(1, coils, 4, 4, generator=g, dtype=torch.complex64)
    maps = torch.nn.functional.interpolate(torch.view_as_real(maps).permute(0, 1, 4, 2, 3)
                                           .reshape(1, coils * 2, 4, 4), size=(n, n),
                                           mode="bilinear").reshape(1, coils, 2, n, n)
    maps = torch.complex(maps[:, :, 0], maps[:, :, 1])
    maps = maps / torch.sqrt(torch.sum(torch.abs(maps) ** 2, dim=1, keepdim=True))
    maps = maps.expand(batch, -1, -1, -1).clone()
    mask = (torch.rand(batch, 1, n, n, generator=g) < 0.4).float()
    mask[..., n // 2 - 6:n // 2 + 6, n // 2 - 6:n // 2 + 6] = 1
    from mriprior.physics.fft import fft2c
    ksp = fft2c(maps * img.unsqueeze(1)) * mask
    return img, maps, mask, ksp


def test_data_scaling_semantics():
    _, maps, _, ksp = simulated()
    x1, s1 = pics(ksp, maps, "l1", 0.01, 20)
    x2, s2 = pics(3.0 * ksp, maps, "l1", 0.01, 20)
    assert torch.allclose(s2, 3 * s1, rtol=1e-5)          # scale found from the data
    assert torch.allclose(x1, x2, rtol=0, atol=1e-5 * float(x1.abs().max()))  # output scaled
    y1, _ = pics(ksp, maps, "l1", 0.01, 20, rescale=True)
    y2, _ = pics(3.0 * ksp, maps, "l1", 0.01, 20, rescale=True)
    assert torch.allclose(3 * y1, y2, atol=1e-4 * float(y2.abs().max()))  # -S: linear in data


def test_batched_equals_per_slice():
    _, maps, mask, ksp = simulated(batch=3)
    xb, _ = pics(ksp, maps, "l1", 0.01, 15)
    for i in range(3):
        xi, _ = pics(ksp[i:i + 1], maps[i:i + 1], "l1", 0.01, 15)
        assert torch.allclose(xb[i:i + 1], xi, atol=1e-5 * float(xi.abs().max()))
    cb = cg_sense(ksp, maps, mask, lam=1e-3, max_iter=10)
    c0 = cg_sense(ksp[:1], maps[:1], mask[:1], lam=1e-3, max_iter=10)
    assert torch.allclose(cb[:1], c0, atol=1e-5 * float(c0.abs().max()))


def test_cg_sense_recovers_image_from_full_data():
    img, maps, _, _ = simulated(batch=1)
    from mriprior.physics.fft import fft2c
    ksp = fft2c(maps * img.unsqueeze(1))
    x = cg_sense(ksp, maps, torch.ones(1, 1, *ksp.shape[-2:]), max_iter=30, tol=1e-7)
    support = img.abs() > 0
    assert rel(x[support].numpy(), img[support].numpy()) < 1e-4
    assert torch.allclose(sense_combine(ksp, maps)[support], img[support], atol=1e-4)
    rss = zero_filled_rss(ksp)
    assert torch.allclose(rss, img.abs(), atol=1e-4)


def test_l1_beats_zero_filled_on_undersampled_data():
    img, maps, mask, ksp = simulated(batch=1)
    x, scale = pics(ksp, maps, "l1", 0.002, 100, rescale=True)
    zf = sense_combine(ksp, maps)
    err = lambda a: rel(a.abs().numpy(), img.abs().numpy())  # noqa: E731
    assert err(x) < 0.5 * err(zf)


def test_estimate_pattern():
    k = torch.zeros(1, 2, 4, 4, dtype=torch.complex64)
    k[0, 1, 2, 3] = 1
    p = estimate_pattern(k)
    assert p.shape == (1, 1, 4, 4) and p.sum() == 1 and p[0, 0, 2, 3] == 1


def test_cli_user_errors(tmp_path, capsys):
    write_cfl(tmp_path / "k", np.ones((8, 8, 1, 2), np.complex64))
    write_cfl(tmp_path / "s", np.ones((8, 8, 1, 3), np.complex64))
    assert main(["pics", "-l1", str(tmp_path / "k"), str(tmp_path / "s"), str(tmp_path / "o")]) == 2
    assert "coils" in capsys.readouterr().err
    assert main(["pics", "-R", "X:1", str(tmp_path / "k"), str(tmp_path / "k"),
                 str(tmp_path / "o")]) == 2
    assert main(["pics", str(tmp_path / "missing"), str(tmp_path / "s"), str(tmp_path / "o")]) == 2
    assert "missing.hdr" in capsys.readouterr().err
    write_cfl(tmp_path / "v", np.ones((4, 4, 4, 2), np.complex64))
    assert main(["pics", str(tmp_path / "v"), str(tmp_path / "v"), str(tmp_path / "o")]) == 2
    assert "3D" in capsys.readouterr().err
    nan = np.ones((8, 8, 1, 2), np.complex64)
    nan[0, 0, 0, 0] = np.nan
    write_cfl(tmp_path / "n", nan)
    write_cfl(tmp_path / "s2", np.ones((8, 8, 1, 2), np.complex64))
    assert main(["pics", str(tmp_path / "n"), str(tmp_path / "s2"), str(tmp_path / "o")]) == 2
    assert "NaN" in capsys.readouterr().err
    assert not (tmp_path / "o.cfl").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU path not run")
def test_cuda_matches_cpu():
    from mriprior.physics.espirit import espirit
    _, maps, mask, ksp = simulated(batch=2)
    cpu, _ = pics(ksp, maps, "l1", 0.01, 20)
    gpu, _ = pics(ksp.cuda(), maps.cuda(), "l1", 0.01, 20)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4 * float(cpu.abs().max()))
    m_cpu = espirit(ksp, calib=12, maps=1)
    m_gpu = espirit(ksp.cuda(), calib=12, maps=1)
    assert torch.allclose(m_gpu.cpu().abs(), m_cpu.abs(), atol=1e-3)


@pytest.mark.parametrize("reg", ["-l1", "-l2"])
def test_warm_start_matches_bart(bart_case, reg):
    b = bart_case(64)
    b("pics", "-l2", "-r", "0.1", "-i", "3", "ksp", "sens", "warm")
    flags = [reg, "-r", "0.01", "-i", "10", "-W", b.path("warm")]
    ours, ref = run_both(b, flags, flags)
    assert rel(ours, ref) < 1e-4


@pytest.mark.parametrize("command", ["demo", "phantom", "fft", "poisson", "mask", "ecalib", "cc",
                                     "pics", "metrics", "data", "train", "sample", "recon"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: mriprior " + command in capsys.readouterr().out


def test_demo_runs_small(tmp_path):
    import json
    assert main(["demo", "--classical", "--size", "64", "--iterations", "10", "--out",
                 str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())["results"]
    assert res["L1-wavelet"]["psnr"] > res["zero-filled"]["psnr"] + 3
    for f in ("demo.png", "ksp.cfl", "sens.hdr", "l1_wavelet.cfl", "reference.cfl"):
        assert (tmp_path / f).exists()
    assert main(["demo", "--classical", "--size", "8", "--out", str(tmp_path)]) == 2
