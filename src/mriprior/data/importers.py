"""Import DICOM / NIfTI / PNG / JPEG / fastMRI HDF5 / BART cfl files into an mriprior dataset.

:func:`import_dataset` walks the sources, decodes every file it recognises into 2D slices,
brings each slice to the dataset's ``(y, x)`` shape, normalises its intensity, assigns it a
salted subject id and a train/val/test split, and writes the dataset through
:class:`~mriprior.data.dataset.DatasetWriter` (temporary folder, renamed into place when
complete). A file that cannot be imported is skipped and listed with one line saying why; the
import goes on. The conventions below are the contract; the manifest records them per slice.

Sources and formats
-------------------
Each SRC is a file or a folder; folders are walked recursively in sorted path order (files and
folders whose name starts with ``.`` are ignored, as is the output folder). The format is found
from the content first, then the extension:

==========  ====================================================  ==============================
format      recognised by                                         slices
==========  ====================================================  ==============================
dicom       ``DICM`` at byte 128, or ``.dcm``                     every frame of every file;
                                                                  files grouped into series by
                                                                  ``SeriesInstanceUID``
nifti       ``.nii``, ``.nii.gz``, ``.hdr/.img`` pair, NIfTI      the RAS+ volume cut along each
            magic                                                 of ``axes`` (every 4D volume)
image       PNG / JPEG signature, or ``.png/.jpg/.jpeg``          one (RGB -> BT.601 luminance)
fastmri     HDF5 signature, or ``.h5/.hdf5``                      each k-space slice, coil-
                                                                  combined (see below)
cfl         ``.cfl`` (with its ``.hdr``)                          a 2D image, or each image of a
                                                                  stack along non-spatial dims
==========  ====================================================  ==============================

* DICOM series: files are read with :func:`mriprior.io.dicom.read_dicom` and ordered by
  ``ImagePositionPatient`` along the slice normal when every file has a parallel geometry, else
  by ``InstanceNumber``, else by path; the frames of a multi-frame file keep their order.
* NIfTI (:func:`mriprior.io.nifti.read_nifti`, reoriented to RAS+): a slice along ``z`` is the
  ``(x, y)`` plane, along ``y`` the ``(x, z)`` plane, along ``x`` the ``(y, z)`` plane. The
  plane ``(a, b)`` is stored as ``plane.T[::-1]``: columns run along ``a`` (towards R, or A for
  ``x`` slices), rows along ``b`` reversed, so anterior (axial) or superior (coronal, sagittal)
  is at the top: the neurological display convention.
* fastMRI (:func:`mriprior.io.fastmri.read_fastmri`): ``combine="espirit"`` estimates one
  ESPIRiT map set per slice (:func:`mriprior.physics.espirit.espirit`, ``maps=1``, calibration
  ``min(24, ny, nx)`` shrunk to the fully sampled centre) and SENSE-combines the coil images
  (``sum_c conj(s_c) x_c / sum_c |s_c|^2``): a complex image. ``combine="rss"`` gives the root
  sum of squares: a magnitude. A single-coil file gives its (complex) inverse FFT, or its
  magnitude for ``rss``. The image is then centre-cropped to the header's ``reconSpace`` matrix
  ``(x, y)`` on axes ``(-2, -1)`` as fastMRI's own loaders do (this removes the 2x readout
  oversampling). Files with a ``mask`` (undersampled test/challenge k-space) are skipped: a
  prior needs fully sampled images.
* cfl (:func:`mriprior.io.cfl.read_cfl`): ``y``/``x`` are the two non-singleton spatial BART
  dims as in :class:`~mriprior.io.cfl.BartLayout`; every further dim is a stack index
  (flattened in BART's Fortran order). 3D data (three spatial dims > 1) is skipped.

Empty slices
------------
A slice is *empty* and silently dropped (counted in the summary) when fewer than 1 % of its
pixels (at least one) have a magnitude above ``min_signal`` x the largest magnitude of its
volume. The volume is the DICOM series, the 3D NIfTI volume (each 4D time point separately), the
fastMRI file or the cfl stack; a PNG/JPEG is its own volume, so only an all-black (or nearly
all-black) image is dropped. Non-finite pixels (NaN/Inf, e.g. NIfTI masks) are set to 0 first and
counted in the slice's ``nonfinite_zeroed``. Slices smaller than 4 pixels on a side are skipped.

Geometry (``shape`` = (Y, X))
-----------------------------
* ``"fit"``: the slice ``(h, w)`` is resampled by ``s = min(Y/h, X/w)`` to
  ``(round(h s), round(w s))`` (so it fits inside the shape, aspect ratio preserved), then
  zero-padded. Resampling uses Pillow's bilinear filter, which is antialiased: plain bilinear
  interpolation when enlarging, a triangle filter widened by the reduction factor when
  shrinking. Its weights are non-negative (no ringing; a magnitude stays >= 0). Complex slices
  are filtered as real and imaginary parts (the filter is linear, so this equals filtering the
  complex image). Nothing is resampled when ``s`` leaves the size unchanged.
* ``"crop"``: no resampling; centre crop and/or zero-pad.
* ``"none"``: slices must already be ``(Y, X)``; others are skipped with a reason.

Placement is centred in the FFT sense: the resized image's pixel ``(h//2, w//2)`` lands on
``(Y//2, X//2)``. Each record holds ``original_shape`` ``[h, w]`` and ``resize``:
``{"mode", "resized_shape": [h', w'], "zoom": [h'/h, w'/w], "offset": [oy, ox]}`` meaning
``stored[y, x] = resized[y - oy, x - ox]`` where that index exists, else 0 (a negative offset is
a crop).

Intensity
---------
After the geometry, each slice is divided by ``scale``: its largest magnitude (``"max"``: the
founding studies' convention, so ``max |stored| = 1``), the 99th percentile of its magnitudes
(``"p99"``; values may exceed 1; falls back to the max, recorded as ``"normalize": "max"``, when
that percentile is 0), or 1 (``"none"``). Statistics exclude the zero padding. The record's
``scale`` recovers the source intensities: ``resized = stored[region] * scale``.

Kind
----
``kind="auto"`` gives ``"complex"`` when every imported slice is complex (fastMRI with
``combine="espirit"``, cfl) and ``"magnitude"`` otherwise. Complex slices in a magnitude dataset
are resized and normalised as complex, then stored as ``|.|`` (recorded:
``"magnitude_of_complex": true``). ``kind="complex"`` skips magnitude-only sources (a prior must
not learn a fake zero phase; ``mriprior data simulate`` adds a physical phase).

Subjects, salt and splits
-------------------------
Every slice gets a subject: the DICOM ``PatientID`` (else ``StudyInstanceUID``, else the
series' folder); for other formats the file (NIfTI, fastMRI, cfl) or the parent folder (PNG,
JPEG). ``subject_from="file"`` / ``"dir"`` forces the file / its folder for every format.
Folders and files are named by their path inside SRC prefixed with SRC's own folder name, so
moving an archive keeps its ids. The manifest stores only ``sha256(salt + NUL + key)``, 16 hex
digits. The salt is the ``salt`` argument, else a random per-user secret created once in
``$MRIPRIOR_SALT_FILE``, else ``$XDG_CONFIG_HOME/mriprior/salt``, else
``~/.config/mriprior/salt`` (mode 0600), so re-imports on one machine give identical ids. The
salt itself is never written. The split is by subject: the subject hash as a fraction
``u = int(hash, 16) / 16**16`` in [0, 1) is cut at the cumulative ``split`` fractions, so every
slice of a subject lands in the same split, deterministically. (Give the same ``salt`` on
two machines to get the same splits there.)

Privacy: what ``source`` holds
------------------------------
``source`` is the file's path relative to its SRC (a file SRC: its name; ``root`` is the SRC's
index) for NIfTI, PNG/JPEG, fastMRI and cfl files. DICOM files, whose folder trees are usually
named after patients, are stored as ``"dicom:" + sha256(salt + NUL + "path:" + path)[:16]``
(same path key as above) and their series as a hash too; files that were skipped are stored
hashed as well (``"skipped:..."``), because their format, and so the rule, is unknown. No
DICOM attribute outside :data:`mriprior.io.dicom.ALLOWED_ATTRIBUTES` is copied, SRC and
``--out`` paths are not stored, and reasons lose the file's path. The reason of a skipped DICOM
file is stored as a fixed category only (e.g. "DICOM file without pixel data"), because error
messages passed on from pydicom may quote attribute values. The summary returned to the caller
(not the manifest) adds each skipped file's real ``path`` and full reason (``detail``); this
is what the CLI prints. A file named twice (overlapping SRCs, links) is imported once.

Determinism
-----------
Files are processed in sorted order and the manifest holds no times, so importing the same
sources twice gives byte-identical shards and manifests; ``workers > 1`` decodes files in
worker processes and yields the same bytes (torch runs single-threaded for the ESPIRiT step so
its floating-point sums do not depend on the thread count). Workers are started with
``spawn`` (safe whatever threads the caller runs), so a script calling ``import_dataset(...,
workers=2)`` needs the usual ``if __name__ == "__main__":`` guard; their pixels come back
through files in a hidden spool folder next to the output (much cheaper than the pool's pipe),
removed when the import ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import multiprocessing
import os
import secrets
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mriprior.data.dataset import DatasetWriter, check_output
from mriprior.errors import InputError
from mriprior.physics.crop import centre_crop
from mriprior.io.files import locks_output

__all__ = ["import_dataset", "format_summary", "salt_file", "load_salt", "subject_hash",
           "split_of", "fit_slice", "normalize_slice", "is_empty", "FORMATS"]

FORMATS = ("dicom", "nifti", "image", "fastmri", "cfl")
RESIZE_MODES = ("fit", "crop", "none")
NORMALIZE_MODES = ("max", "p99", "none")
KINDS = ("auto", "magnitude", "complex")
COMBINES = ("espirit", "rss")
SUBJECT_FROM = ("auto", "file", "dir")
AXES = ("x", "y", "z")
SPLITS = ("train", "val", "test")
EMPTY_FRACTION = 0.01  # a slice needs >= 1 % of its pixels above min_signal x volume max
MIN_SIDE = 4           # slices smaller than this on a side are not images
HASH_CHARS = 16


# =============================================================================================
# options

@dataclasses.dataclass(frozen=True)
class _Options:
    shape: tuple[int, int]
    resize: str
    normalize: str
    axes: tuple[str, ...]
    kind: str
    combine: str
    split: tuple[float, float, float]
    subject_from: str
    min_signal: float


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise InputError(f"{name}={value!r}: must be one of {', '.join(allowed)}")
    return value


def _check_shape(shape) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in shape)
        ok = all(float(v) == int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape={shape!r}: expected two positive integers (Y, X)") from None
    if not ok or y < MIN_SIDE or x < MIN_SIDE:
        raise InputError(f"shape={tuple(shape)!r}: expected two integers >= {MIN_SIDE} (Y, X)")
    return y, x


def _check_split(split) -> tuple[float, float, float]:
    try:
        f = tuple(float(v) for v in split)
    except (TypeError, ValueError):
        raise InputError(f"split={split!r}: expected three fractions (train, val, test)") from None
    if len(f) != 3 or any(not math.isfinite(v) or v < 0 for v in f) or abs(sum(f) - 1) > 1e-6:
        raise InputError(f"split={tuple(split)!r}: expected three fractions >= 0 (train, val, "
                         "test) that sum to 1")
    return f


def _check_axes(axes) -> tuple[str, ...]:
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    if not axes or any(a not in AXES for a in axes) or len(set(axes)) != len(axes):
        raise InputError(f"axes={axes!r}: expected one or more distinct of x, y, z")
    return axes


def _options(shape, resize, normalize, axes, kind, combine, split, subject_from,
             min_signal) -> _Options:
    try:
        ms = float(min_signal)
    except (TypeError, ValueError):
        ms = float("nan")
    if not 0 <= ms < 1:
        raise InputError(f"min_signal={min_signal!r}: must lie in [0, 1)")
    return _Options(_check_shape(shape), _choice("resize", resize, RESIZE_MODES),
                    _choice("normalize", normalize, NORMALIZE_MODES), _check_axes(axes),
                    _choice("kind", kind, KINDS), _choice("combine", combine, COMBINES),
                    _check_split(split), _choice("subject_from", subject_from, SUBJECT_FROM),
                    ms)


# =============================================================================================
# salt, hashes, splits

def salt_file() -> Path:
    """Where the per-user salt lives: $MRIPRIOR_SALT_FILE, else $XDG_CONFIG_HOME/mriprior/salt,
    else ~/.config/mriprior/salt."""
    env = os.environ.get("MRIPRIOR_SALT_FILE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "mriprior" / "salt"


def load_salt() -> str:
    """The per-user salt, created (random, 256 bits, file mode 0600) on first use."""
    p = salt_file()
    try:
        text = p.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: salt file unreadable ({e}); fix it or set MRIPRIOR_SALT_FILE") \
            from None
    if text is None:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another import
            return load_salt()
        text = secrets.token_hex(32)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text + "\n")
    if not text:
        raise InputError(f"{p}: salt file is empty; delete it to create a new one (subject ids "
                         "and splits of new imports then change)")
    return text


def subject_hash(salt: str, key: str) -> str:
    """``sha256(salt + NUL + key)`` as 16 hex digits (used for subjects and hashed paths)."""
    data = f"{salt}\x00{key}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def split_of(digest: str, fractions) -> str:
    """The split of a subject hash: ``int(digest, 16) / 16**len`` cut at cumulative fractions."""
    u = int(digest, 16) / 16 ** len(digest)
    edge = 0.0
    for name, f in zip(SPLITS, fractions):
        edge += f
        if u < edge and f > 0:
            return name
    return [n for n, f in zip(SPLITS, fractions) if f > 0][-1]


# =============================================================================================
# discovery

@dataclasses.dataclass
class _Unit:
    """Files decoded together (one volume): a DICOM series, or one file of another format."""

    fmt: str
    files: list[str]     # paths as found (under SRC)
    rels: list[str]      # path inside SRC, per file
    keys: list[str]      # path key (SRC folder name / path), per file
    subjects: list[str]  # raw subject key, per file (hashed before it is stored)
    root: int
    complex: bool = False
    series_key: str = ""


@dataclasses.dataclass
class _Skip:
    path: str    # real path (returned to the caller only)
    key: str     # path key (hashed into the manifest)
    reason: str
    root: int
    fmt: str | None = None  # the format the file was taken for


_MAGIC = {b"\x89HDF\r\n\x1a\n": "fastmri", b"\x89PNG\r\n\x1a\n": "image", b"\xff\xd8\xff": "image"}
_EXT = {".dcm": "dicom", ".nii": "nifti", ".nii.gz": "nifti", ".png": "image", ".jpg": "image",
        ".jpeg": "image", ".h5": "fastmri", ".hdf5": "fastmri", ".cfl": "cfl"}


def _sniff(p: Path) -> str | None:
    """Format of ``p`` from its content, then its extension; "companion" for paired headers."""
    try:
        with open(p, "rb") as f:
            head = f.read(348)
    except OSError:
        head = b""
    if head[128:132] == b"DICM":
        return "dicom"
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    name = p.name.lower()
    if name.endswith(".hdr"):
        if p.with_suffix(".cfl").exists():
            return "companion"
        return "nifti" if p.with_suffix(".img").exists() else None
    if name.endswith(".img") and p.with_suffix(".hdr").exists():
        return "companion"
    for ext, fmt in _EXT.items():
        if name.endswith(ext):
            return fmt
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] == b"n+2\x00":
        return "nifti"
    return None


def _walk(root: Path, exclude: Path) -> list[Path]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith(".")
                         and Path(d, x).resolve() != exclude)
        out += [Path(d, f) for f in files if not f.startswith(".")]
    return sorted(out, key=lambda q: q.relative_to(root).as_posix())


def _dicom_header(p: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(p, stop_before_pixels=True)
        except InvalidDicomError:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
            if "Rows" not in ds:
                raise InputError(f"{p}: not a DICOM file (no 'DICM' marker and no image "
                                 "attributes)") from None
            return ds


def _dicom_sort_key(ds):
    """(normal, position, instance) from a header; None entries where missing."""
    def floats(v, n):
        try:
            out = [float(x) for x in v]
        except (TypeError, ValueError):
            return None
        return out if len(out) == n else None

    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    for seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = ds.get(seq)
        if items and len(items):
            item = items[0]
            if iop is None and item.get("PlaneOrientationSequence"):
                iop = item.PlaneOrientationSequence[0].get("ImageOrientationPatient")
            if ipp is None and item.get("PlanePositionSequence"):
                ipp = item.PlanePositionSequence[0].get("ImagePositionPatient")
    iop, ipp = floats(iop, 6) if iop is not None else None, floats(ipp, 3) if ipp else None
    normal = None
    if iop is not None:
        n = np.cross(iop[:3], iop[3:])
        normal = n / np.linalg.norm(n) if np.linalg.norm(n) > 1e-6 else None
    try:
        inst = float(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        inst = None
    return normal, (np.asarray(ipp) if ipp is not None else None), inst


def _order_series(members):
    """Sort [(rel, path, key, subject, sort key)] along the slice normal / InstanceNumber /
    path."""
    geo = [m[4] for m in members]
    n0 = geo[0][0]
    if n0 is not None and all(g[0] is not None and g[1] is not None
                              and abs(float(g[0] @ n0)) > 1 - 1e-4 for g in geo):
        keys = [(float(g[1] @ n0), g[2] if g[2] is not None else math.inf, m[0])
                for g, m in zip(geo, members)]
    elif all(g[2] is not None for g in geo):
        keys = [(g[2], m[0]) for g, m in zip(geo, members)]
    else:
        keys = [(m[0],) for m in members]
    return [m for _, m in sorted(zip(keys, members), key=lambda t: t[0])]


def _subject(fmt: str, mode: str, key: str, header=None) -> str:
    folder = key.rsplit("/", 1)[0] if "/" in key else ""
    if mode == "file":
        return "file:" + key
    if mode == "dir":
        return "dir:" + folder
    if fmt == "dicom" and header is not None:
        for kw, tag in (("PatientID", "patient:"), ("StudyInstanceUID", "study:")):
            v = str(header.get(kw, "") or "").strip()
            if v:
                return tag + v
        return "dir:" + folder
    return "dir:" + folder if fmt == "image" else "file:" + key


def _discover(sources, opts: _Options, exclude: Path):
    """(units, skips, n_files) for all sources, in deterministic order."""
    units: list[_Unit] = []
    skips: list[_Skip] = []
    n_files = 0
    seen: set[Path] = set()
    for ri, src in enumerate(sources):
        p = Path(src)
        if not p.exists():
            raise InputError(f"{src}: source not found")
        if p.is_dir():
            root, files, label = p, _walk(p, exclude), p.resolve().name
        else:
            root, files, label = p.parent, [p], p.resolve().parent.name
        series: dict[str, list] = {}
        for f in files:
            real = f.resolve()
            if real in seen:  # named twice (overlapping SRCs, links): imported once
                continue
            seen.add(real)
            rel = f.relative_to(root).as_posix()
            key = f"{label}/{rel}"
            fmt = _sniff(f)
            if fmt == "companion":
                continue
            n_files += 1
            if fmt is None:
                skips.append(_Skip(str(f), key, "unrecognised format (not DICOM, NIfTI, "
                                   "PNG/JPEG, fastMRI HDF5 or BART cfl)", ri))
                continue
            if fmt == "dicom":
                try:
                    hdr = _dicom_header(f)
                except Exception as e:  # noqa: BLE001 - any header failure skips the file
                    skips.append(_Skip(str(f), key, _reason(e), ri, "dicom"))
                    continue
                uid = str(hdr.get("SeriesInstanceUID", "") or "").strip()
                gkey = "uid:" + uid if uid else "dir:" + key.rsplit("/", 1)[0]
                subj = _subject("dicom", opts.subject_from, key, hdr)
                series.setdefault(gkey, []).append((rel, str(f), key, subj,
                                                    _dicom_sort_key(hdr)))
                continue
            is_complex = fmt == "cfl" or (fmt == "fastmri" and opts.combine == "espirit")
            units.append(_Unit(fmt, [str(f)], [rel], [key],
                               [_subject(fmt, opts.subject_from, key)], ri, is_complex))
        for gkey, members in series.items():
            members = _order_series(members)
            units.append(_Unit("dicom", [m[1] for m in members], [m[0] for m in members],
                               [m[2] for m in members], [m[3] for m in members], ri,
                               series_key=gkey))
    # one deterministic order: by SRC, then by the (first) file's path
    units.sort(key=lambda u: (u.root, min(u.rels)))
    return units, skips, n_files


# =============================================================================================
# geometry and intensity

def _resample(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resampling (Pillow) of a real or complex image to ``size``."""
    from PIL import Image

    def one(a):
        im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
        return np.asarray(im.resize((size[1], size[0]), Image.Resampling.BILINEAR))

    if np.iscomplexobj(img):
        return (one(img.real) + 1j * one(img.imag)).astype(np.complex64)
    return one(img)


