"""Sampling masks: acceleration, calibration, density, determinism, BART layout and peer."""

import numpy as np
import pytest

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl
from mriprior.physics.masks import (centre_slice, equispaced_1d, poisson_disc, uniform_random,
                                    variable_density_1d)


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
