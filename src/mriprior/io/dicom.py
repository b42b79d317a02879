"""DICOM magnitude images (pydicom), without patient-identifying metadata.

Returned arrays
---------------
:func:`read_dicom` returns ``(frames, meta)``: ``frames`` is float32 of shape ``(n, y, x)``
where ``n`` is the number of frames in the file (1 for a classic single-frame image),
``y`` runs over the DICOM rows (top to bottom) and ``x`` over the columns (left to right), as
stored; nothing is flipped or transposed. Stored values go through the modality transform
(``RescaleSlope``/``RescaleIntercept``, top level or per frame in the functional groups of
enhanced multi-frame files, or a Modality LUT), and ``MONOCHROME1`` images are inverted so that
larger always means brighter: ``v -> lo + hi - v`` where ``[lo, hi]`` is the rescaled range of
the stored bits.

:func:`read_dicom_series` reads every DICOM image in a folder, groups the files by
``SeriesInstanceUID`` and returns one series as float32 ``(n, y, x)``, its frames sorted by
position along the slice normal (``ImagePositionPatient`` projected on the cross product of the
two ``ImageOrientationPatient`` direction cosines), falling back to ``InstanceNumber`` (then file
name) when positions or orientations are missing or inconsistent.

Only grayscale images (``SamplesPerPixel`` 1, ``MONOCHROME1``/``MONOCHROME2``) are read; colour
images, files without pixel data (structured reports, RT plans, DICOMDIR) and non-DICOM files
raise :class:`~mriprior.errors.InputError` naming the file. Pixel data in a compressed transfer
syntax is decoded by whatever pydicom plugin is installed (Pillow handles JPEG baseline and
JPEG 2000; pylibjpeg or gdcm add JPEG-LS and lossless JPEG); when none can, the InputError names
the file and the transfer syntax UID.

Privacy: the metadata allow-list
--------------------------------
``meta`` is built from an explicit allow-list of acquisition attributes; nothing else in the
file is copied, so no patient name, ID, birth date, address, institution, physician or operator
name, station name, device serial number, date, time, accession number or study/series/instance/
frame-of-reference UID ever reaches it. Free-text attributes (series and study descriptions,
protocol name, image comments) are left out too, because they are removed by the DICOM basic
de-identification profile (PS3.15 Annex E) and often carry identifiers typed in by hand. The
file path is not stored either (folder names often carry names). The keys, when present:

==============================  ============================================================
key                             DICOM attribute (enhanced MR: found in the functional groups)
==============================  ============================================================
modality                        Modality
manufacturer                    Manufacturer
manufacturer_model              ManufacturerModelName
magnetic_field_strength_T       MagneticFieldStrength
imaging_frequency_MHz           ImagingFrequency
mr_acquisition_type             MRAcquisitionType (``2D``/``3D``)
series_number                   SeriesNumber (an integer, not the UID)
pixel_spacing_mm                PixelSpacing ``[row spacing, column spacing]``
slice_thickness_mm              SliceThickness
spacing_between_slices_mm       SpacingBetweenSlices
echo_time_ms                    EchoTime or EffectiveEchoTime
repetition_time_ms              RepetitionTime
inversion_time_ms               InversionTime
flip_angle_deg                  FlipAngle
echo_train_length               EchoTrainLength
phase_encoding_direction        InPlanePhaseEncodingDirection
image_orientation_patient       ImageOrientationPatient (6 direction cosines)
image_position_patient          ImagePositionPatient (mm, first frame)
rows, columns                   Rows, Columns
number_of_frames                NumberOfFrames (1 when absent)
photometric_interpretation      PhotometricInterpretation
bits_stored                     BitsStored
==============================  ============================================================

and these derived keys: ``transfer_syntax`` (the syntax's name, e.g. ``"JPEG 2000 Image
Compression (Lossless Only)"``), ``rescale_slope``/``rescale_intercept`` (first frame, as
applied), ``modality_lut`` (True when a Modality LUT was applied), ``inverted`` (True for
MONOCHROME1). :func:`read_dicom_series` adds ``n_files``, ``n_slices``, ``sorted_by``
(``"image_position"``, ``"instance_number"`` or ``"file_name"``), ``slice_positions_mm`` and
``slice_spacing_mm`` (when sorted by position) and ``skipped_files`` (count of non-image or
non-DICOM files in the folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from mriprior.errors import InputError

__all__ = ["read_dicom", "read_dicom_series", "list_dicom_series", "read_header",
           "slice_geometry", "sort_slices", "ALLOWED_ATTRIBUTES"]

# meta key -> DICOM keywords tried in order (top level first, then the functional groups).
ALLOWED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "modality": ("Modality",),
    "manufacturer": ("Manufacturer",),
    "manufacturer_model": ("ManufacturerModelName",),
    "magnetic_field_strength_T": ("MagneticFieldStrength",),
    "imaging_frequency_MHz": ("ImagingFrequency",),
    "mr_acquisition_type": ("MRAcquisitionType",),
    "series_number": ("SeriesNumber",),
    "pixel_spacing_mm": ("PixelSpacing",),
    "slice_thickness_mm": ("SliceThickness",),
    "spacing_between_slices_mm": ("SpacingBetweenSlices",),
    "echo_time_ms": ("EchoTime", "EffectiveEchoTime"),
    "repetition_time_ms": ("RepetitionTime",),
    "inversion_time_ms": ("InversionTime",),
    "flip_angle_deg": ("FlipAngle",),
    "echo_train_length": ("EchoTrainLength",),
    "phase_encoding_direction": ("InPlanePhaseEncodingDirection",),
    "image_orientation_patient": ("ImageOrientationPatient",),
    "image_position_patient": ("ImagePositionPatient",),
    "rows": ("Rows",),
    "columns": ("Columns",),
    "number_of_frames": ("NumberOfFrames",),
    "photometric_interpretation": ("PhotometricInterpretation",),
    "bits_stored": ("BitsStored",),
}

_GRAY = ("MONOCHROME1", "MONOCHROME2")


# ---------------------------------------------------------------------------------------------
# reading and attribute lookup

def read_header(path: str | os.PathLike, pixels: bool = False) -> Dataset:
    """The pydicom dataset of ``path``, without its pixel data unless ``pixels``.

    Files without the 128-byte preamble (old ACR-NEMA style) are accepted when they parse as an
    image dataset. Raises InputError naming the file for anything else."""
    path, stop_before_pixels = Path(path), not pixels
    if path.is_dir():
        raise InputError(f"{path}: is a directory; use read_dicom_series() for a folder")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except InvalidDicomError:
        pass
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise InputError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e
    # No 'DICM' preamble: accept it only if it parses as an image dataset.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        ok = "Rows" in ds and "Columns" in ds
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise InputError(f"{path}: not a DICOM file (no 'DICM' marker and no image attributes)")
    return ds


def _group_items(ds: Dataset, frame: int | None):
    """Functional-group items to search: per-frame item for ``frame``, then the shared one."""
    items = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        seq = ds.PerFrameFunctionalGroupsSequence
        if frame < len(seq):
            items.append(seq[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        items.append(ds.SharedFunctionalGroupsSequence[0])
    return items


def _find(ds: Dataset, keyword: str, frame: int | None = 0):
    """Value of ``keyword`` at top level, else inside the (per-frame, shared) functional groups.

    Functional groups nest attributes one macro deep (e.g. ``PixelMeasuresSequence[0]
    .PixelSpacing``); that is the only place searched besides the top level.
    """
    v = ds.get(keyword)
    if v is not None and v != "":
        return v
    for item in _group_items(ds, frame):
        for elem in item:
            if elem.VR == "SQ" and len(elem.value):
                v = elem.value[0].get(keyword)
                if v is not None and v != "":
                    return v
    return None


def _plain(v):
    """pydicom value -> JSON-friendly Python value (float/int/str or a list of them)."""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        out = [_plain(x) for x in v]
        return out if all(x is not None for x in out) else None
    if isinstance(v, (bytes, bytearray, Dataset)):
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v).strip()
    try:  # DSfloat/DSdecimal/IS
        f = float(v)
        return int(f) if f.is_integer() and type(v).__name__ == "IS" else f
    except (TypeError, ValueError):
        return None


def _meta(ds: Dataset) -> dict:
    """The allow-listed acquisition attributes of ``ds`` (see the module docstring)."""
    meta: dict = {}
    for key, keywords in ALLOWED_ATTRIBUTES.items():
        for kw in keywords:
            try:
                v = _plain(_find(ds, kw))
            except Exception:  # noqa: BLE001 - a malformed optional attribute is just skipped
                v = None
            if v is not None and v != "" and v != []:
                meta[key] = v
                break
    meta.setdefault("number_of_frames", 1)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        meta["transfer_syntax"] = ts.name if ts.is_transfer_syntax else str(ts)
    return meta


def _n_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


# ---------------------------------------------------------------------------------------------
# pixel data

def _check_image(ds: Dataset, path: Path) -> None:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        what = f" (SOP class {sop.name})" if sop is not None and hasattr(sop, "name") else ""
        raise InputError(f"{path}: DICOM file has no pixel data{what}; not an image")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if spp != 1 or pi not in _GRAY:
        raise InputError(f"{path}: colour DICOM image (PhotometricInterpretation {pi}, "
                         f"{spp} samples per pixel); only grayscale (MONOCHROME1/2) images "
                         "are read")


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values as ``(n, y, x)``, or InputError naming the file and transfer syntax."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - pydicom raises several types for undecodable data
        reason = " ".join(str(e).split())
        if ts is not None and ts.is_transfer_syntax and ts.is_compressed:
            raise InputError(
                f"{path}: cannot decode pixel data in transfer syntax {ts} ({ts.name}): "
                f"{reason}. Install a decoder for it (e.g. `pip install pylibjpeg "
                "pylibjpeg-libjpeg pylibjpeg-openjpeg` or `python-gdcm`)") from e
        tsd = f"transfer syntax {ts}" if ts is not None else "unknown transfer syntax"
        raise InputError(f"{path}: unreadable pixel data ({tsd}): {reason}") from e
    n = _n_frames(ds)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != n:
        raise InputError(f"{path}: decoded pixel data has shape {arr.shape}; expected "
                         f"({n}, {ds.get('Rows')}, {ds.get('Columns')})")
    return arr


def _rescale(ds: Dataset, arr: np.ndarray) -> tuple[np.ndarray, dict]:
    """Modality transform (per frame where the functional groups say so) + MONOCHROME1."""
    info: dict = {}
    stored = arr
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut
        out = np.stack([np.asarray(apply_modality_lut(f, ds), dtype=np.float64) for f in stored])
        info["modality_lut"] = True
        slopes = intercepts = None
    else:
        n = stored.shape[0]
        slopes = np.ones(n)
        intercepts = np.zeros(n)
        for i in range(n):
            s, b = _find(ds, "RescaleSlope", i), _find(ds, "RescaleIntercept", i)
            slopes[i] = float(s) if s is not None else 1.0
            intercepts[i] = float(b) if b is not None else 0.0
        out = stored.astype(np.float64) * slopes[:, None, None] + intercepts[:, None, None]
        info["rescale_slope"] = float(slopes[0])
        info["rescale_intercept"] = float(intercepts[0])
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if pi == "MONOCHROME1":
        if np.issubdtype(stored.dtype, np.integer):
            bits = int(ds.get("BitsStored", stored.dtype.itemsize * 8) or 8)
            if int(ds.get("PixelRepresentation", 0) or 0):
                lo_s, hi_s = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            else:
                lo_s, hi_s = 0, 2 ** bits - 1
            if slopes is not None:
                lo = lo_s * slopes + intercepts
                hi = hi_s * slopes + intercepts
                out = (lo + hi)[:, None, None] - out
            else:
                out = out.min() + out.max() - out
        else:
            out = out.min() + out.max() - out
        info["inverted"] = True
    else:
        info["inverted"] = False
    return out.astype(np.float32), info


def read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read one DICOM image file (single- or multi-frame).

    Returns ``(frames, meta)``: ``frames`` float32 ``(n, y, x)`` (``n`` frames, rows, columns;
    modality-rescaled, MONOCHROME1 inverted) and ``meta`` holding only the allow-listed
    acquisition attributes described in the module docstring. Raises InputError naming the
    file for non-DICOM files, files without pixel data, colour images and undecodable pixel data
    (naming the transfer syntax UID).
    """
    p = Path(path)
    ds = read_header(p, pixels=True)
    _check_image(ds, p)
    arr = _decode(ds, p)
    frames, info = _rescale(ds, arr)
    meta = _meta(ds)
    meta.update(info)
    meta["rows"], meta["columns"] = int(frames.shape[1]), int(frames.shape[2])
    meta["number_of_frames"] = int(frames.shape[0])
    return frames, meta


