"""Sampling masks: acceleration, calibration, density, determinism, BART layout and peer."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl
from mriprior.physics.masks import (BART_MIN_DIST, centre_slice, equispaced_1d, poisson_disc,
                                    poisson_disc_bart, uniform_random, variable_density_1d)


@pytest.mark.parametrize("accel", [4, 8, 12])
def test_poisson_hits_target_and_keeps_calibration(accel):
    m = poisson_disc((256, 256), accel, calib=(20, 20), seed=0)
    assert abs(m.accel - accel) / accel < 0.03
    assert m.accel == pytest.approx(m.array.size / m.array.sum())
    assert m.array[centre_slice(256, 20), centre_slice(256, 20)].all()


def test_poisson_deterministic_and_seeded():
    a = poisson_disc((128, 96), 6, calib=16, seed=3)
    b = poisson_disc((128, 96), 6, calib=16, seed=3)
    c = poisson_disc((128, 96), 6, calib=16, seed=4)
    assert np.array_equal(a.array, b.array)
    assert not np.array_equal(a.array, c.array)


def _ring_density(mask, r0, r1):
    ny, nx = mask.shape
    y, x = np.mgrid[:ny, :nx]
    rho = np.hypot((y - ny // 2) / (ny / 2), (x - nx // 2) / (nx / 2))
    ring = (rho >= r0) & (rho < r1)
    return mask[ring].mean()


def test_variable_density_is_denser_in_centre():
    m = poisson_disc((256, 256), 8, calib=(20, 20), seed=1).array
    assert _ring_density(m, 0.15, 0.35) > 1.5 * _ring_density(m, 0.7, 0.95)
    u = poisson_disc((256, 256), 8, calib=0, seed=1, variable_density=False).array
    assert _ring_density(u, 0.15, 0.35) == pytest.approx(_ring_density(u, 0.7, 0.95), rel=0.3)


def test_poisson_points_keep_their_distance():
    # at R = 8 the disc radius (~2.4 px) exceeds the pixel flooring of sub-pixel positions
    m = poisson_disc((128, 128), 8, calib=0, seed=2, variable_density=False, ellipse=False)
    pts = np.argwhere(m.array).astype(float)
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nearest = d.min(1)
    # a Poisson-disc pattern has no clumps: almost every point's nearest neighbour is > 1 pixel
    assert np.mean(nearest <= 1.0) < 0.01
    # and it is more regular than uniform random sampling at the same density
    rng = np.random.default_rng(0)
    rnd = np.zeros(128 * 128, bool)
    rnd[rng.choice(rnd.size, m.array.sum(), replace=False)] = True
    rp = np.argwhere(rnd.reshape(128, 128)).astype(float)
    dr = np.sqrt(((rp[:, None] - rp[None]) ** 2).sum(-1))
    np.fill_diagonal(dr, np.inf)
    assert nearest.std() / nearest.mean() < 0.5 * dr.min(1).std() / dr.min(1).mean()


def test_1d_masks_sample_full_lines_with_acs():
    for m in (variable_density_1d((200, 160), 5, 30, seed=0), equispaced_1d((200, 160), 4, 24)):
        lines = m.array.any(axis=1)
        assert np.array_equal(m.array, np.repeat(lines[:, None], 160, axis=1))
        assert lines[centre_slice(200, 30 if m.kind.startswith("v") else 24)].all()
    vd = variable_density_1d((200, 160), 5, 30, seed=0)
    assert abs(vd.accel - 5) / 5 < 0.05
    eq = equispaced_1d((200, 160), 4, 24)
    outside = np.ones(200, bool)
    outside[centre_slice(200, 24)] = False
    sel = np.flatnonzero(eq.array[:, 0] & outside)
    gaps = np.diff(sel)  # every 4th line outside the ACS block; one larger gap spans the block
    assert np.sum(gaps != 4) <= 1 and np.all(gaps[gaps != 4] > 24)


def test_uniform_random_and_errors():
    m = uniform_random((64, 64), 4, calib=8, seed=0)
    assert abs(m.accel - 4) / 4 < 0.05
    with pytest.raises(InputError, match="accel"):
        poisson_disc((64, 64), 0.5)
    with pytest.raises(InputError):
        variable_density_1d((64, 64), 4, 80)
    with pytest.raises(InputError):
        uniform_random((64,), 4)


def test_cli_writes_bart_layout_and_compares_with_bart(bart, tmp_path):
    out = str(tmp_path / "ours")
    assert main(["poisson", "-Y", "128", "-Z", "128", "-y", "2", "-z", "2", "-C", "20", "-v",
                 "-e", "-s", "1", out]) == 0
    bart("poisson", "-Y", 128, "-Z", 128, "-y", 2, "-z", 2, "-C", 20, "-v", "-e", "theirs")
    ours, theirs = read_cfl(out), read_cfl(bart.path("theirs"))
    assert ours.shape == theirs.shape == (1, 128, 128)
    assert "128" in bart("show", "-m", out)
    n_ours, n_theirs = np.abs(ours).sum(), np.abs(theirs).sum()
    assert abs(n_ours - n_theirs) / n_theirs < 0.15
    assert main(["mask", "--type", "equispaced", "-Y", "96", "-Z", "64", "--accel", "4",
                 "--acs", "12", str(tmp_path / "eq")]) == 0
    assert read_cfl(str(tmp_path / "eq")).shape == (1, 96, 64)
    assert main(["poisson", "-Y", "64", "-Z", "64", "--accel", "0.5", out]) == 2


@pytest.mark.parametrize("accel,vd", [(3.0, True), (2.0, False)])
def test_poisson_minimum_distance_and_coverage(accel, vd):
    # BART's model has a closed-form disc radius r(pixel), so the Poisson-disc property can be
    # checked pair by pair: samples sit on a 4x finer grid and are floored to pixels (each axis
    # moves < 0.75 px), radii are dithered by 5 %, stencil radii rounded to 1/32 px.
    n = 128
    m = poisson_disc_bart((n, n), accel, accel, calib=0, seed=1, variable_density=vd)

    def radius(p):
        g = 1 + (20 * (((p - n // 2) / accel) ** 2).sum(1) / n ** 2 if vd else 0)
        return BART_MIN_DIST * accel * np.broadcast_to(g, len(p))

    pts = np.argwhere(m.array)
    r = radius(pts)
    tree = cKDTree(pts)
    pairs = np.array(sorted(tree.query_pairs(r.max())))
    dist = np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
    rmin = np.minimum(r[pairs[:, 0]], r[pairs[:, 1]])
    assert np.all(dist >= 0.95 * rmin - 1 / 32 - 0.75 * np.sqrt(2))
    # and the disc packing is tight: every pixel lies within two local radii of a sample
    grid = np.argwhere(np.ones((n, n), bool))
    nearest, _ = tree.query(grid)
    assert np.all(nearest <= 2 * radius(grid))


def test_bart_model_per_axis_acceleration():
    iso = poisson_disc_bart((128, 128), 2, 2, calib=0, seed=0)
    ani = poisson_disc_bart((128, 128), 4, 1, calib=0, seed=0)
    assert ani.accel == pytest.approx(iso.accel, rel=0.15)  # same disc area
    # the exclusion ellipse is 4x longer along axis 0 (-y 4): close pairs (gap <= 2 px) are far
    # more frequent within rows than within columns
    col_gaps = np.concatenate([np.diff(np.flatnonzero(c)) for c in ani.array.T])
    row_gaps = np.concatenate([np.diff(np.flatnonzero(r)) for r in ani.array])
    assert np.mean(row_gaps <= 2) > 2 * np.mean(col_gaps <= 2)
    assert poisson_disc_bart((128, 128), 2, 2, calib=0, seed=0, ellipse=True).accel > iso.accel


def test_mask_type_tensor_and_bart_layout():
    m = poisson_disc((64, 48), 4, calib=8, seed=0)
    t = m.tensor()
    assert t.shape == (64, 48) and t.dtype == torch.float32 and set(t.unique().tolist()) <= {0, 1}
    assert m.n_sampled == int(t.sum()) and m.target == 4 and m.kind == "poisson"
    b = m.to_bart()
    assert b.shape == (1, 64, 48) and b.dtype == np.complex64
    assert np.array_equal(b[0].real > 0, m.array)
    with pytest.raises(ValueError):
        m.array[0, 0] = True  # read-only


def test_1d_masks_deterministic_and_vd_denser_in_centre():
    shape = (256, 32)
    a = variable_density_1d(shape, 4, 16, seed=5)
    assert np.array_equal(a.array, variable_density_1d(shape, 4, 16, seed=5).array)
    assert not np.array_equal(a.array, variable_density_1d(shape, 4, 16, seed=6).array)
    assert a.accel == 4.0  # exactly 64 lines
    # averaged over seeds, lines near the centre (outside the ACS) are sampled more often
    freq = np.mean([variable_density_1d(shape, 4, 16, seed=s).array[:, 0] for s in range(20)], 0)
    off = np.abs(np.arange(256) - 128)
    assert freq[(off >= 8) & (off < 40)].mean() > 2 * freq[off >= 90].mean()
    e1, e2 = equispaced_1d(shape, 4, 16, seed=0), equispaced_1d(shape, 4, 16, offset=1)
    assert np.array_equal(e1.array, equispaced_1d(shape, 4, 16, seed=0).array)
    assert e2.array[1::4, 0].all() and e2.accel < 4
    r1, r2 = uniform_random(shape, 3, seed=0), uniform_random(shape, 3, seed=1)
    assert not np.array_equal(r1.array, r2.array) and r1.n_sampled == round(256 * 32 / 3)


@pytest.mark.parametrize("call,name", [
    (lambda: poisson_disc((64, 64), 0.9), "accel"),
    (lambda: poisson_disc((64, 64, 2), 4), "shape"),
    (lambda: poisson_disc((64, 64), 4, calib=(80, 8)), "calib"),
    (lambda: poisson_disc((64, 64), 4, seed=-1), "seed"),
    (lambda: poisson_disc((64, 64), 5000, calib=0), "accel"),
    (lambda: poisson_disc_bart((64, 64), 2, 0.5), "accel_z"),
    (lambda: variable_density_1d((64, 64), 4, 65), "acs_lines"),
    (lambda: variable_density_1d((64, 64), 4, 40), "acs_lines"),
    (lambda: variable_density_1d((64,), 4, 8), "shape"),
    (lambda: equispaced_1d((64, 64), 4, 8, offset=4), "offset"),
    (lambda: equispaced_1d((64, 64), 0, 8), "accel"),
    (lambda: uniform_random((8, 8), 2, calib=9), "calib"),
])
def test_bad_parameters_name_the_parameter(call, name):
    with pytest.raises(InputError, match=name):
        call()


def test_cli_accel_target_and_line_mask(tmp_path, capsys):
    out = str(tmp_path / "pd")
    assert main(["poisson", "-Y", "96", "-Z", "80", "--accel", "6", "-C", "12", "-v", "-e",
                 out]) == 0
    m = read_cfl(out)
    assert m.shape == (1, 96, 80) and set(np.unique(m)) <= {0, 1}
    r = m.size / np.abs(m).sum()
    err = capsys.readouterr().err
    assert abs(r - 6) / 6 < 0.03 and f"R = {r:.3f}" in err
    assert main(["poisson", "-y", "2", "--accel", "4", out]) == 2
    assert "--accel" in capsys.readouterr().err
    # -Z 1: a 1 x Y x 1 line mask that broadcasts over the readout of 2D BART k-space X x Y
    assert main(["mask", "--type", "vd1d", "-Y", "128", "-Z", "1", "--accel", "4", "--acs", "16",
                 "-s", "3", str(tmp_path / "vd")]) == 0
    v = read_cfl(str(tmp_path / "vd"))
    assert v.shape == (1, 128) and np.abs(v).sum() == 32
    assert np.array_equal(v[0].real > 0, variable_density_1d((128, 1), 4, 16, seed=3).array[:, 0])
    assert main(["mask", "--type", "random", "-Y", "32", "-Z", "32", "--accel", "4", "--acs", "8",
                 str(tmp_path / "rnd")]) == 0
    assert np.abs(read_cfl(str(tmp_path / "rnd"))[0, 12:20, 12:20]).min() == 1
    assert main(["mask", "--type", "vd1d", "-Y", "32", "-Z", "8", "--accel", "2", "--acs", "40",
                 str(tmp_path / "bad")]) == 2
    assert "--acs 40" in capsys.readouterr().err


def test_pattern_kind_tells_line_sampling_from_2d_sampling():
    from mriprior.physics.masks import pattern_kind

    vd = variable_density_1d((32, 24), 4, acs_lines=6, seed=0).array
    assert pattern_kind(vd) == "1d" and pattern_kind(vd.T) == "1d"  # lines along x or y
    assert pattern_kind(torch.from_numpy(vd).float()[None, None]) == "1d"
    assert pattern_kind(poisson_disc((32, 24), 4, calib=(6, 6), seed=0).array) == "2d"
    assert pattern_kind(np.ones((8, 8))) == "2d" and pattern_kind(np.zeros((8, 8))) == "2d"
    assert pattern_kind(np.array([1, 0, 1, 1])) == "1d"  # a fastMRI line mask
    with pytest.raises(InputError, match="one mask at a time"):
        pattern_kind(np.ones((2, 8, 8)))
