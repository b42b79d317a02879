"""BART ``.cfl/.hdr`` files and the mapping between BART's dims and mriprior's tensor layout.

A BART array has 16 dims (0-2 space READ/PHS1/PHS2, 3 coils, 4 ESPIRiT maps, ...), stored as
complex64 little-endian in column-major (Fortran) order; ``name.hdr`` holds the sizes on the line
after ``# Dimensions``. :func:`read_cfl` returns a NumPy array indexed in BART's dim order (like
BART's own ``cfl.py``); :func:`write_cfl` takes one. Both sides use the same bytes, so files move
between BART 0.8 and mriprior unchanged (tested against ``bart``).

mriprior works on 2D slices in C order: ``(..., maps, coil, y, x)`` where ``x`` is the first
non-singleton spatial BART dim and ``y`` the second. Because reversing the axes of a Fortran
array gives a C array over the same bytes, the conversion is a free transpose; see
:class:`BartLayout`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from mriprior.errors import InputError
from mriprior.io.files import make_parent

__all__ = ["read_cfl", "write_cfl", "read_kspace", "BartLayout", "NDIMS", "COIL_DIM",
           "MAPS_DIM"]

NDIMS = 16
COIL_DIM = 3
MAPS_DIM = 4


def _base(name: str | os.PathLike) -> str:
    s = os.fspath(name)
    return s[:-4] if s.endswith((".cfl", ".hdr")) else s


def read_header(name: str | os.PathLike) -> list[int]:
    """The 16 dims of a cfl file, from its ``.hdr``."""
    hdr = _base(name) + ".hdr"
    try:
        with open(hdr, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise InputError(f"{hdr}: header file not found") from None
    except IsADirectoryError:
        raise InputError(f"{hdr}: is a directory, not a header file") from None
    for i, line in enumerate(lines):
        if line.strip() == "# Dimensions":
            if i + 1 >= len(lines):
                break
            try:
                dims = [int(t) for t in lines[i + 1].split()]
            except ValueError:
                raise InputError(f"{hdr}: bad dimensions line {lines[i + 1]!r}") from None
            if not dims or len(dims) > NDIMS or any(d < 1 for d in dims):
                raise InputError(f"{hdr}: bad dimensions line {lines[i + 1]!r}")
            return dims + [1] * (NDIMS - len(dims))
    raise InputError(f"{hdr}: no '# Dimensions' line: not a BART header")


def read_cfl(name: str | os.PathLike, mmap: bool = False, squeeze: bool = True) -> np.ndarray:
    """Read ``name.cfl`` (complex64) indexed in BART dim order.

    ``mmap=True`` maps the file read-only instead of reading it (for large files).
    ``squeeze=True`` drops trailing singleton dims (BART's ``cfl.py`` does the same); set it
    to False to get all 16 dims.
    """
    dims = read_header(name)
    cfl = _base(name) + ".cfl"
    n = 1
    for d in dims:  # Python ints: np.prod would wrap around for huge headers
        n *= d
    try:
        size = os.path.getsize(cfl)
    except FileNotFoundError:
        raise InputError(f"{cfl}: data file not found (header {_base(name)}.hdr exists)") from None
    if size != 8 * n:
        raise InputError(
            f"{cfl}: holds {size} bytes but its header gives dims {_fmt(dims)} = {8 * n} bytes"
            " (truncated or mismatched file)")
    if squeeze:
        while len(dims) > 1 and dims[-1] == 1:
            dims = dims[:-1]
    if mmap:
        return np.memmap(cfl, dtype="<c8", mode="r", shape=tuple(dims), order="F")
    data = np.fromfile(cfl, dtype="<c8", count=n)
    return data.reshape(dims, order="F")


def write_cfl(name: str | os.PathLike, array, command: str | None = None) -> None:
    """Write an array indexed in BART dim order as ``name.cfl/.hdr``, atomically.

    Both files are written under temporary names and renamed into place, so an interrupted
    write never leaves a half-written file.
    """
    arr = np.asarray(array)
    if arr.ndim > NDIMS:
        raise InputError(f"{_base(name)}: array has {arr.ndim} dims; BART allows {NDIMS}")
    if arr.dtype.kind not in "biufc":
        raise InputError(f"{_base(name)}: cannot write dtype {arr.dtype} as complex64")
    if arr.size == 0:
        raise InputError(f"{_base(name)}: cannot write an empty array {arr.shape}: "
                         "BART dims must be >= 1")
    dims = list(arr.shape) + [1] * (NDIMS - arr.ndim)
    base = _base(name)
    d = os.path.dirname(os.path.abspath(base))
    make_parent(base)
    hdr = "# Dimensions\n" + "".join(f"{x} " for x in dims) + "\n"
    if command:
        hdr += f"# Command\n{command} \n"
    from mriprior import __version__
    hdr += f"# Creator\nmriprior v{__version__}\n"
    data = np.asfortranarray(arr.astype("<c8", copy=False))
    tmp_cfl = tmp_hdr = None
    try:
        fd, tmp_cfl = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".cfl")
        with os.fdopen(fd, "wb") as f:
            f.write(data.tobytes(order="F"))
        fd, tmp_hdr = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".hdr")
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(hdr)
        os.replace(tmp_cfl, base + ".cfl")
        tmp_cfl = None
        os.replace(tmp_hdr, base + ".hdr")
        tmp_hdr = None
    finally:
        for t in (tmp_cfl, tmp_hdr):
            if t is not None and os.path.exists(t):
                os.unlink(t)


def _fmt(dims) -> str:
    d = list(dims)
    while len(d) > 1 and d[-1] == 1:
        d.pop()
    return " x ".join(str(x) for x in d)


@dataclass(frozen=True)
class BartLayout:
    """Which two of BART's spatial dims (0-2) form a slice's ``(y, x)`` plane.

    ``x_dim`` is the faster (lower) BART dim and becomes mriprior's last axis.
    """

    x_dim: int
    y_dim: int
    spatial: tuple[int, int, int]

    @classmethod
    def from_dims(cls, dims, name: str = "input") -> "BartLayout":
        dims = list(dims) + [1] * (NDIMS - len(dims))
        sp = tuple(dims[:3])
        big = [i for i in range(3) if sp[i] > 1]
        if len(big) == 3:
            raise InputError(
                f"{name}: 3D data {_fmt(dims)}; mriprior reconstructs 2D slices: "
                "extract one with e.g. `bart slice 2 <index> in out`")
        if len(big) < 2:
            big = [i for i in range(3) if i not in big][: 2 - len(big)] + big
            big.sort()
        return cls(big[0], big[1], sp)

    def to_torch(self, arr: np.ndarray, name: str = "input", max_dim: int = MAPS_DIM) -> np.ndarray:
        """BART-ordered array -> C-ordered ``(maps, coil, y, x)`` (leading dims up to max_dim).

        Dims above ``max_dim`` must be 1.
        """
        dims = list(arr.shape) + [1] * (NDIMS - arr.ndim)
        if any(d != 1 for d in dims[max_dim + 1:]):
            raise InputError(f"{name}: dims {_fmt(dims)} use BART dims above {max_dim}, "
                             "which this tool does not support")
        if tuple(dims[:3]) != self.spatial:
            raise InputError(f"{name}: spatial dims {tuple(dims[:3])} do not match "
                             f"the k-space's {self.spatial}")
        a = arr.reshape(dims[: max_dim + 1], order="F") if arr.ndim != max_dim + 1 else arr
        other = [i for i in range(3) if i not in (self.x_dim, self.y_dim)][0]
        a = np.squeeze(a, axis=other)  # dims: (a, b, coil, maps...) with a=x_dim, b=y_dim
        a = a.transpose(tuple(range(a.ndim - 1, -1, -1)))  # (..., maps, coil, y, x)
        return np.ascontiguousarray(a)

    def to_bart(self, arr: np.ndarray) -> np.ndarray:
        """C-ordered ``(..., maps, coil, y, x)`` -> BART-ordered array (inverse of to_torch)."""
        a = np.asarray(arr).transpose(tuple(range(arr.ndim - 1, -1, -1)))  # (x, y, coil, maps..)
        other = [i for i in range(3) if i not in (self.x_dim, self.y_dim)][0]
        a = np.expand_dims(a, axis=other)
        return a


def read_kspace(name: str | os.PathLike, device=None):
    """A BART k-space file (one 2D slice, coils in dim 3) -> ``(ksp, layout)``: ``ksp`` a
    ``(1, coil, y, x)`` complex64 tensor, ``layout`` the :class:`BartLayout` that writes
    results back in the file's dims (``write_cfl(out, layout.to_bart(img))``). NaN or Inf in
    the file is an :class:`InputError` naming it."""
    import torch

    arr = read_cfl(name)
    if not np.isfinite(arr).all():
        bad = np.unravel_index(int(np.argmin(np.isfinite(arr).ravel())), arr.shape)
        raise InputError(f"{os.fspath(name)}: NaN or Inf in k-space (first at BART index "
                         f"{tuple(int(i) for i in bad)})")
    layout = BartLayout.from_dims(arr.shape, name=os.fspath(name))
    k = layout.to_torch(arr, name=os.fspath(name), max_dim=COIL_DIM)  # (coil, y, x)
    ksp = torch.from_numpy(np.ascontiguousarray(k))[None]
    return (ksp if device is None else ksp.to(device)), layout
