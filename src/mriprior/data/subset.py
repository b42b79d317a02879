"""A random subset of a dataset, as a new dataset (same kind, shape and split of every slice).

Used to size an experiment to a compute budget (e.g. phase-augment 1,000 slices of a clinical
archive on a CPU) and for small-vs-large data comparisons. The pick is a seeded random
permutation of the eligible slices (those in ``splits``), kept in the source order, so the same
(source, n, splits, seed) always gives the same subset, and a larger ``n`` with the same seed
gives a superset; splits named in ``keep`` come along whole (a smaller training set with the
same validation set). Each record keeps its source record and gains ``"subset_of": index in the
source``; the manifest's ``options.subset`` records the source, n, splits and seed. Licence
files of the source (``LICENSES.md``, ``licenses/``) are carried along.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mriprior.data.dataset import SPLITS, DatasetWriter, open_dataset
from mriprior.errors import InputError
from mriprior.io.files import locks_output

__all__ = ["subset_indices", "subset_dataset"]


def subset_indices(records: list[dict], n: int, splits=SPLITS, seed: int = 0) -> np.ndarray:
    """Indices (ascending) of ``n`` slices drawn without replacement from those whose split is
    in ``splits``; the first ``n`` of one seeded permutation (prefix-stable in ``n``)."""
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise InputError(f"unknown split(s) {bad}: choose from {SPLITS}")
    eligible = np.array([i for i, r in enumerate(records) if r.get("split") in splits],
                        dtype=np.int64)
    if n < 1 or n > len(eligible):
        raise InputError(f"subset size {n}: the source has {len(eligible)} slices in splits "
                         f"{list(splits)}")
    perm = np.random.default_rng(seed).permutation(len(eligible))
    return np.sort(eligible[perm[:n]])


@locks_output("out", "data subset")
def subset_dataset(src, out, n: int, splits=SPLITS, seed: int = 0, keep=(),
                   overwrite: bool = False) -> dict:
    """Write ``n`` random slices of dataset ``src`` (drawn from ``splits``) plus every slice of
    the splits in ``keep`` (e.g. ``("val",)``: a smaller training set, the same validation
    set) to the new dataset ``out`` (atomically)."""
    ds = open_dataset(src)
    keep = tuple(keep)
    if set(keep) & set(splits) or any(k not in SPLITS for k in keep):
        raise InputError(f"kept splits {list(keep)} must be splits {SPLITS} not drawn from "
                         f"({list(splits)})")
    idx = subset_indices(ds.records, n, tuple(splits), seed)
    if keep:
        idx = np.union1d(idx, np.concatenate([ds.indices(k) for k in keep]))
    m = ds.manifest
    options = dict(m.get("options", {}),
                   subset={"source": str(src), "n": int(n), "splits": list(splits),
                           "keep": list(keep), "seed": int(seed), "source_count": len(ds)})
    with DatasetWriter(out, ds.kind, ds.shape, options=options,
                       provenance=m.get("provenance", {}), overwrite=overwrite) as w:
        for i in idx:
            w.add(np.array(ds[int(i)]), dict(ds.records[int(i)], subset_of=int(i)))
        for name in ("LICENSES.md", "licenses"):
            p = Path(src) / name
            if p.is_dir():
                shutil.copytree(p, w.tmp / name)
            elif p.is_file():
                shutil.copy2(p, w.tmp / name)
    counts = {s: int(sum(ds.records[int(i)].get("split") == s for i in idx)) for s in SPLITS}
    return {"out": str(out), "count": len(idx), "splits": counts}
