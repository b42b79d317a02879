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


from mriprior.data.importers.options import (
    AXES, COMBINES, EMPTY_FRACTION, FORMATS, KINDS, NORMALIZE_MODES, RESIZE_MODES, SPLITS,
    SUBJECT_FROM,
)
from mriprior.data.importers.subjects import load_salt, salt_file, split_of, subject_hash
from mriprior.data.importers.geometry import fit_slice, is_empty, normalize_slice
from mriprior.data.importers.pipeline import format_summary, import_dataset

__all__ = ["import_dataset", "format_summary", "salt_file", "load_salt", "subject_hash",
           "split_of", "fit_slice", "normalize_slice", "is_empty", "FORMATS", "AXES", "COMBINES",
           "EMPTY_FRACTION", "KINDS", "NORMALIZE_MODES", "RESIZE_MODES", "SPLITS", "SUBJECT_FROM"]
