"""Import DICOM / NIfTI / PNG / JPEG / fastMRI HDF5 / BART cfl files into an mriprior dataset.

    mriprior data import ARCHIVE/ --out data/clinical                  # 256 x 256, max-normalised
    mriprior data import a.nii.gz b.nii.gz --out data/t1 --axis z y   # axial + coronal slices
    mriprior data import knee/*.h5 --out data/knee --combine espirit  # complex coil-combined
    mriprior data import scans/ --out data/s --shape 320 320 --resize crop --workers 4

SRC: files or folders (walked recursively, sorted). Every slice becomes --shape Y X: "fit"
resamples it (antialiased bilinear) to fit inside and zero-pads, "crop" centre-crops / pads,
"none" skips slices of another shape. --normalize divides each slice by its max magnitude
("max"), its 99th percentile ("p99") or nothing; the factor is kept per slice ("scale").
Slices of a volume with almost no signal (fewer than 1 % of the pixels above --min-signal x the
volume's max) are dropped. --kind auto gives a complex dataset when every slice is complex
(fastMRI with --combine espirit, cfl), else magnitude.

Subjects (DICOM PatientID, else the file for volumes and the folder for PNG/JPEG;
--subject-from forces file or dir) are stored only as salted hashes; the salt is --salt, else a
per-user secret in ~/.config/mriprior/salt ($XDG_CONFIG_HOME, $MRIPRIOR_SALT_FILE). Splits
(--split train val test) are by subject. DICOM paths are stored hashed, other paths relative to
their SRC. Files that cannot be imported are skipped and listed with the reason; the dataset is
written atomically (an interrupted import leaves nothing). Full rules: mriprior.data.importers.

Afterwards the import reports how many val / test slices have a near-duplicate in train
(archives often hold one image under several names, which a split by subject cannot see):
`mriprior data dedup` (report) and `mriprior data dedup --out` (remove them). Skipped with
--no-dedup-check, and above --dedup-check-max slices (the check compares every pair).
"""

from __future__ import annotations

import signal
import threading

from mriprior.data.importers import (AXES, COMBINES, KINDS, NORMALIZE_MODES, RESIZE_MODES,
                                     SUBJECT_FROM, format_summary, import_dataset)
from mriprior.errors import InputError


def add_arguments(p):
    p.add_argument("sources", nargs="*", metavar="SRC", help="files or folders to import")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create")
    p.add_argument("--shape", nargs=2, type=int, default=[256, 256], metavar=("Y", "X"),
                   help="slice shape (default 256 256)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="fit",
                   help="fit: resample + pad (default); crop: crop/pad; none: exact shape only")
    p.add_argument("--normalize", choices=NORMALIZE_MODES, default="max",
                   help="per-slice intensity normalisation (default max)")
    p.add_argument("--axis", nargs="+", choices=AXES, default=["z"], dest="axes",
                   help="NIfTI slicing axes of the RAS+ volume (default z: axial)")
    p.add_argument("--kind", choices=KINDS, default="auto", help="dataset kind (default auto)")
    p.add_argument("--combine", choices=COMBINES, default="espirit",
                   help="fastMRI coil combination: espirit (complex, default) or rss (magnitude)")
    p.add_argument("--split", nargs=3, type=float, default=[0.8, 0.1, 0.1],
                   metavar=("TRAIN", "VAL", "TEST"), help="split fractions (default 0.8 0.1 0.1)")
    p.add_argument("--salt", default=None, help="salt for subject hashes (default: per-user "
                                                "secret)")
    p.add_argument("--subject-from", choices=SUBJECT_FROM, default="auto",
                   help="subject of a slice: auto, its file, or its folder")
    p.add_argument("--min-signal", type=float, default=0.05,
                   help="empty-slice threshold, fraction of the volume max (default 0.05)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing --out dataset")
    p.add_argument("--no-dedup-check", dest="dedup_check", action="store_false",
                   help="do not look for near-duplicates across the splits after the import")
    p.add_argument("--dedup-check-max", type=int, default=20000, metavar="N",
                   help="skip that check above N slices (default 20000)")


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: the half-built dataset is removed


def run(args):
    from mriprior.cli._common import progress_bar

    if not args.sources:
        raise InputError("no SRC given: name the files or folders to import")
    progress = progress_bar("importing", "file", dynamic_ncols=True)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        summary = import_dataset(
            args.sources, args.out, shape=tuple(args.shape), resize=args.resize,
            normalize=args.normalize, axes=tuple(args.axes), kind=args.kind,
            combine=args.combine, split=tuple(args.split), salt=args.salt,
            subject_from=args.subject_from, workers=args.workers, overwrite=args.force,
            min_signal=args.min_signal, progress=progress)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        progress.close()
    print(format_summary(summary))
    if args.dedup_check:
        print(split_leakage_report(summary["out"], summary["count"], args.dedup_check_max))


def split_leakage_report(out, count: int, max_slices: int) -> str:
    """One or two lines on near-duplicates across the splits of the imported dataset ``out``."""
    if count > max_slices:
        return (f"  near-duplicate check skipped ({count} slices > --dedup-check-max "
                f"{max_slices}): run `mriprior data dedup --in {out}`")
    from mriprior.data.dataset import open_dataset
    from mriprior.data.dedup import leakage, near_duplicate_groups

    ds = open_dataset(out)
    groups = near_duplicate_groups(ds, size=min(64, *ds.shape))
    leak = leakage(ds, groups)
    held = ", ".join(f"{s} {v['with_train_duplicate']} of {v['slices']}" for s, v in leak.items())
    if not any(v["with_train_duplicate"] for v in leak.values()):
        return (f"  near-duplicates: {len(groups)} groups; no val / test slice has one in train")
    return (f"  WARNING: held-out slices with a near-duplicate in train: {held} ({len(groups)} "
            f"groups, correlation >= 0.99): the test set leaks into training. Remove them "
            f"with `mriprior data dedup --in {out} --out DEDUPLICATED`")