def _region(shape, size, offset):
    """Slices of the output and of the resized image that overlap."""
    (Y, X), (h, w), (oy, ox) = shape, size, offset
    ys, xs = max(0, oy), max(0, ox)
    ye, xe = min(Y, oy + h), min(X, ox + w)
    return (slice(ys, ye), slice(xs, xe)), (slice(ys - oy, ye - oy), slice(xs - ox, xe - ox))


def fit_slice(img: np.ndarray, shape, mode: str = "fit") -> tuple[np.ndarray, dict]:
    """Bring a 2D slice to ``shape`` (see the module docstring); returns ``(out, geometry)``.

    ``geometry`` = ``{"mode", "resized_shape", "zoom", "offset"}``. ``mode="none"`` raises
    InputError when the slice is not already ``shape``.
    """
    Y, X = shape
    h, w = img.shape
    nh, nw = h, w
    if mode == "fit":
        s = min(Y / h, X / w)
        nh = min(Y, max(1, int(math.floor(h * s + 0.5))))
        nw = min(X, max(1, int(math.floor(w * s + 0.5))))
        if (nh, nw) != (h, w):
            img = _resample(img, (nh, nw))
    elif mode == "none" and (h, w) != (Y, X):
        raise InputError(f"slice shape ({h}, {w}) is not the dataset shape ({Y}, {X}) and "
                         "resize='none'")
    offset = (Y // 2 - nh // 2, X // 2 - nw // 2)
    dst, src = _region(shape, (nh, nw), offset)
    out = np.zeros(shape, dtype=np.complex64 if np.iscomplexobj(img) else np.float32)
    out[dst] = img[src]
    geom = {"mode": mode, "resized_shape": [nh, nw], "zoom": [nh / h, nw / w],
            "offset": [int(offset[0]), int(offset[1])]}
    return out, geom


def normalize_slice(out: np.ndarray, geom: dict, mode: str) -> tuple[np.ndarray, float, str]:
    """Divide by the slice's max / 99th percentile magnitude (padding excluded) or 1.

    Returns ``(stored, scale, mode_used)``: ``resized = stored * scale``.
    """
    if mode == "none":
        return out, 1.0, "none"
    dst, _ = _region(out.shape, geom["resized_shape"], geom["offset"])
    mag = np.abs(out[dst])
    scale = float(np.percentile(mag, 99)) if mode == "p99" else 0.0
    if scale <= 0:
        scale, mode = float(mag.max()), "max"
    return (out / np.float32(scale)).astype(out.dtype, copy=False), scale, mode


def is_empty(img: np.ndarray, volume_max: float, min_signal: float) -> bool:
    """The empty-slice rule: fewer than 1 % of the pixels (at least 1) above
    ``min_signal * volume_max``."""
    if volume_max <= 0:
        return True
    need = max(1, math.ceil(EMPTY_FRACTION * img.size))
    return int(np.count_nonzero(np.abs(img) > min_signal * volume_max)) < need


# =============================================================================================
# decoding (runs in worker processes when workers > 1)

@contextmanager
def _torch_single_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield torch
    finally:
        torch.set_num_threads(n)


def _ifft2c(k: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), axes=ax, norm="ortho"),
                           axes=ax)


