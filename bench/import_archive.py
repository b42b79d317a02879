"""Import-speed benchmark of ``mriprior data import`` on a real image archive (not a test).

Default archive: ../shared/data/clinical-magnitude/train (5,708 clinical brain MR JPEGs, mostly
224 x 224, in 4 class folders). Each run imports the whole folder into a fresh temporary dataset
at --shape (default 256 x 256, resize "fit", normalize "max") with the given number of worker
processes, then deletes it. Subjects are taken per file (--subject-from file): the archive's
folders are diagnosis classes, not patients, so the default (folder = subject for PNG/JPEG)
would put each class in a single split. A fixed salt keeps the run from creating the per-user
salt file.

Prints one JSON object: per run the wall time (seconds, including discovery and writing the
shards), images/s, slices written, files found, skipped files with their reasons, and whether
the dataset's bytes (manifest + shards, SHA-256) equal the first run's.

Usage: python bench/import_archive.py [--data DIR] [--workers 1 2] [--shape 256 256]
       [--tmp DIR] [--repeat 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mriprior import __version__
from mriprior.data.importers import import_dataset

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "clinical-magnitude" / "train"


def dataset_digest(path: Path) -> str:
    """SHA-256 over the manifest and the shards, in file-name order."""
    h = hashlib.sha256()
    for f in [path / "manifest.json"] + sorted((path / "shards").iterdir()):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def one_run(data: Path, workers: int, shape, tmp: Path) -> dict:
    work = Path(tempfile.mkdtemp(dir=tmp, prefix="mriprior-import-bench-"))
    try:
        out = work / "ds"
        t = time.perf_counter()
        s = import_dataset([data], out, shape=shape, workers=workers, subject_from="file",
                           salt="bench-import-archive")
        seconds = time.perf_counter() - t
        size = sum(f.stat().st_size for f in (out / "shards").iterdir())
        return {"workers": workers, "seconds": round(seconds, 2),
                "images_per_s": round(s["count"] / seconds, 1), "count": s["count"],
                "files_found": s["files"]["found"], "empty_slices": s["empty_slices"],
                "skipped": [{"path": os.path.relpath(e["path"], data), "reason": e["reason"]}
                            for e in s["skipped"]],
                "splits": {k: v["slices"] for k, v in s["splits"].items()},
                "dataset_mb": round(size / 2 ** 20, 1), "digest": dataset_digest(out)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--shape", type=int, nargs=2, default=[256, 256])
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--repeat", type=int, default=1, help="runs per worker count (best kept)")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"import_archive: {args.data}: not a folder (give --data)", file=sys.stderr)
        return 2
    runs = []
    for w in args.workers:
        best = None
        for _ in range(args.repeat):
            r = one_run(args.data, w, tuple(args.shape), args.tmp)
            if best is None or r["seconds"] < best["seconds"]:
                best = r
        runs.append(best)
    first = runs[0]["digest"]
    for r in runs:
        r["identical_to_first"] = r.pop("digest") == first
    print(json.dumps({"benchmark": "import_archive", "data": str(args.data),
                      "shape": args.shape, "mriprior": __version__,
                      "cpus": os.cpu_count(), "python": platform.python_version(),
                      "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
