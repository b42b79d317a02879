"""BART .cfl/.hdr interop (byte-compatible with BART 0.8, both directions), memory mapping,
16-dim arrays, BartLayout, malformed input and atomic writes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mriprior.errors import InputError
from mriprior.io import cfl as cflmod
from mriprior.io.cfl import BartLayout, read_cfl, write_cfl

RNG = np.random.default_rng(1234)


def _rand(shape):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


def _show(bart, name) -> np.ndarray:
    """Values printed by `bart show` (rows = dim 0, one row per flattened higher index)."""
    out = bart("show", name)
    vals = re.findall(r"([+-][0-9.]+e[+-]\d+)([+-][0-9.]+e[+-]\d+)i", out)
    return np.array([float(a) + 1j * float(b) for a, b in vals], dtype=np.complex128)


def _show_dims(bart, name) -> list[int]:
    out = bart("show", "-m", name)
    line = [ln for ln in out.splitlines() if ln.startswith("AoD:")][0]
    return [int(t) for t in line.split()[1:]]


def _raw(path) -> np.ndarray:
    return np.fromfile(path, dtype="<c8")


# --- BART -> mriprior ---------------------------------------------------------------------

def test_read_bart_phantom_kspace(bart):
    bart("phantom", "-x", 32, "-s", 4, "-k", "k")
    a = read_cfl(bart.path("k"))
    assert a.shape == (32, 32, 1, 4)
    assert a.dtype == np.complex64
    assert _show_dims(bart, "k") == [32, 32, 1, 4] + [1] * 12
    # raw bytes are column-major (dim 0 fastest)
    np.testing.assert_array_equal(a.ravel(order="F"), _raw(bart.path("k.cfl")))
    # `bart show` prints %+e (7 significant digits)
    np.testing.assert_allclose(a.ravel(order="F"), _show(bart, "k"), rtol=1e-6, atol=1e-4)
    assert np.abs(a).max() > 0


def test_read_bart_ones_and_noise(bart):
    bart("ones", 3, 4, 3, 5, "o")
    o = read_cfl(bart.path("o"))
    assert o.shape == (4, 3, 5)
    np.testing.assert_array_equal(o, np.ones((4, 3, 5), np.complex64))

    bart("zeros", 4, 3, 1, 1, 6, "z")
    bart("noise", "-s", 42, "z", "n")
    n = read_cfl(bart.path("n"))
    assert n.shape == (3, 1, 1, 6)
    np.testing.assert_array_equal(n.ravel(order="F"), _raw(bart.path("n.cfl")))
    np.testing.assert_allclose(n.ravel(order="F"), _show(bart, "n"), rtol=1e-6, atol=1e-7)
    assert np.all(n.imag != 0)


def test_bart_header_with_fewer_than_16_dims(bart):
    bart("ones", 2, 5, 2, "o")  # BART writes only 2 dims in this header
    with open(bart.path("o.hdr")) as f:
        assert f.read().splitlines()[1].split() == ["5", "2"]
    assert read_cfl(bart.path("o"), squeeze=False).shape == (5, 2) + (1,) * 14


# --- mriprior -> BART ---------------------------------------------------------------------

def test_bart_reads_ours(bart):
    x = _rand((6, 5, 1, 3))
    write_cfl(bart.path("a"), x)
    assert _show_dims(bart, "a") == [6, 5, 1, 3] + [1] * 12
    np.testing.assert_allclose(_show(bart, "a"), x.ravel(order="F"), rtol=1e-6, atol=1e-6)

    bart("scale", 2, "a", "b")
    np.testing.assert_array_equal(read_cfl(bart.path("b")), 2 * x)  # exact in float

    bart("fmac", "a", "a", "c")
    np.testing.assert_allclose(read_cfl(bart.path("c")), x * x, rtol=1e-5, atol=1e-5)


def test_cfl_bytes_identical_to_bart(bart):
    x = _rand((7, 4, 1, 2, 2))
    write_cfl(bart.path("ours"), x)
    bart("copy", "ours", "theirs")
    with open(bart.path("ours.cfl"), "rb") as f1, open(bart.path("theirs.cfl"), "rb") as f2:
        assert f1.read() == f2.read()
    assert _show_dims(bart, "theirs") == _show_dims(bart, "ours")

    # and BART's own file, rewritten by us, keeps its bytes and dims
    bart("phantom", "-x", 16, "-s", 3, "-k", "k")
    write_cfl(bart.path("k2"), read_cfl(bart.path("k")))
    with open(bart.path("k.cfl"), "rb") as f1, open(bart.path("k2.cfl"), "rb") as f2:
        assert f1.read() == f2.read()
    assert _show_dims(bart, "k2") == _show_dims(bart, "k")


def test_write_header_format(tmp_path):
    write_cfl(tmp_path / "h", np.zeros((3, 2), np.complex64), command="test cmd")
    lines = (tmp_path / "h.hdr").read_text().splitlines()
    assert lines[0] == "# Dimensions"
    assert lines[1].split() == ["3", "2"] + ["1"] * 14
    assert "# Command" in lines


def test_write_real_and_other_dtypes(tmp_path):
    for arr in (np.arange(6, dtype=np.float64).reshape(2, 3), np.arange(6).reshape(2, 3),
                np.ones((2, 3), bool), _rand((2, 3)).astype(np.complex128)):
        write_cfl(tmp_path / "r", arr)
        back = read_cfl(tmp_path / "r")
        assert back.dtype == np.complex64
        np.testing.assert_allclose(back, arr.astype(np.complex64))


def test_name_forms(tmp_path):
    x = _rand((3, 2))
    write_cfl(tmp_path / "n.cfl", x)
    for name in (tmp_path / "n", str(tmp_path / "n"), tmp_path / "n.cfl", tmp_path / "n.hdr"):
        np.testing.assert_array_equal(read_cfl(name), x)


# --- memory mapping -----------------------------------------------------------------------

def test_mmap_same_values_and_not_loaded(tmp_path):
    x = _rand((8, 6, 1, 4))
    write_cfl(tmp_path / "m", x)
    m = read_cfl(tmp_path / "m", mmap=True)
    assert isinstance(m, np.memmap)
    assert m.shape == x.shape and m.dtype == np.complex64
    np.testing.assert_array_equal(np.asarray(m), x)
    assert not m.flags.writeable  # read-only map
    # It is a view of the file, not a copy: bytes changed on disk show through.
    with open(tmp_path / "m.cfl", "r+b") as f:
        f.write(np.array([123 + 456j], "<c8").tobytes())
    assert m[0, 0, 0, 0] == 123 + 456j
    del m


def test_mmap_then_overwrite_same_name(tmp_path):
    x = _rand((4, 4))
    write_cfl(tmp_path / "s", x)
    m = read_cfl(tmp_path / "s", mmap=True)
    write_cfl(tmp_path / "s", 2 * m)  # atomic replace: the mapped old file stays valid
    np.testing.assert_array_equal(m, x)
    np.testing.assert_array_equal(read_cfl(tmp_path / "s"), 2 * x)


# --- 16 dims ------------------------------------------------------------------------------

def test_16_dims_round_trip(tmp_path):
    shape = (2, 3, 1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2)
    x = _rand(shape)
    write_cfl(tmp_path / "d", x)
    np.testing.assert_array_equal(read_cfl(tmp_path / "d"), x)
    assert read_cfl(tmp_path / "d", squeeze=False).shape == shape
    # trailing singleton dims are squeezed, inner ones kept
    write_cfl(tmp_path / "t", _rand((2, 1, 3)))
    assert read_cfl(tmp_path / "t").shape == (2, 1, 3)
    assert read_cfl(tmp_path / "t", squeeze=False).shape == (2, 1, 3) + (1,) * 13


def test_16_dims_bart(bart):
    shape = (2,) * 16
    x = _rand(shape)
    write_cfl(bart.path("d"), x)
    assert _show_dims(bart, "d") == [2] * 16
    bart("scale", 2, "d", "e")
    np.testing.assert_array_equal(read_cfl(bart.path("e")), 2 * x)
    bart("flip", 1 << 15, "d", "f")  # flip the last dim in BART
    np.testing.assert_array_equal(read_cfl(bart.path("f")), x[..., ::-1])


def test_more_than_16_dims_rejected(tmp_path):
    with pytest.raises(InputError, match="17 dims"):
        write_cfl(tmp_path / "x", np.zeros((1,) * 17, np.complex64))
    assert not list(tmp_path.iterdir())


# --- BartLayout ---------------------------------------------------------------------------

def test_layout_plane_01_round_trip():
    x = _rand((6, 5, 1, 3, 2))  # BART (x, y, 1, coil, maps)
    lay = BartLayout.from_dims(x.shape)
    assert (lay.x_dim, lay.y_dim) == (0, 1)
    t = lay.to_torch(x)
    assert t.shape == (2, 3, 5, 6) and t.flags.c_contiguous
    for m, c, yy, xx in [(0, 0, 0, 0), (1, 2, 4, 5), (0, 1, 3, 2)]:
        assert t[m, c, yy, xx] == x[xx, yy, 0, c, m]
    np.testing.assert_array_equal(lay.to_bart(t), x)


def test_layout_plane_12_round_trip(tmp_path):
    x = _rand((1, 6, 5, 3))  # BART (1, x, y, coil)
    lay = BartLayout.from_dims(x.shape)
    assert (lay.x_dim, lay.y_dim) == (1, 2)
    t = lay.to_torch(x)
    assert t.shape == (1, 3, 5, 6)
    assert t[0, 2, 4, 1] == x[0, 1, 4, 2]
    back = lay.to_bart(t)
    np.testing.assert_array_equal(back.reshape(x.shape), x)
    # identical bytes on disk
    write_cfl(tmp_path / "a", x)
    write_cfl(tmp_path / "b", back)
    assert (tmp_path / "a.cfl").read_bytes() == (tmp_path / "b.cfl").read_bytes()
    assert read_cfl(tmp_path / "b", squeeze=False).shape == read_cfl(tmp_path / "a",
                                                                        squeeze=False).shape


def test_layout_with_bart_transpose(bart):
    bart("phantom", "-x", 16, "-s", 3, "-k", "k")
    bart("transpose", 0, 2, "k", "k2")  # plane moves from dims (0,1) to (1,2)
    k, k2 = read_cfl(bart.path("k")), read_cfl(bart.path("k2"))
    assert k2.shape == (1, 16, 16, 3)
    t = BartLayout.from_dims(k.shape).to_torch(k)
    t2 = BartLayout.from_dims(k2.shape).to_torch(k2)
    np.testing.assert_array_equal(t2, t.swapaxes(-1, -2))
    # back through BART
    write_cfl(bart.path("k3"), BartLayout.from_dims(k2.shape).to_bart(t2))
    bart("transpose", 0, 2, "k3", "k4")
    np.testing.assert_array_equal(read_cfl(bart.path("k4")), k)


def test_layout_rejects_3d_and_high_dims():
    with pytest.raises(InputError, match="3D data"):
        BartLayout.from_dims((4, 4, 4), name="vol")
    lay = BartLayout.from_dims((4, 4))
    with pytest.raises(InputError, match="dims above"):
        lay.to_torch(np.zeros((4, 4, 1, 1, 1, 2), np.complex64), name="img")
    with pytest.raises(InputError, match="do not match"):
        lay.to_torch(np.zeros((4, 5), np.complex64))


# --- malformed input ----------------------------------------------------------------------

def _pair(tmp_path, name, hdr: str | None, nbytes: int | None):
    base = tmp_path / name
    if hdr is not None:
        (tmp_path / f"{name}.hdr").write_text(hdr)
    if nbytes is not None:
        (tmp_path / f"{name}.cfl").write_bytes(b"\0" * nbytes)
    return base


@pytest.mark.parametrize("case, hdr, nbytes, at_fault", [
    ("missing_hdr", None, 48, ".hdr"),
    ("missing_cfl", "# Dimensions\n2 3 1\n", None, ".cfl"),
    ("truncated", "# Dimensions\n2 3 1\n", 40, ".cfl"),
    ("too_big", "# Dimensions\n2 3 1\n", 56, ".cfl"),
    ("no_dims_line", "# Command\nphantom\n", 48, ".hdr"),
    ("dims_line_last", "# Dimensions\n", 48, ".hdr"),
    ("empty_dims", "# Dimensions\n\n", 48, ".hdr"),
    ("non_integer", "# Dimensions\n2 three 1\n", 48, ".hdr"),
    ("float_dims", "# Dimensions\n2.0 3 1\n", 48, ".hdr"),
    ("zero_dim", "# Dimensions\n2 0 1\n", 0, ".hdr"),
    ("negative_dim", "# Dimensions\n2 -3 1\n", 48, ".hdr"),
    ("seventeen_dims", "# Dimensions\n" + "1 " * 17 + "\n", 8, ".hdr"),
    ("binary_garbage", "\x00\x01\x02garbage", 48, ".hdr"),
])
def test_malformed_raises_input_error_naming_file(tmp_path, case, hdr, nbytes, at_fault):
    base = _pair(tmp_path, case, hdr, nbytes)
    for mmap in (False, True):
        with pytest.raises(InputError) as ei:
            read_cfl(base, mmap=mmap)
        assert f"{case}{at_fault}" in str(ei.value)


def test_hdr_is_directory(tmp_path):
    (tmp_path / "d.hdr").mkdir()
    with pytest.raises(InputError, match=r"d\.hdr"):
        read_cfl(tmp_path / "d")


# --- atomic writes ------------------------------------------------------------------------

def test_write_leaves_no_temp_files_and_replaces(tmp_path):
    write_cfl(tmp_path / "w", _rand((4, 4)))
    y = _rand((3, 2, 1, 5))
    write_cfl(tmp_path / "w", y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.cfl", "w.hdr"]
    np.testing.assert_array_equal(read_cfl(tmp_path / "w"), y)


def test_write_creates_missing_directory(tmp_path):
    write_cfl(tmp_path / "sub" / "dir" / "w", _rand((2, 2)))
    assert (tmp_path / "sub" / "dir" / "w.cfl").stat().st_size == 32


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    x = _rand((4, 4))
    write_cfl(tmp_path / "w", x)

    def boom(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cflmod.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        write_cfl(tmp_path / "w", _rand((8, 8)))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.cfl", "w.hdr"]
    np.testing.assert_array_equal(read_cfl(tmp_path / "w"), x)


def test_write_unconvertible_dtype(tmp_path):
    with pytest.raises(InputError, match="object"):
        write_cfl(tmp_path / "o", np.array([None, 1], dtype=object))
    assert not list(tmp_path.iterdir())


# --- arrays BART cannot hold are refused with InputError, nothing written -----------------

def test_write_zero_size_array_rejected(tmp_path):
    try:
        write_cfl(tmp_path / "e", np.zeros((0, 3), np.complex64))
    except InputError as e:
        assert "e" in str(e)
    else:
        raise AssertionError("write_cfl wrote a zero-size array without InputError")
    assert not list(tmp_path.iterdir())


def test_write_string_array_raises_input_error(tmp_path):
    try:
        write_cfl(tmp_path / "s", np.array(["a", "b"]))
    except InputError:
        pass
    except ValueError as e:
        raise AssertionError(f"bare ValueError: {e}") from e
    assert not list(tmp_path.iterdir())