def _coil_combine(k: np.ndarray, combine: str) -> np.ndarray:
    """``(coil, y, x)`` fully sampled k-space -> complex (espirit) or magnitude (rss) image."""
    if k.shape[0] == 1:
        img = _ifft2c(k[0]).astype(np.complex64)
        return img if combine == "espirit" else np.abs(img)
    if combine == "rss":
        return np.sqrt(np.sum(np.abs(_ifft2c(k)) ** 2, axis=0)).astype(np.float32)
    from mriprior.physics.espirit import espirit
    from mriprior.physics.sense import sense_combine

    calib = min(24, k.shape[-2], k.shape[-1])
    with _torch_single_thread() as torch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kt = torch.from_numpy(np.ascontiguousarray(k, dtype=np.complex64))[None]
        maps = espirit(kt, calib=calib, kernel=min(6, calib), maps=1)
        img = sense_combine(kt, maps[:, 0])[0]
    return img.numpy().astype(np.complex64)


def _decode_fastmri(unit: _Unit, opts: _Options):
    from mriprior.io.fastmri import read_fastmri

    path = unit.files[0]
    with read_fastmri(path) as vol:
        if vol.mask is not None:
            raise InputError(f"{path}: undersampled k-space (has a 'mask': a test/challenge "
                             "split); a prior needs fully sampled data")
        recon = vol.header.get("recon_matrix")
        out = []
        for i in range(vol.num_slices):
            img = _coil_combine(vol.slice(i), opts.combine)
            rec = {"index": i, "combine": opts.combine, "coils": int(vol.shape[1])}
            if recon is not None:
                img = centre_crop(img, (recon[0], recon[1]))
                rec["recon_crop"] = [int(v) for v in img.shape]
            out.append((0, img, rec))
    return [out], []


