"""fastMRI HDF5 files (h5py): k-space, ISMRMRD header, reference reconstructions.

A fastMRI file (https://github.com/facebookresearch/fastMRI) holds

* ``kspace``: complex64, ``(slices, coils, rows, columns)`` for multi-coil data or
  ``(slices, rows, columns)`` for single-coil data; the rows are the (2x oversampled) readout,
  the columns the phase encoding that ``mask`` undersamples; the k-space centre is at
  ``rows // 2, columns // 2``;
* ``ismrmrd_header``: the ISMRMRD XML header as a byte string;
* ``reconstruction_rss`` (multi-coil) / ``reconstruction_esc`` (single-coil): float32
  ``(slices, y, x)`` reference images (train/val splits only);
* ``mask`` (test/challenge splits): the sampled columns (phase encodes);
* file attributes ``acquisition`` (e.g. ``"CORPD_FBK"``), ``max``, ``norm``, ``patient_id``
  (a hash) and, in some splits, ``acceleration``, ``num_low_frequency``.

:func:`read_fastmri` returns a :class:`FastMRIVolume` whose ``kspace`` is always indexed
``(slices, coil, y, x)`` complex64 -- a single-coil file gets a coil axis of length 1. With
``lazy=True`` (default) ``kspace`` is a :class:`LazyKSpace` reading the slices asked for from
the open HDF5 dataset (``vol.kspace[i]`` is one ``(coil, y, x)`` slice; ``np.asarray(vol.kspace)``
loads all); with ``lazy=False`` it is a NumPy array and the file is closed at once.

``header`` is a dict parsed from the ISMRMRD XML (``{}`` when the file has none), from its
first ``encoding``: ``encoded_matrix``/``recon_matrix`` ``[x, y, z]`` (ints) and
``encoded_fov_mm``/``recon_fov_mm`` ``[x, y, z]`` (floats), each when present. Only these
fields are read; ``subjectInformation``, ``studyInformation``, ``measurementInformation``
(IDs, dates, UIDs, protocol names) and the institution and station names are never copied.
Likewise ``attrs`` keeps only ``acquisition``, ``max``, ``norm``, ``acceleration``,
``num_low_frequency``, ``padding_left``, ``padding_right`` -- never ``patient_id``.

A missing or malformed ``kspace`` (or a file that is not HDF5) raises
:class:`~mriprior.errors.InputError` naming the file and key.
"""

from __future__ import annotations

import operator
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np

from mriprior.errors import InputError

__all__ = ["read_fastmri", "FastMRIVolume", "LazyKSpace", "parse_ismrmrd_header",
           "ALLOWED_ATTRS"]

ALLOWED_ATTRS = ("acquisition", "max", "norm", "acceleration", "num_low_frequency",
                 "padding_left", "padding_right")


# ---------------------------------------------------------------------------------------------
# ISMRMRD header

def _strip_ns(root: ET.Element) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]


def _xyz(el: ET.Element | None, cast):
    if el is None:
        return None
    try:
        return [cast(float(el.findtext(a))) for a in ("x", "y", "z")]
    except (TypeError, ValueError):
        return None


