"""A random subset of a dataset, or the union of several, as a new dataset (same kind, shape and
split of every slice).

Used to size an experiment to a compute budget (e.g. phase-augment 1,000 slices of a clinical
archive on a CPU) and for small-vs-large data comparisons. The pick is a seeded random
permutation of the eligible slices (those in ``splits``), kept in the source order, so the same
(source, n, splits, seed) always gives the same subset, and a larger ``n`` with the same seed
gives a superset; splits named in ``keep`` come along whole (a smaller training set with the
same validation set). Each record keeps its source record and gains ``"subset_of": index in the
source``; the manifest's ``options.subset`` records the source, n, splits and seed. Licence
files of the source (``LICENSES.md``, ``licenses/``) are carried along.

:func:`merge_datasets` writes the union of several datasets of one kind and shape (e.g. the open
corpus with a simulated phase and a clinical archive with a generated phase, to train one prior
on both), in the order given; ``splits`` limits what each source contributes (e.g. only
``train``, so the merged validation set stays the first source's). Each record keeps its source
record and gains ``"merged_from": [source number, index in that source]``; ``options.merge``
lists every source with its manifest hash and options; licence files go to
``licenses/<number>-<source name>/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mriprior.data.dataset import SPLITS, DatasetWriter, copy_licences, open_dataset
from mriprior.errors import InputError
from mriprior.io.files import locks_output, sha256_file

__all__ = ["subset_indices", "subset_dataset", "merge_datasets"]


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
        copy_licences(src, w.tmp)
    counts = {s: int(sum(ds.records[int(i)].get("split") == s for i in idx)) for s in SPLITS}
    return {"out": str(out), "count": len(idx), "splits": counts}


@locks_output("out", "data merge")
def merge_datasets(sources, out, splits=SPLITS, overwrite: bool = False) -> dict:
    """Write the slices of every dataset in ``sources`` whose split is in ``splits`` (all by
    default) to the new dataset ``out`` (atomically), source by source in order. The sources
    must share kind and shape."""
    if len(sources) < 2:
        raise InputError(f"merging needs at least two datasets, got {len(sources)}")
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise InputError(f"unknown split(s) {bad}: choose from {SPLITS}")
    dss = [open_dataset(src) for src in sources]
    for src, ds in zip(sources[1:], dss[1:]):
        if (ds.kind, tuple(ds.shape)) != (dss[0].kind, tuple(dss[0].shape)):
            raise InputError(f"{src}: a {ds.kind} dataset of {tuple(ds.shape)} slices cannot be "
                             f"merged with {sources[0]} ({dss[0].kind}, {tuple(dss[0].shape)})")
    picks = [np.concatenate([ds.indices(s) for s in splits]) for ds in dss]
    options = {"merge": {"splits": list(splits), "sources": [
        {"source": str(src), "count": int(len(idx)),
         "manifest_sha256": sha256_file(Path(src) / "manifest.json"),
         "options": ds.manifest.get("options", {})}
        for src, ds, idx in zip(sources, dss, picks)]}}
    provenance = {"tool": "mriprior data merge",
                  "sources": [ds.manifest.get("provenance", {}) for ds in dss]}
    with DatasetWriter(out, dss[0].kind, dss[0].shape, options=options, provenance=provenance,
                       overwrite=overwrite) as w:
        for k, (src, ds, idx) in enumerate(zip(sources, dss, picks)):
            for i in np.sort(idx):
                w.add(np.array(ds[int(i)]), dict(ds.records[int(i)], merged_from=[k, int(i)]))
            copy_licences(src, w.tmp / "licenses" / f"{k}-{Path(src).name}")
    counts = {s: int(sum(len(ds.indices(s)) for ds in dss)) if s in splits else 0
              for s in SPLITS}
    return {"out": str(out), "count": int(sum(len(i) for i in picks)), "splits": counts}