def _decode_nifti(unit: _Unit, opts: _Options):
    from mriprior.io.nifti import read_nifti

    vol, _ = read_nifti(unit.files[0])
    vols = [vol] if vol.ndim == 3 else [vol[..., t] for t in range(vol.shape[3])]
    groups = []
    for t, v in enumerate(vols):
        group = []
        for axis in opts.axes:
            a = AXES.index(axis)
            for k in range(v.shape[a]):
                plane = np.take(v, k, axis=a)
                rec = {"index": k, "axis": axis}
                if len(vols) > 1:
                    rec["volume"] = t
                group.append((0, np.ascontiguousarray(plane.T[::-1]), rec))
        groups.append(group)
    return groups, []


def _decode_image(unit: _Unit, opts: _Options):
    from mriprior.io.images import read_image

    img, meta = read_image(unit.files[0])
    rec = {"index": 0, "bit_depth": meta["bit_depth"]}
    if meta.get("converted"):
        rec["converted"] = meta["converted"]
    return [[(0, img, rec)]], []


def _decode_cfl(unit: _Unit, opts: _Options):
    from mriprior.io.cfl import NDIMS, BartLayout, read_cfl

    path = unit.files[0]
    arr = read_cfl(path)
    dims = list(arr.shape) + [1] * (NDIMS - arr.ndim)
    lay = BartLayout.from_dims(dims, name=path)
    a = np.moveaxis(arr.reshape(dims, order="F"), (lay.y_dim, lay.x_dim), (0, 1))
    ny, nx = a.shape[:2]
    stack = a.reshape(ny, nx, -1, order="F").transpose(2, 0, 1)
    return [[(0, np.ascontiguousarray(s, dtype=np.complex64), {"index": i})
             for i, s in enumerate(stack)]], []


