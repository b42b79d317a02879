"""NIfTI-1/NIfTI-2 magnitude volumes (nibabel), ``.nii``, ``.nii.gz`` and ``.hdr/.img`` pairs.

:func:`read_nifti` returns ``(volume, meta)``: ``volume`` is float32 indexed ``(X, Y, Z)`` or
``(X, Y, Z, T)`` in the file's voxel axis order (NIfTI's ``i, j, k[, t]``; a 2D image gets
``Z = 1``). The header's ``scl_slope``/``scl_inter`` scaling is applied. With
``canonical=True`` (the default) the volume is reoriented with nibabel's
:func:`~nibabel.funcs.as_closest_canonical` to the closest RAS+ voxel order: the index along
axis 0 increases towards the patient's Right, axis 1 towards Anterior, axis 2 towards Superior
(nibabel's world convention: +x = R, +y = A, +z = S; a canonical affine's 3x3 part is
diagonal-dominant with a positive diagonal). Reorientation only flips and permutes
axes (no resampling); for oblique acquisitions the closest axes are chosen.

``meta`` keys: ``affine`` (4x4 list, voxel -> world mm, of the returned array), ``voxel_sizes_mm``
(3 floats, of the returned axes), ``orientation`` (axis codes of the returned array, e.g.
``"RAS"``), ``original_orientation`` (axis codes in the file), ``canonical`` (bool),
``shape`` (of the returned array), ``datatype`` (on-disk dtype), ``xyz_units``, ``t_units``,
``tr`` (time step in ``t_units`` for 4D volumes), ``qform_code``, ``sform_code``, ``format``
(``"NIfTI-1"``/``"NIfTI-2"``). Free-text header fields (``descrip``, ``aux_file``,
``db_name``, ``intent_name``) are not copied.

Complex, RGB and >4D (with non-singleton extra axes) images, non-NIfTI and corrupt or
truncated files raise :class:`~mriprior.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mriprior.errors import InputError

__all__ = ["read_nifti"]

_NIFTI_TYPES = (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair)
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, zlib.error, struct.error,
                ImageFileError, HeaderDataError, MemoryError)


def read_nifti(path: str | os.PathLike, canonical: bool = True) -> tuple[np.ndarray, dict]:
    """Read a NIfTI volume as float32 ``(X, Y, Z[, T])`` plus metadata (see module docstring).

    ``canonical=True`` reorients to the closest RAS+ axis order (flips/permutations only).
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a NIfTI file")
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        img = nib.load(p)
    except _READ_ERRORS as e:
        raise InputError(f"{p}: not a readable NIfTI file ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from e
    if not isinstance(img, _NIFTI_TYPES):
        raise InputError(f"{p}: {type(img).__name__} file, not NIfTI")
    hdr = img.header
    dtype = hdr.get_data_dtype()
    if dtype.names is not None or np.issubdtype(dtype, np.complexfloating):
        kind = "complex" if dtype.names is None else "RGB/structured"
        raise InputError(f"{p}: NIfTI datatype {dtype} ({kind}); read_nifti reads real-valued "
                         "magnitude volumes")
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise InputError(f"{p}: NIfTI shape {tuple(img.shape)} has more than 4 non-singleton "
                         "axes; read_nifti returns (X, Y, Z[, T])")
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except _READ_ERRORS as e:
        raise InputError(f"{p}: corrupt or truncated NIfTI data ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from e
    data = data.reshape(shape)
    if data.ndim < 3:
        data = data.reshape(shape + (1,) * (3 - data.ndim))
    affine = np.asarray(img.affine, dtype=np.float64)
    original = "".join(nib.aff2axcodes(affine))
    if canonical:
        canon = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
        data = np.asarray(canon.dataobj, dtype=np.float32)
        affine = np.asarray(canon.affine, dtype=np.float64)
    data = np.ascontiguousarray(data, dtype=np.float32)

    xyz_units, t_units = hdr.get_xyzt_units()
    zooms = hdr.get_zooms()
    meta = {
        "format": "NIfTI-2" if isinstance(img, (nib.Nifti2Image, nib.Nifti2Pair)) else "NIfTI-1",
        "shape": list(data.shape),
        "affine": affine.tolist(),
        "voxel_sizes_mm": [float(v) for v in nib.affines.voxel_sizes(affine)],
        "orientation": "".join(nib.aff2axcodes(affine)),
        "original_orientation": original,
        "canonical": bool(canonical),
        "datatype": str(dtype),
        "xyz_units": xyz_units,
        "t_units": t_units,
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
    }
    if data.ndim == 4 and len(zooms) > 3:
        meta["tr"] = float(zooms[3])
    return data, meta