def parse_ismrmrd_header(xml: str | bytes, name: str = "ismrmrd_header") -> dict:
    """The encoded and reconstruction matrix and field of view of an ISMRMRD XML header (see
    the module docstring).

    Only allow-listed elements are read; patient, study and measurement information is not.
    Raises InputError naming ``name`` when the XML does not parse.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InputError(f"{name}: malformed ISMRMRD header XML ({e})") from None
    _strip_ns(root)
    if root.tag != "ismrmrdHeader":
        raise InputError(f"{name}: XML root is <{root.tag}>, not <ismrmrdHeader>")
    enc, out = root.find("encoding"), {}
    if enc is None:
        return out
    for space, key in (("encodedSpace", "encoded"), ("reconSpace", "recon")):
        for tag, field, cast in (("matrixSize", "matrix", int),
                                 ("fieldOfView_mm", "fov_mm", float)):
            v = _xyz(enc.find(f"{space}/{tag}"), cast)
            if v is not None:
                out[f"{key}_{field}"] = v
    return out


# ---------------------------------------------------------------------------------------------
# k-space

def _as_complex64(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.names is not None:  # compound (real, imag) under other field names
        re, im = dtype.names
        return (arr[re] + 1j * arr[im]).astype(np.complex64)
    return arr.astype(np.complex64, copy=False)


class LazyKSpace:
    """``(slices, coil, y, x)`` complex64 view of a fastMRI ``kspace`` dataset, read on demand.

    ``ks[i]`` reads slice ``i`` only (``(coil, y, x)``); ``ks[i:j:step]`` (step > 0) and
    ``ks[i, c, ...]`` read the selected slices and index the rest in memory, ``ks[..., c]``
    loads all first; other indices raise IndexError;
    ``np.asarray(ks)`` or :meth:`load` reads everything. Reading after the file was closed
    raises InputError.
    """

    def __init__(self, dataset: h5py.Dataset, path: Path, multicoil: bool):
        self._ds = dataset
        self._path = path
        self._multicoil = multicoil
        s = dataset.shape
        self.shape = (s[0], s[1], s[2], s[3]) if multicoil else (s[0], 1, s[1], s[2])
        self.dtype = np.dtype(np.complex64)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyKSpace(shape={self.shape}, file={str(self._path)!r})"

    def _read(self, sel) -> np.ndarray:
        if not self._ds.id.valid:
            raise InputError(f"{self._path}: file is closed; open it again with read_fastmri")
        try:
            raw = self._ds[sel]
        except (OSError, KeyError) as e:
            raise InputError(f"{self._path}: 'kspace' unreadable ({e})") from e
        arr = _as_complex64(np.asarray(raw), self._ds.dtype)
        return arr if self._multicoil else arr[..., None, :, :] if arr.ndim == 3 else arr[None]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if not key or key[0] is Ellipsis:
            return self.load()[key]
        first, rest, n = key[0], key[1:], self.shape[0]
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step < 0:
                raise IndexError("LazyKSpace: negative slice steps are not supported")
            return self._read(slice(start, max(start, stop), step))[(slice(None),) + rest]
        try:
            i = operator.index(first)
        except TypeError:
            raise IndexError(f"LazyKSpace index of type {type(first).__name__}: use an "
                             "integer, a slice or ...; np.asarray(ks) for others") from None
        if not -n <= i < n:
            raise IndexError(f"slice {i} out of range for {n} slices")
        return self._read(i % n)[rest]

    def load(self) -> np.ndarray:
        """All of k-space as a complex64 NumPy array ``(slices, coil, y, x)``."""
        return self._read(slice(None))

    def __array__(self, dtype=None, copy=None):
        a = self.load()
        return a if dtype is None else a.astype(dtype)


# ---------------------------------------------------------------------------------------------
# volume

class FastMRIVolume:
    """One fastMRI file. Attributes:

    ``path``; ``kspace`` (:class:`LazyKSpace` or complex64 ndarray, ``(slices, coil, y, x)``);
    ``multicoil`` (False for single-coil files, whose coil axis has length 1); ``header``
    (parsed ISMRMRD header dict); ``attrs`` (allow-listed file attributes);
    ``reconstruction_rss`` / ``reconstruction_esc`` (float32 ``(slices, y, x)`` or None);
    ``mask`` (sampling mask from test splits, or None). Use as a context manager, or call
    :meth:`close`, to release a lazily read file.
    """

    def __init__(self, path: Path, kspace, multicoil: bool, header: dict, attrs: dict,
                 reconstruction_rss, reconstruction_esc, mask, file: h5py.File | None):
        self.path = path
        self.kspace = kspace
        self.multicoil = multicoil
        self.header = header
        self.attrs = attrs
        self.reconstruction_rss = reconstruction_rss
        self.reconstruction_esc = reconstruction_esc
        self.mask = mask
        self._file = file

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(slices, coil, y, x)``."""
        return tuple(self.kspace.shape)

    @property
    def num_slices(self) -> int:
        return self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def slice(self, i: int) -> np.ndarray:
        """k-space of slice ``i`` as complex64 ``(coil, y, x)``."""
        return np.asarray(self.kspace[i])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "FastMRIVolume":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FastMRIVolume({str(self.path)!r}, shape={self.shape}, "
                f"multicoil={self.multicoil}, acquisition={self.attrs.get('acquisition')!r})")


def _attr(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _float_dataset(f: h5py.File, key: str, path: Path):
    if key not in f:
        return None
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{path}: '{key}' is a group, not a dataset")
    try:
        return np.asarray(obj[()], dtype=np.float32)
    except (OSError, TypeError, ValueError) as e:
        raise InputError(f"{path}: '{key}' unreadable ({e})") from e


def read_fastmri(path: str | os.PathLike, lazy: bool = True) -> FastMRIVolume:
    """Open a fastMRI HDF5 file (see the module docstring for what is returned)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a fastMRI HDF5 file")
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({' '.join(str(e).split())})") from e
    try:
        if "kspace" not in f:
            raise InputError(f"{p}: no 'kspace' dataset (keys: {sorted(f.keys())}); "
                             "not a fastMRI file")
        ds = f["kspace"]
        if not isinstance(ds, h5py.Dataset):
            raise InputError(f"{p}: 'kspace' is a group, not a dataset")
        dt = ds.dtype
        complex_ok = np.issubdtype(dt, np.complexfloating) or (
            dt.names is not None and len(dt.names) == 2
            and all(np.issubdtype(dt[n], np.floating) for n in dt.names))
        if not complex_ok:
            raise InputError(f"{p}: 'kspace' has dtype {dt}; expected complex")
        if ds.ndim not in (3, 4):
            raise InputError(f"{p}: 'kspace' has shape {ds.shape}; expected (slices, coils, y, x)"
                             " or single-coil (slices, y, x)")
        multicoil = ds.ndim == 4

        header: dict = {}
        if "ismrmrd_header" in f:
            raw = f["ismrmrd_header"][()]
            if isinstance(raw, np.ndarray):
                raw = raw.item() if raw.size == 1 else b"".join(raw.tolist())
            header = parse_ismrmrd_header(raw, name=f"{p}: 'ismrmrd_header'")
        attrs = {k: _attr(f.attrs[k]) for k in ALLOWED_ATTRS if k in f.attrs}
        rss = _float_dataset(f, "reconstruction_rss", p)
        esc = _float_dataset(f, "reconstruction_esc", p)
        mask = None
        if "mask" in f and isinstance(f["mask"], h5py.Dataset):
            mask = np.asarray(f["mask"][()]).astype(bool)

        lazy_ks = LazyKSpace(ds, p, multicoil)
        if lazy:
            return FastMRIVolume(p, lazy_ks, multicoil, header, attrs, rss, esc, mask, f)
        kspace = lazy_ks.load()
    except BaseException:
        f.close()
        raise
    f.close()
    return FastMRIVolume(p, kspace, multicoil, header, attrs, rss, esc, mask, None)