def _decode_dicom(unit: _Unit, opts: _Options):
    from mriprior.io.dicom import read_dicom

    group, skips, index = [], [], 0
    for fi, path in enumerate(unit.files):
        try:
            frames, meta = read_dicom(path)
        except Exception as e:  # noqa: BLE001 - a broken file of a series is skipped alone
            skips.append((fi, _reason(e)))
            continue
        for k, frame in enumerate(frames):
            group.append((fi, frame, {"index": index, "frame": k}))
            index += 1
    return [group], skips


_DECODERS = {"dicom": _decode_dicom, "nifti": _decode_nifti, "image": _decode_image,
             "fastmri": _decode_fastmri, "cfl": _decode_cfl}


def _finish(groups, opts: _Options):
    """Empty-slice rule, geometry, normalisation: ([(file, array, record)], n_empty, skips)."""
    slices, skips, n_empty = [], [], 0
    for group in groups:
        clean = []
        for fi, img, rec in group:
            bad = ~np.isfinite(img)
            if bad.any():
                img = np.where(bad, 0, img)
                rec["nonfinite_zeroed"] = int(bad.sum())
            clean.append((fi, img, rec))
        vmax = max((float(np.abs(img).max()) for _, img, _ in clean if img.size), default=0.0)
        for fi, img, rec in clean:
            if min(img.shape) < MIN_SIDE:
                skips.append((fi, f"slice of shape {tuple(img.shape)} is smaller than "
                                  f"{MIN_SIDE} pixels on a side"))
                continue
            if is_empty(img, vmax, opts.min_signal):
                n_empty += 1
                continue
            try:
                out, geom = fit_slice(img, opts.shape, opts.resize)
            except InputError as e:
                skips.append((fi, str(e)))
                continue
            out, scale, used = normalize_slice(out, geom, opts.normalize)
            rec.update(original_shape=[int(s) for s in img.shape], resize=geom,
                       normalize=used, scale=scale)
            slices.append((fi, out, rec))
    return slices, n_empty, skips


