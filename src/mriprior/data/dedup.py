"""Near-duplicate slices of a dataset: find them, report split leakage, write a deduplicated copy.

Archives of exported images often hold the same slice more than once (re-exported, re-encoded,
resized, under another file name), and a split by file or by a hashed name then puts copies of
one image in both the training and the test split: a prior evaluated on such a test slice has
seen it. Slices are compared by their magnitudes, area-averaged to ``size x size``, with the
mean removed and scaled to unit norm: two slices are near-duplicates when the correlation of
these fingerprints is at least ``threshold`` (default 0.99: the same image up to intensity
scale, offset, re-encoding and resampling; in the clinical archive, files with neighbouring
numbers, likely neighbouring slices of one scan, correlate 0.83-0.96 and are not merged).
Near-duplicates are grouped transitively (connected components).

:func:`dedup_dataset` keeps one slice per group: the first, in dataset order, of the group's
most protected split (``test``, then ``val``, then ``train``), so the held-out sets keep their
slices and the training set loses the copies of them. Each kept record gains ``"subset_of"``
(its index in the source); ``options.dedup`` records the source, threshold, size, and the
number of groups and dropped slices per split.
"""

from __future__ import annotations

import numpy as np

from mriprior.data.dataset import SPLITS, DatasetWriter, copy_licences, open_dataset
from mriprior.errors import InputError
from mriprior.io.files import locks_output

__all__ = ["fingerprints", "near_duplicate_groups", "leakage", "dedup_dataset"]

PROTECT = ("test", "val", "train")  # which split keeps a group's representative, in order


def _check(threshold: float, size: int) -> None:
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold {threshold}: a correlation in (0, 1]")
    if size < 4:
        raise InputError(f"fingerprint size {size}: at least 4")


def fingerprints(ds, size: int = 64, chunk: int = 256) -> np.ndarray:
    """``(n, size * size)`` float32: each slice's magnitude area-averaged to ``size x size``,
    mean removed, unit norm (all-constant slices give a zero row, equal to nothing)."""
    ny, nx = ds.shape
    if size > min(ny, nx):
        raise InputError(f"fingerprint size {size} exceeds the slices' shape {tuple(ds.shape)}")
    ey = np.linspace(0, ny, size + 1).astype(int)
    ex = np.linspace(0, nx, size + 1).astype(int)
    out = np.empty((len(ds), size * size), np.float32)
    for a in range(0, len(ds), chunk):
        b = min(a + chunk, len(ds))
        x = np.abs(np.stack([np.asarray(ds[i]) for i in range(a, b)])).astype(np.float64)
        x = np.add.reduceat(np.add.reduceat(x, ey[:-1], axis=1), ex[:-1], axis=2)
        x /= np.diff(ey)[None, :, None] * np.diff(ex)[None, None, :]
        x = x.reshape(b - a, -1)
        x -= x.mean(1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        out[a:b] = np.where(norm > 0, x / np.maximum(norm, 1e-30), 0.0)
    return out


def near_duplicate_groups(ds, threshold: float = 0.99, size: int = 64,
                          block: int = 1024) -> list[np.ndarray]:
    """Groups (ascending index arrays, each of two or more slices) of transitively
    near-duplicate slices of dataset ``ds``, in order of their first slice."""
    _check(threshold, size)
    f = fingerprints(ds, size)
    parent = np.arange(len(f))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(0, len(f), block):
        c = f[a:a + block] @ f[a:].T  # rows a.., columns a..: each pair once (j > i below)
        ii, jj = np.nonzero(c >= threshold - 1e-6)
        for i, j in zip(ii + a, jj + a):
            if j > i:
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(len(f))])
    groups = {}
    for i, r in enumerate(roots):
        groups.setdefault(int(r), []).append(i)
    return [np.array(g) for g in groups.values() if len(g) > 1]


def _splits(ds) -> list[str]:
    return [r.get("split", "train") for r in ds.records]


def leakage(ds, groups) -> dict:
    """Per held-out split: how many of its slices have a near-duplicate in ``train``."""
    split = _splits(ds)
    out = {}
    for s in ("val", "test"):
        n = sum(1 for x in split if x == s)
        leaked = sum(1 for g in groups for i in g
                     if split[i] == s and any(split[j] == "train" for j in g))
        out[s] = {"slices": n, "with_train_duplicate": leaked}
    return out


def _keep_mask(split: list[str], groups) -> np.ndarray:
    keep = np.ones(len(split), bool)
    for g in groups:
        rank = [PROTECT.index(split[i]) if split[i] in PROTECT else len(PROTECT) for i in g]
        keep[g] = False
        keep[g[int(np.argmin(rank))]] = True  # argmin: the first of the most protected split
    return keep


@locks_output("out", "data dedup")
def dedup_dataset(src, out, threshold: float = 0.99, size: int = 64,
                  overwrite: bool = False) -> dict:
    """Write dataset ``src`` without its near-duplicates (one slice kept per group, see the
    module docstring) to the new dataset ``out`` (atomically); returns the counts."""
    _check(threshold, size)
    ds = open_dataset(src)
    groups = near_duplicate_groups(ds, threshold, size)
    split = _splits(ds)
    keep = _keep_mask(split, groups)
    dropped = {s: int(sum(1 for i in np.nonzero(~keep)[0] if split[i] == s)) for s in SPLITS}
    report = {"source": str(src), "threshold": float(threshold), "size": int(size),
              "groups": len(groups), "dropped": dropped, "leakage": leakage(ds, groups)}
    m = ds.manifest
    with DatasetWriter(out, ds.kind, ds.shape, options=dict(m.get("options", {}), dedup=report),
                       provenance=m.get("provenance", {}), overwrite=overwrite) as w:
        for i in np.nonzero(keep)[0]:
            w.add(np.array(ds[int(i)]), dict(ds.records[int(i)], subset_of=int(i)))
        copy_licences(src, w.tmp)
    counts = {s: int(sum(1 for i in np.nonzero(keep)[0] if split[i] == s)) for s in SPLITS}
    return dict(report, out=str(out), count=int(keep.sum()), splits=counts)