# ---------------------------------------------------------------------------------------------
# series

def _uid(ds: Dataset) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "")


def _scan(directory: Path, recursive: bool):
    """(path, header dataset) for every DICOM image file under ``directory``; skipped count."""
    if not directory.is_dir():
        if directory.exists():
            raise InputError(f"{directory}: not a directory; use read_dicom() for one file")
        raise InputError(f"{directory}: directory not found")
    files = sorted(directory.rglob("*") if recursive else directory.iterdir())
    found, skipped = [], 0
    for f in files:
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            ds = read_header(f)
        except InputError:
            skipped += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:  # DICOMDIR, SR, RT plan, ...
            skipped += 1
            continue
        found.append((f, ds))
    return found, skipped


def _series_groups(found) -> list[list]:
    groups: dict[str, list] = {}
    for f, ds in found:
        groups.setdefault(_uid(ds), []).append((f, ds))

    def key(g):
        sn = g[0][1].get("SeriesNumber")
        try:
            sn = int(sn)
        except (TypeError, ValueError):
            sn = 10 ** 9
        return (sn, str(g[0][0]))

    return sorted(groups.values(), key=key)


def _summary(group) -> dict:
    ds = group[0][1]
    s = {k: v for k, v in _meta(ds).items()
         if k in ("series_number", "modality", "rows", "columns", "mr_acquisition_type")}
    s["n_files"] = len(group)
    return s


