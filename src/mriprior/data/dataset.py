"""The mriprior dataset format: sharded, memory-mappable arrays plus a JSON manifest.

A dataset is a folder::

    DIR/manifest.json
    DIR/shards/shard-00000.npy   (n, y, x) float32 (magnitude) or complex64 (complex)
    DIR/shards/shard-00001.npy   ...

Every slice of a dataset has the same ``(y, x)`` shape (importers resize / crop / pad to it and
record how). ``manifest.json`` holds::

    {"format": "mriprior-dataset", "version": 1,
     "kind": "magnitude" | "complex", "dtype": "float32" | "complex64", "shape": [y, x],
     "count": N, "shards": [{"file": "shards/shard-00000.npy", "count": n}, ...],
     "options": {...how it was made...}, "provenance": {...}, "summary": {...},
     "slices": [{"source": ..., "subject": ..., "index": ..., "original_shape": [...],
                 "scale": ..., "split": "train" | "val" | "test", ...}, ...]}

Slice i lives in the shard that covers it, in manifest order. Writing is atomic:
:class:`DatasetWriter` builds the dataset in a temporary sibling folder and renames it into
place when it is complete, so an interrupted import never leaves a half-written dataset.
:func:`open_dataset` validates the manifest and memory-maps the shards (nothing is read until a
slice is used).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mriprior.errors import InputError
from mriprior.io.files import DIR_MODE, atomic_write_json, check_replaceable, named_oserror

__all__ = ["DatasetWriter", "Dataset", "open_dataset", "open_magnitude_source", "check_output",
           "is_dataset", "move_into_place", "copy_licences", "FORMAT", "VERSION"]

FORMAT = "mriprior-dataset"
VERSION = 1
KINDS = {"magnitude": np.float32, "complex": np.complex64}
SPLITS = ("train", "val", "test")


def is_dataset(path) -> bool:
    """True when ``path`` holds an mriprior dataset manifest (the only folders --force replaces)."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_output(out, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and then only if it is an mriprior
    dataset or an empty folder (never a user's folder of other files)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists (use overwrite / --force to replace it)")
    check_replaceable(out, is_dataset, "an mriprior dataset")


def move_into_place(built, out) -> None:
    """Rename the finished folder ``built`` to ``out``; an existing ``out`` is moved aside first
    and removed only once the new one is in place."""
    built, out = Path(built), Path(out)
    old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
    if old is not None:
        os.replace(out, old)
    os.replace(built, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _locate(starts: np.ndarray, i: int) -> tuple[int, int]:
    """``(shard, offset)`` of item ``i`` (negative counts from the end) given the shards' start
    indices ``starts`` (``starts[-1]``: the item count); IndexError when out of range."""
    n = int(starts[-1])
    if not -n <= i < n:
        raise IndexError(f"slice {i} out of range for {n} slices")
    i %= n
    s = int(np.searchsorted(starts, i, side="right") - 1)
    return s, int(i - starts[s])


class DatasetWriter:
    """Build a dataset slice by slice; commit it atomically on ``close()`` / leaving ``with``.

    ``kind``: "magnitude" (float32) or "complex" (complex64); ``shape``: the common (y, x).
    ``overwrite``: replace an existing dataset at ``out_dir`` (the old one is removed only after
    the new one is complete). If the ``with`` block raises, nothing is written.
    """

    def __init__(self, out_dir, kind: str, shape, shard_size: int = 1024,
                 options: dict | None = None, provenance: dict | None = None,
                 overwrite: bool = False):
        if kind not in KINDS:
            raise InputError(f"dataset kind must be one of {sorted(KINDS)}, not {kind!r}")
        self.out = Path(out_dir)
        check_output(self.out, overwrite)
        self.kind, self.dtype = kind, KINDS[kind]
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise InputError(f"dataset shape must be (y, x) with positive sizes, got {shape}")
        self.shard_size = int(shard_size)
        self.options = dict(options or {})
        self.provenance = dict(provenance or {})
        self.overwrite = overwrite
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.tmp-"))
        os.chmod(self.tmp, DIR_MODE)  # mkdtemp makes 0700; give what mkdir() would
        (self.tmp / "shards").mkdir()
        self.records: list[dict] = []
        self.shards: list[dict] = []
        self._buf: list[np.ndarray] = []
        self.summary: dict = {}
        self._closed = False

    def add(self, image, record: dict) -> None:
        """Append one slice ``(y, x)`` with its manifest record (JSON-serialisable dict)."""
        a = np.asarray(image)
        if a.shape != self.shape:
            raise InputError(f"slice shape {a.shape} != dataset shape {self.shape} "
                             f"(source {record.get('source')!r})")
        if self.kind == "magnitude" and np.iscomplexobj(a):
            raise InputError(f"complex slice given to a magnitude dataset "
                             f"(source {record.get('source')!r})")
        if not np.isfinite(a).all():
            raise InputError(f"slice contains NaN/Inf (source {record.get('source')!r})")
        split = record.get("split", "train")
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, not {split!r}")
        self._buf.append(a.astype(self.dtype, copy=False))
        self.records.append(dict(record, split=split))
        if len(self._buf) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        name = f"shards/shard-{len(self.shards):05d}.npy"
        try:
            np.save(self.tmp / name, np.stack(self._buf))
        except OSError as e:  # numpy reports a short write without errno or file name
            raise named_oserror(e, self.out) from None
        self.shards.append({"file": name, "count": len(self._buf)})
        self._buf = []

    def close(self) -> Path:
        """Write the manifest and move the dataset into place. Returns its path."""
        if self._closed:
            return self.out
        self._flush()
        manifest = {"format": FORMAT, "version": VERSION, "kind": self.kind,
                    "dtype": np.dtype(self.dtype).name, "shape": list(self.shape),
                    "count": len(self.records), "shards": self.shards,
                    "options": self.options, "provenance": self.provenance,
                    "summary": self.summary, "slices": self.records}
        atomic_write_json(self.tmp / "manifest.json", manifest)
        move_into_place(self.tmp, self.out)
        self._closed = True
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class Dataset:
    """A read-only, memory-mapped dataset (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        try:
            with open(mpath) as f:
                m = json.load(f)
        except FileNotFoundError:
            raise InputError(f"{mpath}: not found: {self.path} is not an mriprior dataset") from None
        except json.JSONDecodeError as e:
            raise InputError(f"{mpath}: invalid JSON ({e})") from None
        for key in ("format", "version", "kind", "shape", "count", "shards", "slices"):
            if key not in m:
                raise InputError(f"{mpath}: missing key {key!r}")
        if m["format"] != FORMAT or m["version"] != VERSION:
            raise InputError(f"{mpath}: unsupported format {m['format']!r} v{m['version']}")
        if m["kind"] not in KINDS:
            raise InputError(f"{mpath}: unknown kind {m['kind']!r}")
        self.manifest = m
        self.kind = m["kind"]
        self.shape = tuple(m["shape"])
        self.records = m["slices"]
        if len(self.records) != m["count"] or sum(s["count"] for s in m["shards"]) != m["count"]:
            raise InputError(f"{mpath}: slice count {m['count']} disagrees with its shards / "
                             "records")
        self._arrays = []
        for s in m["shards"]:
            p = self.path / s["file"]
            try:
                a = np.load(p, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                raise InputError(f"{p}: shard missing") from None
            except ValueError as e:
                raise InputError(f"{p}: unreadable shard ({e})") from None
            if a.shape != (s["count"],) + self.shape or a.dtype != KINDS[self.kind]:
                raise InputError(f"{p}: holds {a.dtype} {a.shape}, manifest says "
                                 f"{np.dtype(KINDS[self.kind]).name} "
                                 f"{(s['count'],) + self.shape}")
            self._arrays.append(a)
        self._starts = np.cumsum([0] + [s["count"] for s in m["shards"]])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> np.ndarray:
        s, j = _locate(self._starts, i)
        return self._arrays[s][j]

    def indices(self, split: str | None = None) -> np.ndarray:
        """Slice indices of one split ("train", "val", "test"), or all."""
        if split is None:
            return np.arange(len(self))
        return np.array([i for i, r in enumerate(self.records) if r.get("split") == split],
                        dtype=np.int64)


def open_dataset(path) -> Dataset:
    return Dataset(path)


def open_magnitude_source(src, out, expects: str) -> Dataset:
    """Open the magnitude dataset ``src`` that a job turns into ``out``: InputError when ``out``
    is ``src`` itself or ``src`` is not a magnitude dataset (``expects`` ends that message)."""
    if Path(src).resolve() == Path(out).resolve():
        raise InputError(f"--out {out} is the input dataset; choose another folder")
    ds = open_dataset(src)
    if ds.kind != "magnitude":
        raise InputError(f"{src}: a {ds.kind!r} dataset; {expects}")
    return ds


def copy_licences(src, dest: Path) -> None:
    """Copy ``LICENSES.md`` and ``licenses/`` of dataset ``src`` into folder ``dest`` (what a
    dataset made from another carries along)."""
    for name in ("LICENSES.md", "licenses"):
        p = Path(src) / name
        if p.is_dir():
            shutil.copytree(p, dest / name)
        elif p.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest / name)
