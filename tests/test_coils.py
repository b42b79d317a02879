"""SVD coil compression (mriprior.physics.coils) and the ``mriprior cc`` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, read_cfl, write_cfl
from mriprior.physics.coils import coil_compression_matrix, coil_energies, compress_coils


def random_kspace(batch=2, coils=8, ny=32, nx=24, rank=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, rank or coils, ny, nx)
    ksp = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    if rank is not None:  # coils that are mixtures of `rank` sources
        mix = torch.complex(torch.randn(batch, coils, rank, generator=g),
                            torch.randn(batch, coils, rank, generator=g))
        ksp = torch.einsum("bcr,bryx->bcyx", mix, ksp)
    return ksp


def energy(x):
    return x.abs().pow(2).sum().item()


def test_full_compression_is_unitary():
    ksp = random_kspace()
    a = coil_compression_matrix(ksp, 8)
    assert a.shape == (2, 8, 8) and a.dtype == torch.complex64
    eye = torch.eye(8, dtype=a.dtype).expand(2, 8, 8)
    assert torch.allclose(a @ a.mH, eye, atol=1e-5)
    assert torch.allclose(a.mH @ a, eye, atol=1e-5)
    out = compress_coils(ksp, a)
    assert abs(energy(out) / energy(ksp) - 1) < 1e-5


def test_rank_deficient_coils_compress_losslessly():
    ksp = random_kspace(rank=3)
    a = coil_compression_matrix(ksp, 3)
    out = compress_coils(ksp, a)
    assert out.shape == (2, 3, 32, 24)
    assert 1 - energy(out) / energy(ksp) < 1e-5
    # projecting back onto the physical coils recovers the data
    back = torch.einsum("bpc,bpyx->bcyx", a.conj(), out)
    assert (back - ksp).norm() / ksp.norm() < 1e-3


def test_virtual_coils_ordered_by_energy_and_calib_region():
    ksp = random_kspace() * torch.linspace(0.2, 2, 8)[None, :, None, None]
    out = compress_coils(ksp, coil_compression_matrix(ksp, 8))
    per_coil = out.abs().pow(2).sum(dim=(-2, -1))
    assert bool((per_coil[:, :-1] >= per_coil[:, 1:] * (1 - 1e-5)).all())
    assert torch.allclose(per_coil.double(), coil_energies(ksp), rtol=1e-4, atol=1e-3)
    # a centred calibration region uses only its samples
    centre = ksp[..., 16 - 5: 16 + 5, 12 - 4: 12 + 4]
    a = coil_compression_matrix(ksp, 4, calib=(10, 8))
    assert torch.allclose(a, coil_compression_matrix(centre, 4), atol=1e-5)
    with pytest.raises(InputError, match="larger than the k-space"):
        coil_compression_matrix(ksp, 4, calib=40)
    with pytest.raises(InputError, match="n_virtual=9"):
        coil_compression_matrix(ksp, 9)


def test_compress_maps_and_unbatched_matrix():
    ksp = random_kspace(batch=1)
    a = coil_compression_matrix(ksp, 4)
    maps = torch.randn(1, 2, 8, 32, 24, dtype=torch.complex64)
    out = compress_coils(maps, a)
    assert out.shape == (1, 2, 4, 32, 24)
    assert torch.allclose(out[:, 1], compress_coils(maps[:, 1], a[0]), atol=1e-5)
    with pytest.raises(InputError, match="does not fit"):
        compress_coils(maps[:, :, :6], a)


def phantom(bart):
    bart("phantom", "-x", 64, "-s", 8, "-k", "ksp")
    arr = read_cfl(bart.path("ksp"))
    layout = BartLayout.from_dims(arr.shape)
    return layout, torch.from_numpy(layout.to_torch(arr, max_dim=3))[None]


@pytest.mark.parametrize("flags, calib", [([], 24), (["-A"], None)])
def test_agrees_with_bart_cc(bart, flags, calib):
    layout, ksp = phantom(bart)
    bart("cc", "-S", "-p", 4, *flags, "ksp", "cc")
    ref = torch.from_numpy(layout.to_torch(read_cfl(bart.path("cc")), max_dim=3))
    ours = compress_coils(ksp, coil_compression_matrix(ksp, 4, calib))[0]
    assert ref.shape == ours.shape == (4, 64, 64)
    # energy captured by the first p virtual coils agrees
    for p in range(1, 5):
        assert energy(ours[:p]) == pytest.approx(energy(ref[:p]), rel=1e-4)
    # each virtual coil is BART's up to a sign
    for p in range(4):
        ip = (ours[p].conj() * ref[p]).sum() / (ours[p].norm() * ref[p].norm())
        assert abs(abs(ip.real) - 1) < 1e-4


def test_cli_cc_with_bart(bart, capsys):
    layout, ksp = phantom(bart)
    assert main(["cc", "-p", "3", bart.path("ksp"), bart.path("out")]) == 0
    dims = bart("show", "-m", "out").split("AoD:")[1].split()
    assert [int(d) for d in dims[:5]] == [64, 64, 1, 3, 1]
    out = layout.to_torch(read_cfl(bart.path("out")), max_dim=3)
    expected = compress_coils(ksp, coil_compression_matrix(ksp, 3, 24))[0]
    assert np.allclose(out, expected.numpy(), atol=1e-4 * float(expected.abs().max()))
    # -M writes BART's matrix layout: columns = virtual coils, equal up to a sign
    assert main(["cc", "-M", bart.path("ksp"), bart.path("ours")]) == 0
    bart("cc", "-S", "-M", "ksp", "theirs")
    ours = read_cfl(bart.path("ours")).reshape(8, 8, order="F")
    theirs = read_cfl(bart.path("theirs")).reshape(8, 8, order="F")
    assert np.allclose(np.abs((ours.conj() * theirs).sum(0)), 1, atol=1e-4)


@pytest.mark.parametrize("argv, message", [
    ([], "give -p N"),
    (["-p", "9"], "-p 9: must be between 0 and the number of coils (8)"),
])
def test_cli_cc_user_errors_exit_2(tmp_path, capsys, argv, message):
    ksp = random_kspace(batch=1)
    write_cfl(tmp_path / "ksp", BartLayout(0, 1, (24, 32, 1)).to_bart(ksp[0].numpy()))
    assert main(["cc", *argv, str(tmp_path / "ksp"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert main(["cc", "-p", "2", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "missing.hdr" in capsys.readouterr().err