def _reason(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if isinstance(e, InputError) else f"{type(e).__name__}: {msg}"


def _process(unit: _Unit, opts: _Options):
    """Decode one unit: ``(slices, n_empty, skips)``; failures become skips, never raise
    (except KeyboardInterrupt / SystemExit, which abort the import)."""
    try:
        groups, skips = _DECODERS[unit.fmt](unit, opts)
        slices, n_empty, more = _finish(groups, opts)
    except Exception as e:  # noqa: BLE001 - a broken file is skipped, never fatal
        return [], 0, [(0, _reason(e))]
    return slices, n_empty, skips + more


def _worker_init():
    warnings.simplefilter("ignore")


def _worker(args):
    """``_process`` in a worker process; the pixels travel through a spool file (one per unit),
    which costs the main process a fraction of unpickling them from the pool's pipe."""
    unit, opts, spool = args
    slices, n_empty, skips = _process(unit, opts)
    if not slices:
        return [], n_empty, skips, None
    fd, path = tempfile.mkstemp(dir=spool, suffix=".bin")
    meta = []
    with os.fdopen(fd, "wb") as f:
        for fi, arr, rec in slices:
            a = np.ascontiguousarray(arr)
            f.write(a.data)
            meta.append((fi, a.dtype.str, a.shape, rec))
    return meta, n_empty, skips, path


def _unspool(meta, path) -> list:
    """The slices a worker wrote with ``_worker`` (the spool file is deleted)."""
    if path is None:
        return []
    raw = np.fromfile(path, dtype=np.uint8)
    os.unlink(path)
    out, offset = [], 0
    for fi, dtype, shape, rec in meta:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        out.append((fi, raw[offset:offset + n].view(dtype).reshape(shape), rec))
        offset += n
    return out


# =============================================================================================
# writing

class _Sink:
    """Adds slices to a DatasetWriter whose kind may only be known once the first magnitude
    slice arrives (kind="auto" with both magnitude and complex sources): until then complex
    slices are spilled to an anonymous temporary file next to the output."""

    def __init__(self, kind: str | None, writer_args: dict):
        self.kind = kind
        self.args = writer_args
        self.writer: DatasetWriter | None = None
        self.spill = None
        self.spilled: list[dict] = []
        if kind is not None:
            self._open(kind)

    def _open(self, kind):
        self.kind = kind
        self.writer = DatasetWriter(kind=kind, **self.args)
        if self.spill is not None:
            self.spill.seek(0)
            n = int(np.prod(self.writer.shape))
            for rec in self.spilled:
                a = np.frombuffer(self.spill.read(8 * n), np.complex64).reshape(self.writer.shape)
                self._add(a, rec)
            self.spill.close()
            self.spill = None

    def _add(self, arr, rec):
        if self.kind == "magnitude" and np.iscomplexobj(arr):
            arr = np.abs(arr)
            rec = dict(rec, magnitude_of_complex=True)
        self.writer.add(arr, rec)

    def add(self, arr, rec):
        if self.kind is None:
            if not np.iscomplexobj(arr):
                self._open("magnitude")
            else:
                if self.spill is None:
                    parent = Path(self.args["out_dir"]).parent
                    self.spill = tempfile.TemporaryFile(dir=parent, prefix=".mriprior-spill-")
                self.spill.write(np.ascontiguousarray(arr, np.complex64).tobytes())
                self.spilled.append(rec)
                return
        self._add(arr, rec)

    @property
    def count(self) -> int:
        return len(self.writer.records) if self.writer is not None else len(self.spilled)

    def close(self, summary: dict) -> Path:
        if self.kind is None:
            self._open("complex")
        self.writer.summary = summary
        return self.writer.close()

    def abort(self):
        if self.spill is not None:
            self.spill.close()
        if self.writer is not None:
            self.writer.abort()


def _results(units, opts: _Options, workers: int, spool_parent: Path):
    """Yield ``_process`` results in unit order, decoding in parallel when ``workers > 1``
    (``spawn`` processes; the pixels come back through files in a hidden spool folder next to
    the output, removed at the end)."""
    if workers <= 1 or len(units) < 2:
        for u in units:
            yield _process(u, opts)
        return
    n = min(workers, len(units))
    chunk = max(1, min(16, len(units) // (n * 8)))
    ctx = multiprocessing.get_context("spawn")
    spool = tempfile.mkdtemp(dir=spool_parent, prefix=".mriprior-spool-")
    try:
        with ctx.Pool(n, initializer=_worker_init) as pool:
            for meta, n_empty, skips, path in pool.imap(
                    _worker, ((u, opts, spool) for u in units), chunksize=chunk):
                yield _unspool(meta, path), n_empty, skips
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _spellings(path: str) -> list[str]:
    """Every way a reader may have written ``path`` in a message, longest first."""
    variants = {path, os.path.abspath(path), str(Path(path).resolve())}
    for suffix in (".cfl", ".hdr"):
        variants |= {v[:-len(suffix)] for v in list(variants) if v.endswith(suffix)}
    return sorted(variants, key=len, reverse=True)


def _strip_path(reason: str, path: str, shown: str) -> str:
    """The reason without its leading ``path: `` and with other mentions replaced by ``shown``."""
    for v in _spellings(path):
        if reason.startswith(v + ": "):
            reason = reason[len(v) + 2:]
            break
    for v in _spellings(path):
        reason = reason.replace(v, shown)
    return reason


_DICOM_REASONS = (("no pixel data", "DICOM file without pixel data (not an image)"),
                  ("colour DICOM", "colour DICOM image (only grayscale images are imported)"),
                  ("cannot decode pixel data", "compressed pixel data and no decoder installed"),
                  ("kind='complex'", "magnitude-only source and kind='complex'"),
                  ("empty-slice", "no non-empty slice (below the empty-slice threshold)"),
                  ("resize='none'", "slice shape is not the dataset shape and resize='none'"),
                  ("smaller than", "slice smaller than 4 pixels on a side"))


def _manifest_reason(skip: _Skip, shown: str) -> str:
    """The reason as the manifest stores it: DICOM reasons are reduced to a fixed category, as
    messages passed on from pydicom may quote attribute values."""
    if skip.fmt != "dicom":
        return _strip_path(skip.reason, skip.path, shown)
    for needle, category in _DICOM_REASONS:
        if needle in skip.reason:
            return category
    return "unreadable or unsupported DICOM file"


def _command(opts: _Options, n_sources: int, salt_given: bool) -> str:
    parts = [f"mriprior data import <{n_sources} source{'s' * (n_sources != 1)}> --out <DIR>",
             f"--shape {opts.shape[0]} {opts.shape[1]}", f"--resize {opts.resize}",
             f"--normalize {opts.normalize}", "--axis " + " ".join(opts.axes),
             f"--kind {opts.kind}", f"--combine {opts.combine}",
             "--split " + " ".join(f"{f:g}" for f in opts.split),
             f"--subject-from {opts.subject_from}", f"--min-signal {opts.min_signal:g}"]
    if salt_given:
        parts.append("--salt <given>")
    return " ".join(parts)


def _provenance(opts, n_sources, salt_given) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from mriprior import __version__

    prov = {"tool": "mriprior data import", "mriprior": __version__,
            "command": _command(opts, n_sources, salt_given), "numpy": np.__version__}
    for dist in ("pillow", "pydicom", "nibabel", "h5py", "torch"):
        try:
            prov[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return prov


def _kind_up_front(opts: _Options, units) -> str | None:
    if opts.kind != "auto":
        return opts.kind
    kinds = {u.complex for u in units}
    if kinds == {True}:
        return "complex"
    return "magnitude" if True not in kinds else None


def format_summary(summary: dict) -> str:
    """Human-readable report of an import (the CLI prints it)."""
    f = summary["files"]
    lines = [f"imported {summary['count']} slices ({summary['kind']}, "
             f"{summary['shape'][0]} x {summary['shape'][1]}) from {f['imported']} of "
             f"{f['found']} files into {summary['out']} in {summary['seconds']:.1f} s",
             "  splits: " + ", ".join(f"{k} {v['slices']} slices / {v['subjects']} subjects"
                                      for k, v in summary["splits"].items())]
    if summary["empty_slices"]:
        lines.append(f"  {summary['empty_slices']} empty slices dropped")
    if summary["skipped"]:
        lines.append(f"  {len(summary['skipped'])} skipped:")
        lines += [f"    {s['path']}: {s.get('detail', s['reason'])}" for s in summary["skipped"]]
    return "\n".join(lines)


@locks_output("out_dir", "data import")
def import_dataset(sources, out_dir, *, shape=(256, 256), resize="fit", normalize="max",
                   axes=("z",), kind="auto", combine="espirit", split=(0.8, 0.1, 0.1),
                   salt=None, subject_from="auto", workers=1, overwrite=False, min_signal=0.05,
                   progress=None) -> dict:
    """Import image / k-space files into an mriprior dataset at ``out_dir`` (module docstring).

    ``sources``: files and/or folders. ``progress``: None, or a callable ``progress(done,
    total)`` called after each file/series is decoded. Returns the summary: ``count`` (slices),
    ``kind``, ``shape``, ``out``, ``files`` (found / imported / skipped), ``by_format``,
    ``empty_slices``, ``subjects``, ``splits`` (slices and subjects per split), ``skipped``
    (``[{"source", "reason", "path"}]``, one per file and reason) and ``seconds``. The manifest's
    ``summary`` holds the same without ``seconds``, ``out`` and the real ``path`` of skipped files.
    Raises InputError for bad options, no / missing sources, an existing ``out_dir`` without
    ``overwrite``, or when no slice at all could be imported; a KeyboardInterrupt or other
    exception leaves no output folder.
    """
    t0 = time.perf_counter()
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise InputError("no sources given: name files or folders to import")
    opts = _options(shape, resize, normalize, axes, kind, combine, split, subject_from,
                    min_signal)
    try:
        workers = int(workers)
    except (TypeError, ValueError):
        workers = 0
    if workers < 1:
        raise InputError(f"workers={workers!r}: must be a positive integer")
    out = Path(out_dir)
    check_output(out, overwrite)
    if salt is not None and not str(salt):
        raise InputError("salt='': give a non-empty salt, or none to use the per-user secret")
    salt_text = str(salt) if salt is not None else load_salt()

    units, pre_skips, n_files = _discover(sources, opts, out.resolve())
    skip_rows = list(pre_skips)
    if opts.kind == "complex":
        for u in [u for u in units if not u.complex]:
            for f, k in zip(u.files, u.keys):
                skip_rows.append(_Skip(f, k, "magnitude-only source and kind='complex' (use "
                                       "kind 'auto'/'magnitude', or add a phase with "
                                       "`mriprior data simulate`)", u.root, u.fmt))
        units = [u for u in units if u.complex]

    options = {"shape": list(opts.shape), "resize": opts.resize, "normalize": opts.normalize,
               "axes": list(opts.axes), "kind": opts.kind, "combine": opts.combine,
               "split": list(opts.split), "subject_from": opts.subject_from,
               "min_signal": opts.min_signal, "empty_fraction": EMPTY_FRACTION,
               "salt": "argument" if salt is not None else "per-user secret",
               "hash": f"sha256(salt + NUL + key)[:{HASH_CHARS}]",
               "source_paths": "relative to SRC; DICOM and skipped files hashed"}
    sink = _Sink(_kind_up_front(opts, units),
                 dict(out_dir=out, shape=opts.shape, options=options, overwrite=overwrite,
                      provenance=_provenance(opts, len(sources), salt is not None)))
    tally = _Tally(opts, salt_text, skip_rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = _results(units, opts, workers, out.parent)
    try:
        for done, (unit, result) in enumerate(zip(units, results), 1):
            tally.add(unit, *result, sink)
            if progress is not None:
                progress(done, len(units))
        skipped = _skip_entries(tally.skip_rows, tally.h)
        if sink.count == 0:
            first = "; ".join(f"{s['path']}: {s['detail']}" for s in skipped[:3])
            raise InputError(f"nothing to import: no slice could be read from {n_files} "
                             f"file(s) in {len(sources)} source(s)"
                             + (f" (e.g. {first})" if first else ""))
        summary = tally.summary(sink.count, n_files, skipped)
        path = sink.close(summary)
    except BaseException:
        sink.abort()
        raise
    finally:
        results.close()  # stops the worker pool, if any
    return dict(summary, kind=sink.kind, shape=list(opts.shape), out=str(path),
                skipped=skipped, seconds=time.perf_counter() - t0)


class _Tally:
    """Counts per format and split, subject hashes and skip rows while units are imported."""

    def __init__(self, opts, salt_text: str, skip_rows: list):
        self.opts, self.salt, self.skip_rows, self.hashes = opts, salt_text, skip_rows, {}
        self.by_format = {f: {"files": 0, "slices": 0} for f in FORMATS}
        self.per_split = {s: {"slices": 0, "subjects": set()} for s in SPLITS}
        self.n_empty = self.imported_files = 0

    def h(self, text: str) -> str:
        if text not in self.hashes:
            self.hashes[text] = subject_hash(self.salt, text)
        return self.hashes[text]

    def add(self, unit, slices, empty: int, skips, sink) -> None:
        """One decoded unit: its slices go to the sink with their records, its skips noted."""
        self.n_empty += empty
        used = {fi for fi, _, _ in slices}
        self.imported_files += len(used)
        self.by_format[unit.fmt]["files"] += len(used)
        self.by_format[unit.fmt]["slices"] += len(slices)
        dicom = unit.fmt == "dicom"
        series = {"series": "dicom:" + self.h("series:" + unit.series_key)} if dicom else {}
        for fi, arr, rec in slices:
            subj = self.h(unit.subjects[fi])
            sp = split_of(subj, self.opts.split)
            self.per_split[sp]["slices"] += 1
            self.per_split[sp]["subjects"].add(subj)
            source = "dicom:" + self.h("path:" + unit.keys[fi]) if dicom else unit.rels[fi]
            sink.add(arr, {"source": source, "root": unit.root, "format": unit.fmt,
                           **series, "subject": subj, "split": sp, **rec})
        for fi, reason in skips:
            self.skip_rows.append(_Skip(unit.files[fi], unit.keys[fi], reason, unit.root,
                                        unit.fmt))
        if not slices and not skips:
            self.skip_rows.append(_Skip(unit.files[0], unit.keys[0], "no non-empty slice (every "
                                        "slice is below the empty-slice threshold, "
                                        f"min_signal={self.opts.min_signal:g})", unit.root,
                                        unit.fmt))

    def summary(self, count: int, n_files: int, skipped: list) -> dict:
        return {"count": count,
                "files": {"found": n_files, "imported": self.imported_files,
                          "skipped": len({s["path"] for s in skipped})},
                "by_format": {k: v for k, v in self.by_format.items() if v["files"]},
                "empty_slices": self.n_empty,
                "subjects": sum(len(v["subjects"]) for v in self.per_split.values()),
                "splits": {k: {"slices": v["slices"], "subjects": len(v["subjects"])}
                           for k, v in self.per_split.items()},
                "skipped": [{"source": s["source"], "reason": s["reason"]} for s in skipped]}


def _skip_entries(rows, h) -> list[dict]:
    """Skip entries ordered by SRC then path, one per file and reason: ``source`` and ``reason``
    as the manifest stores them, plus ``path`` and ``detail`` (the full reason) for the caller."""
    out, seen = [], set()
    for skip in sorted(rows, key=lambda r: (r.root, r.key)):
        if (skip.path, skip.reason) in seen:
            continue
        seen.add((skip.path, skip.reason))
        shown = "skipped:" + h("path:" + skip.key)
        out.append({"source": shown, "reason": _manifest_reason(skip, shown), "path": skip.path,
                    "detail": _strip_path(skip.reason, skip.path, skip.path)})
    return out