def list_dicom_series(directory: str | os.PathLike, recursive: bool = False) -> list[dict]:
    """Privacy-safe summaries of the image series in ``directory``, in the order
    :func:`read_dicom_series` indexes them: ``series_number``, ``modality``, ``rows``,
    ``columns``, ``n_files`` (no UIDs, no descriptions)."""
    found, _ = _scan(Path(directory), recursive)
    return [dict(_summary(g), index=i) for i, g in enumerate(_series_groups(found))]


def _floats(v, n: int):
    try:
        out = np.array([float(x) for x in v])
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def slice_geometry(ds: Dataset, frame: int = 0) -> tuple:
    """``(normal, position, instance)`` of frame ``frame`` of a DICOM header: the unit slice
    normal (cross product of the ``ImageOrientationPatient`` direction cosines) and
    ``ImagePositionPatient`` (mm), top level or in the frame's functional groups, each None when
    missing or malformed; ``InstanceNumber`` as a float, ``inf`` when missing."""
    iop = _floats(_find(ds, "ImageOrientationPatient", frame), 6)
    normal = None
    if iop is not None:
        n = np.cross(iop[:3], iop[3:])
        normal = n / np.linalg.norm(n) if np.linalg.norm(n) > 1e-6 else None
    try:
        instance = float(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        instance = float("inf")
    return normal, _floats(_find(ds, "ImagePositionPatient", frame), 3), instance


def sort_slices(geometry: list, names: list) -> tuple[list[int], str, list | None]:
    """Order of slices given their :func:`slice_geometry` and a sortable tie-break name each.

    Sorted by position along the first slice's normal when every slice has a position and a
    parallel normal (ties: instance number, then name), else by instance number (ties: name)
    when every slice has one, else by name. Returns ``(order, sorted_by, positions)``: slice
    indices in sorted order, ``"image_position"``, ``"instance_number"`` or ``"file_name"``,
    and the sorted positions along the normal (None unless sorted by position)."""
    n0 = geometry[0][0]
    if n0 is not None and all(n is not None and p is not None and abs(float(n @ n0)) >= 1 - 1e-4
                              for n, p, _ in geometry):
        keys = [(float(p @ n0), i, name) for (_, p, i), name in zip(geometry, names)]
        sorted_by = "image_position"
    elif all(i != float("inf") for _, _, i in geometry):
        keys = [(i, name) for (_, _, i), name in zip(geometry, names)]
        sorted_by = "instance_number"
    else:
        keys, sorted_by = [(name,) for name in names], "file_name"
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return order, sorted_by, ([keys[j][0] for j in order] if sorted_by == "image_position"
                              else None)


def _choose_series(d: Path, groups: list, series: int | None) -> list:
    """The group of files of series number ``series`` (or the only one)."""
    if series is None:
        if len(groups) > 1:
            listing = "; ".join(
                f"series_number={s.get('series_number', '?')}: {s['n_files']} files, "
                f"{s.get('modality', '?')} {s.get('rows', '?')}x{s.get('columns', '?')}"
                for s in map(_summary, groups))
            raise InputError(f"{d}: holds {len(groups)} image series ({listing}); "
                             "choose one with series=<series_number>")
        return groups[0]
    chosen = [g for g in groups if _summary(g).get("series_number") == int(series)]
    if not chosen:
        have = sorted({_summary(g).get("series_number", "?") for g in groups}, key=str)
        raise InputError(f"{d}: no series with series_number={series} (have {have})")
    if len(chosen) > 1:
        raise InputError(f"{d}: {len(chosen)} series share series_number={series}; "
                         "put them in separate folders")
    return chosen[0]


def read_dicom_series(directory: str | os.PathLike, series: int | None = None,
                      recursive: bool = False) -> tuple[np.ndarray, dict]:
    """Read one image series from a folder of DICOM files as float32 ``(n, y, x)``.

    Files are grouped by ``SeriesInstanceUID``; ``series`` picks a group by its
    ``SeriesNumber`` and may be omitted when the folder holds one series (see
    :func:`list_dicom_series`). Frames (every frame of every file) are sorted along the slice
    normal by ``ImagePositionPatient``, ties and missing geometry falling back to
    ``InstanceNumber`` then file name (``meta['sorted_by']`` says which was used). Non-DICOM
    and non-image files are skipped and counted in ``meta['skipped_files']``; a corrupt image
    file raises InputError naming it.
    """
    d = Path(directory)
    found, skipped = _scan(d, recursive)
    if not found:
        raise InputError(f"{d}: no DICOM image files found"
                         + (f" ({skipped} other files skipped)" if skipped else ""))
    group = _choose_series(d, _series_groups(found), series)
    every = [(fi, k) for fi, (_, ds) in enumerate(group) for k in range(_n_frames(ds))]
    order, sorted_by, positions = sort_slices(  # tie-break name: (file name, frame index)
        [slice_geometry(group[fi][1], k) for fi, k in every],
        [(group[fi][0].name, k) for fi, k in every])
    entries = [every[j] for j in order]

    # Pixel data, file by file.
    read = [read_dicom(f) for f, _ in group]
    first_meta, shape = read[0][1], read[0][0].shape[1:]
    for (f, _), (frames, _) in zip(group, read):
        if frames.shape[1:] != shape:
            raise InputError(f"{f}: image size {frames.shape[1:]} differs from the "
                             f"series' {shape} (first file {group[0][0].name})")
    volume = np.stack([read[fi][0][k] for fi, k in entries]).astype(np.float32, copy=False)

    first_ds = group[entries[0][0]][1]
    meta = _meta(first_ds)
    meta.update({k: first_meta[k] for k in ("rescale_slope", "rescale_intercept",
                                            "modality_lut", "inverted") if k in first_meta})
    p0 = slice_geometry(first_ds, entries[0][1])[1]
    if p0 is not None:
        meta["image_position_patient"] = [float(x) for x in p0]
    meta.update(rows=int(shape[0]), columns=int(shape[1]), number_of_frames=len(entries),
                n_files=len(group), n_slices=len(entries), sorted_by=sorted_by,
                skipped_files=skipped)
    if positions is not None:
        meta["slice_positions_mm"] = positions
        if len(positions) > 1:
            meta["slice_spacing_mm"] = float(np.median(np.diff(positions)))
    return volume, meta
