"""Phase simulation from magnitude, multi-coil acquisition, noise covariance files, the CLI.

Statistical bounds are justified next to each test; everything is seeded, so the tests are
deterministic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_fill_holes

from mriprior.cli.main import main
from mriprior.data.dataset import DatasetWriter, open_dataset
from mriprior.data.simulate import (KSpaceShards, PhaseModel, PhaseParams,
                                    complex_from_magnitude, noise_covariance_from_cfl,
                                    phase_from_params, random_phase, reduce_covariance,
                                    sample_params, simulate_acquisition, slice_seed,
                                    transform_maps)
from mriprior.errors import InputError
from mriprior.experiments.phase_stats import comparison_mask, gradient_magnitude
from mriprior.io.cfl import write_cfl
from mriprior.physics.fft import fft2c
from mriprior.physics.phantom import birdcage_maps, shepp_logan
from mriprior.physics.phase import (CHI_AIR, CHI_TISSUE, dipole_field, fill_holes,
                                    gaussian_random_field, polynomial_phase, segment)
from mriprior.physics.simulate import complex_noise, snr_to_sigma


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # many small tensor ops: intra-op threads only add wake-up latency here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def phantom(n: int = 64, batch: int = 1) -> torch.Tensor:
    """Shepp-Logan magnitude ``(batch, n, n)`` float32: a head-like test object."""
    return shepp_logan(n).real.clamp_min(0).float()[None].expand(batch, -1, -1).contiguous()


def head(n: int = 96) -> torch.Tensor:
    """Synthetic head ``(1, n, n)``: bright scalp, dark skull, brain, a dark enclosed sinus."""
    i = torch.arange(n, dtype=torch.float32) - n // 2
    y, x = torch.meshgrid(i, i, indexing="ij")
    r = torch.sqrt(y ** 2 + x ** 2) / (0.45 * n)
    m = torch.where(r < 1.0, 0.9, 0.0)              # scalp
    m = torch.where(r < 0.92, 0.03, m)              # skull (dark, ~7 % of the radius)
    m = torch.where(r < 0.84, 0.45, m)              # brain
    sinus = ((y + 0.35 * n) ** 2 + x ** 2).sqrt() < 0.06 * n
    m = torch.where(sinus, 0.0, m)                  # air cavity inside the head
    return m[None]


# --- parameters and reproducibility ---------------------------------------------------------


def test_seeded_output_reproducible_batch_independent_and_seed_dependent():
    m = phantom(48, 2)
    a, pa = random_phase(m, seeds=[1, 2])
    b, pb = random_phase(m, seeds=[1, 2])
    c, _ = random_phase(m[:1], seeds=[2])
    assert torch.equal(a, b) and pa == pb
    assert torch.equal(a[1], c[0])          # an item does not depend on its batch
    assert not torch.allclose(a[0], a[1])   # different seeds, different phases
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(random_phase(m, g1)[0], random_phase(m, g2)[0])
    with pytest.raises(InputError, match="generator or per-item seeds"):
        random_phase(m)


def test_params_round_trip_through_json_and_slice_seeds():
    p = sample_params(PhaseModel(), torch.Generator().manual_seed(3))
    q = PhaseParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p
    m = phantom(32)
    assert torch.equal(phase_from_params(m, p), phase_from_params(m, q))
    seeds = {slice_seed(0, i) for i in range(100)} | {slice_seed(1, i) for i in range(100)}
    assert len(seeds) == 200 and slice_seed(5, 3) == slice_seed(5, 3)
    assert slice_seed(5, 3, 1) != slice_seed(5, 3, 0)
    with pytest.raises(InputError, match="unknown phase parameters"):
        PhaseParams.from_dict(dict(p.to_dict(), bogus=1))


def test_model_distributions_respected():
    model = PhaseModel(b0=(3.0,), te_ms=(4.0, 5.0), tilt_deg=(10.0, 20.0))
    g = torch.Generator().manual_seed(0)
    ps = [sample_params(model, g) for _ in range(50)]
    assert all(p.b0 == 3.0 and 4.0 <= p.te_ms <= 5.0 and 10.0 <= p.tilt_deg <= 20.0
               and model.grf_length[0] <= p.grf_length <= model.grf_length[1]
               and list(p.class_ppm) == sorted(p.class_ppm) for p in ps)
    with pytest.raises(InputError, match="te_ms"):
        PhaseModel(te_ms=(5.0, 4.0))


def test_magnitude_preserved():
    m = torch.cat([phantom(64) * 3.7, torch.rand(1, 64, 64, generator=torch.Generator()
                                                 .manual_seed(0))])
    img, _ = complex_from_magnitude(m, seeds=[0, 1])
    assert img.dtype == torch.complex64 and img.shape == m.shape
    # one float32 rounding of the real and imaginary parts: relative error < 2^-23
    assert ((img.abs() - m).abs() <= 2.0 ** -23 * m).all()
    assert torch.equal(img.abs()[m == 0], m[m == 0])
    with pytest.raises(InputError, match="negative"):
        complex_from_magnitude(m - 1.0, seeds=[0, 1])


# --- phase statistics on a head-like magnitude ---------------------------------------------


def test_phase_gradient_statistics_on_shepp_logan():
    """Median wrapped phase-gradient magnitude inside the object, 128 x 128 Shepp-Logan.

    Bounds: docs/simulation.md measures 0.030 - 0.089 rad/px (noise-free, 16 seeds) on the
    real 230 x 180 slice for the default model; lengths scale with the FOV, so at 128 px that
    is about 1.8x: 0.054 - 0.16 rad/px; the phantom's two dark (air-filled) ellipses add
    susceptibility fields. A smooth, well-sampled phase stays far below the ~2.5 rad/px of a
    white random phase and above a flat one. We require every seed in [0.02, 0.6] and the
    median over seeds in [0.05, 0.3] (measured: 0.080 - 0.221 per seed, median 0.127).
    """
    m = phantom(128, 8)
    ph, _ = random_phase(m, seeds=range(8))
    mask = comparison_mask(m[:1]).expand(8, -1, -1)
    assert mask[0].sum() > 2000
    med = torch.tensor([g.median() for g in gradient_magnitude(ph, mask)])
    assert ((med > 0.02) & (med < 0.6)).all(), med
    assert 0.05 < med.median() < 0.3, med
    white = torch.rand(1, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    assert gradient_magnitude(white, mask[:1])[0].median() > 2.0


def test_background_components_are_smooth():
    m = phantom(128, 4)
    _, params, comps = random_phase(m, seeds=range(4), return_components=True)
    poly = comps["polynomial"].double()
    d2y = poly[:, 2:] - 2 * poly[:, 1:-1] + poly[:, :-2]
    d2x = poly[..., 2:] - 2 * poly[..., 1:-1] + poly[..., :-2]
    # degree 2, u on [-1, 1): second differences 2 c h^2 with h = 2/128, |c| < 1 -> < 5e-4
    assert d2y.abs().max() < 2e-3 and d2x.abs().max() < 2e-3
    assert (poly.flatten(1).std(1) > 0.01).all()  # but not constant
    # monomial order 1, u_y, u_x, u_y^2, u_y u_x, u_x^2; u spans [-1, 1) on the longer axis
    uy = ((torch.arange(4) - 2) / 3.0).double()[:, None]
    ux = ((torch.arange(6) - 3) / 3.0).double()[None, :]
    got = polynomial_phase([0.5, 1.0, 0.0, 0.0, 2.0, -1.0], 2, (4, 6))[0]
    assert torch.allclose(got, 0.5 + uy + 2 * uy * ux - ux ** 2)


def test_gaussian_random_field_correlation_length():
    """Unit RMS, and correlation exp(-d^2 / (2 l^2)): at d = l about exp(-1/2) = 0.61."""
    n, length = 256, 0.05  # l = 12.8 px; ~400 independent patches: estimate SE ~ 0.05
    corr, curv = [], []
    for seed in range(4):
        f = gaussian_random_field((n, n), length, seed)
        assert abs(float(f.pow(2).mean()) - 1.0) < 1e-9 and abs(float(f.mean())) < 1e-9
        d = int(round(length * n))
        corr.append(float((f[:, d:] * f[:, :-d]).mean() + (f[d:] * f[:-d]).mean()) / 2)
        curv.append(float((f[:, 2:] - 2 * f[:, 1:-1] + f[:, :-2]).pow(2).mean().sqrt()))
    assert abs(np.mean(corr) - math.exp(-0.5)) < 0.15, corr
    # second differences: RMS sqrt(3) / l_px^2 = 0.011 for a Gaussian covariance
    assert max(curv) < 0.03, curv
    assert torch.equal(gaussian_random_field((n, n), length, 1),
                       gaussian_random_field((n, n), length, 1))


def test_segmentation_of_a_synthetic_head():
    m = head(96)
    seg = segment(m)
    n = 96
    c = n // 2
    assert seg["air"][0, 0, 0] and not seg["support"][0, 0, 0]            # outside
    assert seg["support"][0, c - int(0.35 * n), c] and seg["air"][0, c - int(0.35 * n), c]
    assert seg["tissue"][0, c, c] and seg["labels"][0, c, c] >= 0          # brain
    r_skull = int(0.88 * 0.45 * n)
    assert seg["bone"][0, c, c + r_skull] and seg["bone"][0, c + r_skull, c]  # dark rim
    assert not seg["bone"][0, c, c]
    assert (seg["labels"][~seg["tissue"]] == -1).all()
    masks = [seg[k] for k in ("air", "bone", "tissue")]
    assert torch.equal(masks[0].int() + masks[1].int() + masks[2].int(),
                       torch.ones_like(masks[0], dtype=torch.int32))  # a partition


def test_fill_holes_matches_scipy():
    g = torch.Generator().manual_seed(0)
    for p in (0.45, 0.6, 0.75):
        mask = torch.rand(3, 40, 50, generator=g) < p
        ref = np.stack([binary_fill_holes(x) for x in mask.numpy()])
        assert np.array_equal(fill_holes(mask).numpy(), ref)


# --- susceptibility field ------------------------------------------------------------------


def _disc(n: int, radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i = (torch.arange(n, dtype=torch.float64) - n // 2) / n
    y, x = torch.meshgrid(i, i, indexing="ij")
    r = torch.sqrt(x ** 2 + y ** 2)
    return (r <= radius).double()[None], y, x


def test_dipole_field_of_a_cylinder_matches_the_analytic_solution():
    """Infinite cylinder (disc, slab T = inf), B0 in-plane along x, Lorentz sphere included:
    inside -chi/6; outside (chi/2) (a/r)^2 cos(2 phi), phi from B0: + along B0, - across."""
    n, a = 128, 0.15
    chi, y, x = _disc(n, a)
    f = dipole_field(chi, 90.0, 0.0, float("inf"))[0]
    r = torch.sqrt(x ** 2 + y ** 2)
    inside = r < 0.8 * a
    # pixelated disc: the staircase edge rings by ~0.01 (about 7 % of the inside value)
    assert abs(float(f[inside].mean()) + 1 / 6) < 0.003
    assert torch.allclose(f[inside], torch.full_like(f[inside], -1 / 6), atol=0.02)
    phi = torch.atan2(y, x)
    ring = (r > 1.3 * a) & (r < 0.4)
    expect = 0.5 * (a / r) ** 2 * torch.cos(2 * phi)
    assert (f[ring] - expect[ring]).abs().max() < 0.015
    c, d = n // 2, int(0.3 * n)
    assert f[c, c + d] > 0.1 and f[c + d, c] < -0.1       # sign pattern
    g = dipole_field(chi, 90.0, 90.0, float("inf"))[0]    # B0 along y: pattern turns 90 deg
    assert torch.allclose(g, f.mT, atol=1e-9)
    # B0 normal to the slice, T = inf: a long cylinder along B0 sees chi / 3, no structure
    h = dipole_field(chi, 0.0, 0.0, float("inf"))[0]
    assert torch.allclose(h[inside], torch.full_like(h[inside], 1 / 3), atol=1e-3)
    assert h[ring].abs().max() < 1e-3
    # finite slab, B0 normal: towards a thin sheet's -2/3 as T shrinks
    centre = [float(dipole_field(chi, 0.0, 0.0, t)[0, c, c]) for t in (1.0, 0.2, 0.05)]
    assert 1 / 3 > centre[0] > centre[1] > centre[2] > -2 / 3


def test_b0_phase_scales_linearly_with_te_and_b0():
    m = head(64)
    p = sample_params(PhaseModel(), torch.Generator().manual_seed(1))
    base = phase_from_params(m, p, return_components=True)[1]
    for kw in ({"te_ms": 2 * p.te_ms}, {"b0": 2 * p.b0}):
        comp = phase_from_params(m, p.replace(**kw), return_components=True)[1]
        for k in ("b0", "tissue"):
            assert torch.allclose(comp[k], 2 * base[k], rtol=1e-5, atol=1e-6)
        assert torch.equal(comp["polynomial"], base["polynomial"])
        assert torch.equal(comp["field_ppm"], base["field_ppm"])
    # the field is referenced to tissue and the air cavity perturbs it (|delta| ~ chi ppm)
    f = base["field_ppm"][0]
    assert abs(float(f[base["tissue_mask"][0]].median())) < 1e-6
    assert 0.05 < float(f[base["tissue_mask"][0]].abs().max()) < abs(CHI_AIR - CHI_TISSUE)


# --- multi-coil acquisition -----------------------------------------------------------------


def test_zero_noise_acquisition_is_fft_of_maps_times_image():
    img, _ = complex_from_magnitude(phantom(32, 2), seeds=[0, 1])
    ksp, maps = simulate_acquisition(img, 4, rotation_deg=(0, 0))
    ref = birdcage_maps(4, 32, normalize="rss")
    assert torch.equal(maps, ref[None].expand(2, -1, -1, -1))
    assert torch.equal(ksp, fft2c(ref[None] * img[:, None]))
    # given maps, rotated at random: the returned maps are the ones used
    g = torch.Generator().manual_seed(0)
    ksp, used = simulate_acquisition(img, None, maps=ref, generator=g)
    assert not torch.allclose(used[0], used[1])
    assert torch.equal(ksp, fft2c(used * img[:, None]))
    mask = torch.zeros(32, 32)
    mask[:, ::2] = 1
    ksp_m, _ = simulate_acquisition(img, 4, rotation_deg=(0, 0), mask=mask)
    assert torch.equal(ksp_m, fft2c(ref[None] * img[:, None]) * mask)
    with pytest.raises(InputError, match="n_coils=3"):
        simulate_acquisition(img, 3, maps=ref)
    with pytest.raises(InputError, match="generator"):
        simulate_acquisition(img, 4)


def test_map_rotation_and_zoom():
    maps = birdcage_maps(4, 32)
    # +90 deg turns from +x towards +y about the FFT centre n // 2 (torch.rot90 turns about
    # (n - 1) / 2): out[y, x] = in[n - x, y], i.e. rot90(k=-1) shifted by one column
    rot = transform_maps(maps, (32, 32), 90.0)[0]
    assert torch.allclose(rot[..., 1:], torch.rot90(maps, -1, (-2, -1))[..., :-1], atol=1e-5)
    assert torch.allclose(transform_maps(maps, (32, 32), 0.0, 1.0)[0], maps, atol=1e-5)
    big = transform_maps(maps, (32, 32), 0.0, 2.0)[0]  # magnified: centre values spread out
    assert torch.allclose(big[:, 16, 16], maps[:, 16, 16], atol=0.05)
    resized = transform_maps(birdcage_maps(4, 64), (32, 32))[0]
    assert torch.allclose(resized, maps, atol=0.05)


def test_snr_and_covariance_set_the_noise():
    img, _ = complex_from_magnitude(phantom(64, 1), seeds=[3])
    cov = torch.tensor([[2.0, 0.6 + 0.3j, 0.0], [0.6 - 0.3j, 1.0, 0.2j], [0.0, -0.2j, 1.5]],
                       dtype=torch.complex128)
    g = torch.Generator().manual_seed(0)
    ksp, maps, info = simulate_acquisition(img, 3, rotation_deg=(0, 0), noise_cov=cov, snr=10,
                                           generator=g, return_info=True)
    clean = fft2c(maps * img[:, None])
    sigma = float(snr_to_sigma(clean, 10)[0])
    assert info["sigma"][0] == pytest.approx(sigma)
    n = (ksp - clean).to(torch.complex128).movedim(1, -1).reshape(-1, 3)
    est = n.mT @ n.conj() / n.shape[0]
    want = cov * sigma ** 2 / 1.5  # mean diagonal of cov is 1.5
    se = torch.sqrt(want.diagonal().real[:, None] * want.diagonal().real[None] / n.shape[0])
    assert ((est - want).abs() <= 5 * se).all()
    with pytest.raises(InputError, match="not both"):
        simulate_acquisition(img, 3, rotation_deg=(0, 0), noise_cov=0.1, snr=10, generator=g)


# --- noise covariance from a BART file ------------------------------------------------------


def test_noise_covariance_from_cfl_round_trip(tmp_path):
    cov = torch.tensor([[1.0, 0.3 + 0.2j, 0.1, 0.0], [0.3 - 0.2j, 2.0, 0.4j, 0.1],
                        [0.1, -0.4j, 1.5, 0.2], [0.0, 0.1, 0.2, 0.8]], dtype=torch.complex128)
    n = 20000
    z = complex_noise((1, 4, n), cov, torch.Generator().manual_seed(0), dtype=torch.complex128)
    samples = 1e-6 * z[0].T.numpy()  # (n, coil): receiver noise has a tiny absolute scale
    write_cfl(tmp_path / "noise", samples.reshape(n, 1, 1, 4))
    est = noise_covariance_from_cfl(tmp_path / "noise").to(torch.complex128) / 1e-12
    d = cov.diagonal().real
    assert ((est - cov).abs() <= 5 * torch.sqrt(d[:, None] * d[None] / n)).all()
    two = noise_covariance_from_cfl(tmp_path / "noise", 2)  # spread: coils 0 and 2
    assert torch.allclose(two, noise_covariance_from_cfl(tmp_path / "noise")[[0, 2]][:, [0, 2]])
    assert torch.equal(reduce_covariance(cov, 2, "first"), cov[:2, :2])
    svd = reduce_covariance(cov, 2, "svd")
    lam = torch.linalg.eigvalsh(cov)
    assert torch.allclose(svd, torch.diag(lam.flip(0)[:2]).to(svd.dtype), atol=1e-12)
    with pytest.raises(InputError, match="cannot make 5 coils"):
        noise_covariance_from_cfl(tmp_path / "noise", 5)


# --- the CLI ---------------------------------------------------------------------------------


def _magnitude_dataset(path, n: int = 5, size: int = 40):
    records = []
    with DatasetWriter(path, "magnitude", (size, size), shard_size=2,
                       options={"normalize": "max"}) as w:
        for i in range(n):
            m = (phantom(size)[0] * (1.0 + 0.1 * i)).numpy()
            rec = {"source": f"vol{i // 2}.nii", "subject": f"s{i // 2}", "index": i,
                   "scale": 1.0, "split": "val" if i == 4 else "train"}
            w.add(m, rec)
            records.append(rec)
    return records


def _shards(path) -> bytes:
    ds = open_dataset(path)
    return b"".join(np.ascontiguousarray(ds[i]).tobytes() for i in range(len(ds)))


def test_cli_converts_magnitude_dataset_deterministically(tmp_path, capsys):
    src = tmp_path / "mag"
    records = _magnitude_dataset(src)
    out = tmp_path / "cplx"
    assert main(["data", "simulate", "--in", str(src), "--out", str(out), "--seed", "4",
                 "--te", "3:5", "--b0", "3"]) == 0
    assert "5 complex slices" in capsys.readouterr().out
    ds, mag = open_dataset(out), open_dataset(src)
    assert ds.kind == "complex" and len(ds) == 5 and ds.shape == (40, 40)
    for i, rec in enumerate(ds.records):
        sim = rec.pop("simulation")
        assert rec == records[i]                                # records kept
        assert sim["seed"] == slice_seed(4, i)
        p = PhaseParams.from_dict(sim["phase"])
        assert p.b0 == 3.0 and 3.0 <= p.te_ms <= 5.0
        m = torch.from_numpy(np.array(mag[i]))
        img = torch.from_numpy(np.array(ds[i]))
        assert ((img.abs() - m).abs() <= 2.0 ** -23 * m).all()  # magnitude kept
        remade, _ = complex_from_magnitude(m[None], params=p)   # record alone reproduces it
        assert torch.equal(remade[0], img)
    opts = ds.manifest["options"]["simulate"]
    assert opts["seed"] == 4 and opts["model"]["te_ms"] == [3.0, 5.0]
    assert ds.manifest["options"]["source_options"] == {"normalize": "max"}
    # same seed -> identical bytes, whatever the batch size; another seed -> different
    assert main(["data", "simulate", "--in", str(src), "--out", str(tmp_path / "again"),
                 "--seed", "4", "--te", "3:5", "--b0", "3", "--batch-size", "2"]) == 0
    assert _shards(out) == _shards(tmp_path / "again")
    assert (json.loads((out / "manifest.json").read_text())["slices"]
            == json.loads((tmp_path / "again" / "manifest.json").read_text())["slices"])
    assert main(["data", "simulate", "--in", str(src), "--out", str(tmp_path / "other"),
                 "--seed", "5"]) == 0
    assert _shards(out) != _shards(tmp_path / "other")
    # existing output needs --force
    assert main(["data", "simulate", "--in", str(src), "--out", str(out)]) == 2
    assert main(["data", "simulate", "--in", str(src), "--out", str(out), "--force"]) == 0


def test_cli_kspace(tmp_path, capsys):
    src = tmp_path / "mag"
    _magnitude_dataset(src, n=3, size=32)
    out = tmp_path / "ksp"
    assert main(["data", "simulate", "--in", str(src), "--out", str(out), "--kspace",
                 "--coils", "4"]) == 0
    ds, ks = open_dataset(out), KSpaceShards(out)
    assert len(ks) == 3
    for i in range(3):
        ksp, maps = (torch.from_numpy(np.array(a)) for a in ks[i])
        assert ksp.shape == maps.shape == (4, 32, 32)
        img = torch.from_numpy(np.array(ds[i]))
        assert torch.allclose(ksp, fft2c(maps * img), atol=1e-5)  # noiseless
        assert "rotation_deg" in ds.records[i]["simulation"]["kspace"]
    # noisy, with a real-looking covariance from a BART noise file
    z = complex_noise((1, 6, 500), None, torch.Generator().manual_seed(1))[0].T.numpy()
    write_cfl(tmp_path / "noise", z.reshape(500, 1, 1, 6))
    out2 = tmp_path / "ksp2"
    assert main(["data", "simulate", "--in", str(src), "--out", str(out2), "--kspace",
                 "--coils", "4", "--snr", "20", "--noise-cov", str(tmp_path / "noise")]) == 0
    ksp2, maps2 = KSpaceShards(out2)[0]
    clean = fft2c(torch.from_numpy(np.array(maps2)) * torch.from_numpy(np.array(open_dataset(
        out2)[0])))
    noise = torch.from_numpy(np.array(ksp2)) - clean
    ratio = float(clean.abs().pow(2).mean().sqrt() / noise.abs().pow(2).mean().sqrt())
    assert 17 < ratio < 23  # SNR 20 over 4 x 32 x 32 samples
    capsys.readouterr()
    assert main(["data", "simulate", "--in", str(src), "--out", str(tmp_path / "x"),
                 "--kspace", "--noise-cov", str(tmp_path / "noise")]) == 2
    assert "needs --snr" in capsys.readouterr().err
    assert main(["data", "simulate", "--in", str(src), "--out", str(tmp_path / "y"),
                 "--snr", "10"]) == 2


def test_cli_rejects_complex_input_and_bad_ranges(tmp_path, capsys):
    src = tmp_path / "c"
    with DatasetWriter(src, "complex", (8, 8)) as w:
        w.add(np.ones((8, 8), np.complex64), {"source": "a"})
    assert main(["data", "simulate", "--in", str(src), "--out", str(tmp_path / "o")]) == 2
    assert "expects a magnitude dataset" in capsys.readouterr().err
    _magnitude_dataset(tmp_path / "m", n=1, size=16)
    assert main(["data", "simulate", "--in", str(tmp_path / "m"), "--out",
                 str(tmp_path / "o"), "--te", "5:2"]) == 2
    assert main(["data", "simulate", "--in", str(tmp_path / "m"), "--out",
                 str(tmp_path / "m")]) == 2


def test_cli_kspace_with_bart_maps_and_zoom(tmp_path):
    from mriprior.io.cfl import BartLayout

    src = tmp_path / "mag"
    _magnitude_dataset(src, n=2, size=32)
    maps = birdcage_maps(3, 48)  # another matrix size: resized to the dataset's
    write_cfl(tmp_path / "sens", BartLayout(0, 1, (48, 48, 1)).to_bart(maps.numpy()))
    out = tmp_path / "ksp"
    assert main(["data", "simulate", "--in", str(src), "--out", str(out), "--kspace",
                 "--coils", "3", "--maps", str(tmp_path / "sens"), "--zoom", "0.9:1.1"]) == 0
    ds = open_dataset(out)
    info = ds.manifest["options"]["simulate"]["kspace"]
    assert info["maps"] == str(tmp_path / "sens") and info["zoom"] == [0.9, 1.1]
    for i in range(2):
        ksp, used = KSpaceShards(out)[i]
        assert ksp.shape == (3, 32, 32)
        rec = ds.records[i]["simulation"]["kspace"]
        assert 0.9 <= rec["zoom"] <= 1.1 and 0 <= rec["rotation_deg"] <= 360
        again = transform_maps(maps, (32, 32), rec["rotation_deg"], rec["zoom"])[0]
        assert torch.allclose(torch.from_numpy(np.array(used)), again, atol=1e-6)
    assert main(["data", "simulate", "--in", str(src), "--out", str(tmp_path / "bad"),
                 "--kspace", "--coils", "4", "--maps", str(tmp_path / "sens")]) == 2


def test_cli_experiment_phase_stats(tmp_path, capsys):
    """`mriprior experiment phase-stats`: a phantom with a smooth phase as the real image."""
    mag = shepp_logan(64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    img = torch.polar(mag.float(), 0.8 * xx + 0.3 * yy * yy) + 0.002 * torch.randn(
        64, 64, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    (tmp_path / "real").mkdir()
    write_cfl(str(tmp_path / "real" / "img"), img.T.numpy()[None, :, :, None, None])
    assert main(["experiment", "phase-stats", "--data", str(tmp_path / "real"), "--seeds", "2",
                 "--out", str(tmp_path / "o"), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "median |grad phase|" in out and (tmp_path / "o" / "simulation_phase.png").exists()
    res = json.loads((tmp_path / "s.json").read_text())
    assert len(res["sim_noisy"]["median_grad"]["values"]) == 2
    assert main(["experiment", "phase-stats", "--data", str(tmp_path / "real"), "--out",
                 str(tmp_path / "o"), "--set", "nonsense=1"]) == 2
