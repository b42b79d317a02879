"""Finding the files to import: format sniffing, the walk, DICOM series and their order."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

from mriprior.errors import InputError
from mriprior.data.importers.options import _Options


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
                from mriprior.io.dicom import read_header, slice_geometry, sort_slices
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        hdr = read_header(f)
                except Exception as e:  # noqa: BLE001 - any header failure skips the file
                    skips.append(_Skip(str(f), key, _reason(e), ri, "dicom"))
                    continue
                uid = str(hdr.get("SeriesInstanceUID", "") or "").strip()
                gkey = "uid:" + uid if uid else "dir:" + key.rsplit("/", 1)[0]
                subj = _subject("dicom", opts.subject_from, key, hdr)
                series.setdefault(gkey, []).append((rel, str(f), key, subj,
                                                    slice_geometry(hdr)))
                continue
            is_complex = fmt == "cfl" or (fmt == "fastmri" and opts.combine == "espirit")
            units.append(_Unit(fmt, [str(f)], [rel], [key],
                               [_subject(fmt, opts.subject_from, key)], ri, is_complex))
        for gkey, members in series.items():  # sort_slices: imported with the first DICOM
            order, _, _ = sort_slices([m[4] for m in members], [m[0] for m in members])
            members = [members[i] for i in order]
            units.append(_Unit("dicom", [m[1] for m in members], [m[0] for m in members],
                               [m[2] for m in members], [m[3] for m in members], ri,
                               series_key=gkey))
    # one deterministic order: by SRC, then by the (first) file's path
    units.sort(key=lambda u: (u.root, min(u.rels)))
    return units, skips, n_files

def _reason(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if isinstance(e, InputError) else f"{type(e).__name__}: {msg}"
