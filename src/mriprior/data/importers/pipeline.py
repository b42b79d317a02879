"""The import job: units decoded (in a worker pool), slices written, skips and summary."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mriprior.data.dataset import DatasetWriter, check_output
from mriprior.errors import InputError
from mriprior.data.importers.decode import _process, _unspool, _worker, _worker_init
from mriprior.data.importers.discover import _Skip, _discover
from mriprior.data.importers.options import (EMPTY_FRACTION, FORMATS, HASH_CHARS, SPLITS,
                                             _Options, _options)
from mriprior.data.importers.subjects import load_salt, split_of, subject_hash
from mriprior.io.files import locks_output


# =============================================================================================
# writing

class _Sink:
    """Adds slices to a DatasetWriter whose kind may only be known once the first magnitude
    slice arrives (kind="auto" with both magnitude and complex sources): until then complex
    slices are spilled to an anonymous temporary file next to the output."""

    def __init__(self, kind: str | None, writer_args: dict):
        self.kind = kind
        self.args = writer_args
        self.writer: DatasetWriter | None = None
        self.spill = None
        self.spilled: list[dict] = []
        if kind is not None:
            self._open(kind)

    def _open(self, kind):
        self.kind = kind
        self.writer = DatasetWriter(kind=kind, **self.args)
        if self.spill is not None:
            self.spill.seek(0)
            n = int(np.prod(self.writer.shape))
            for rec in self.spilled:
                a = np.frombuffer(self.spill.read(8 * n), np.complex64).reshape(self.writer.shape)
                self._add(a, rec)
            self.spill.close()
            self.spill = None

    def _add(self, arr, rec):
        if self.kind == "magnitude" and np.iscomplexobj(arr):
            arr = np.abs(arr)
            rec = dict(rec, magnitude_of_complex=True)
        self.writer.add(arr, rec)

    def add(self, arr, rec):
        if self.kind is None:
            if not np.iscomplexobj(arr):
                self._open("magnitude")
            else:
                if self.spill is None:
                    parent = Path(self.args["out_dir"]).parent
                    self.spill = tempfile.TemporaryFile(dir=parent, prefix=".mriprior-spill-")
                self.spill.write(np.ascontiguousarray(arr, np.complex64).tobytes())
                self.spilled.append(rec)
                return
        self._add(arr, rec)

    @property
    def count(self) -> int:
        return len(self.writer.records) if self.writer is not None else len(self.spilled)

    def close(self, summary: dict) -> Path:
        if self.kind is None:
            self._open("complex")
        self.writer.summary = summary
        return self.writer.close()

    def abort(self):
        if self.spill is not None:
            self.spill.close()
        if self.writer is not None:
            self.writer.abort()


def _results(units, opts: _Options, workers: int, spool_parent: Path):
    """Yield ``_process`` results in unit order, decoding in parallel when ``workers > 1``
    (``spawn`` processes; the pixels come back through files in a hidden spool folder next to
    the output, removed at the end)."""
    if workers <= 1 or len(units) < 2:
        for u in units:
            yield _process(u, opts)
        return
    n = min(workers, len(units))
    chunk = max(1, min(16, len(units) // (n * 8)))
    ctx = multiprocessing.get_context("spawn")
    spool = tempfile.mkdtemp(dir=spool_parent, prefix=".mriprior-spool-")
    try:
        with ctx.Pool(n, initializer=_worker_init) as pool:
            for meta, n_empty, skips, path in pool.imap(
                    _worker, ((u, opts, spool) for u in units), chunksize=chunk):
                yield _unspool(meta, path), n_empty, skips
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _spellings(path: str) -> list[str]:
    """Every way a reader may have written ``path`` in a message, longest first."""
    variants = {path, os.path.abspath(path), str(Path(path).resolve())}
    for suffix in (".cfl", ".hdr"):
        variants |= {v[:-len(suffix)] for v in list(variants) if v.endswith(suffix)}
    return sorted(variants, key=len, reverse=True)


def _strip_path(reason: str, path: str, shown: str) -> str:
    """The reason without its leading ``path: `` and with other mentions replaced by ``shown``."""
    for v in _spellings(path):
        if reason.startswith(v + ": "):
            reason = reason[len(v) + 2:]
            break
    for v in _spellings(path):
        reason = reason.replace(v, shown)
    return reason


_DICOM_REASONS = (("no pixel data", "DICOM file without pixel data (not an image)"),
                  ("colour DICOM", "colour DICOM image (only grayscale images are imported)"),
                  ("cannot decode pixel data", "compressed pixel data and no decoder installed"),
                  ("kind='complex'", "magnitude-only source and kind='complex'"),
                  ("empty-slice", "no non-empty slice (below the empty-slice threshold)"),
                  ("resize='none'", "slice shape is not the dataset shape and resize='none'"),
                  ("smaller than", "slice smaller than 4 pixels on a side"))


def _manifest_reason(skip: _Skip, shown: str) -> str:
    """The reason as the manifest stores it: DICOM reasons are reduced to a fixed category, as
    messages passed on from pydicom may quote attribute values."""
    if skip.fmt != "dicom":
        return _strip_path(skip.reason, skip.path, shown)
    for needle, category in _DICOM_REASONS:
        if needle in skip.reason:
            return category
    return "unreadable or unsupported DICOM file"


def _command(opts: _Options, n_sources: int, salt_given: bool) -> str:
    parts = [f"mriprior data import <{n_sources} source{'s' * (n_sources != 1)}> --out <DIR>",
             f"--shape {opts.shape[0]} {opts.shape[1]}", f"--resize {opts.resize}",
             f"--normalize {opts.normalize}", "--axis " + " ".join(opts.axes),
             f"--kind {opts.kind}", f"--combine {opts.combine}",
             "--split " + " ".join(f"{f:g}" for f in opts.split),
             f"--subject-from {opts.subject_from}", f"--min-signal {opts.min_signal:g}"]
    if salt_given:
        parts.append("--salt <given>")
    return " ".join(parts)


def _provenance(opts, n_sources, salt_given) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from mriprior import __version__

    prov = {"tool": "mriprior data import", "mriprior": __version__,
            "command": _command(opts, n_sources, salt_given), "numpy": np.__version__}
    for dist in ("pillow", "pydicom", "nibabel", "h5py", "torch"):
        try:
            prov[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return prov


def _kind_up_front(opts: _Options, units) -> str | None:
    if opts.kind != "auto":
        return opts.kind
    kinds = {u.complex for u in units}
    if kinds == {True}:
        return "complex"
    return "magnitude" if True not in kinds else None


def format_summary(summary: dict) -> str:
    """Human-readable report of an import (the CLI prints it)."""
    f = summary["files"]
    lines = [f"imported {summary['count']} slices ({summary['kind']}, "
             f"{summary['shape'][0]} x {summary['shape'][1]}) from {f['imported']} of "
             f"{f['found']} files into {summary['out']} in {summary['seconds']:.1f} s",
             "  splits: " + ", ".join(f"{k} {v['slices']} slices / {v['subjects']} subjects"
                                      for k, v in summary["splits"].items())]
    if summary["empty_slices"]:
        lines.append(f"  {summary['empty_slices']} empty slices dropped")
    if summary["skipped"]:
        lines.append(f"  {len(summary['skipped'])} skipped:")
        lines += [f"    {s['path']}: {s.get('detail', s['reason'])}" for s in summary["skipped"]]
    return "\n".join(lines)


@locks_output("out_dir", "data import")
def import_dataset(sources, out_dir, *, shape=(256, 256), resize="fit", normalize="max",
                   axes=("z",), kind="auto", combine="espirit", split=(0.8, 0.1, 0.1),
                   salt=None, subject_from="auto", workers=1, overwrite=False, min_signal=0.05,
                   progress=None) -> dict:
    """Import image / k-space files into an mriprior dataset at ``out_dir`` (module docstring).

    ``sources``: files and/or folders. ``progress``: None, or a callable ``progress(done,
    total)`` called after each file/series is decoded. Returns the summary: ``count`` (slices),
    ``kind``, ``shape``, ``out``, ``files`` (found / imported / skipped), ``by_format``,
    ``empty_slices``, ``subjects``, ``splits`` (slices and subjects per split), ``skipped``
    (``[{"source", "reason", "path"}]``, one per file and reason) and ``seconds``. The manifest's
    ``summary`` holds the same without ``seconds``, ``out`` and the real ``path`` of skipped files.
    Raises InputError for bad options, no / missing sources, an existing ``out_dir`` without
    ``overwrite``, or when no slice at all could be imported; a KeyboardInterrupt or other
    exception leaves no output folder.
    """
    t0 = time.perf_counter()
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise InputError("no sources given: name files or folders to import")
    opts = _options(shape, resize, normalize, axes, kind, combine, split, subject_from,
                    min_signal)
    try:
        workers = int(workers)
    except (TypeError, ValueError):
        workers = 0
    if workers < 1:
        raise InputError(f"workers={workers!r}: must be a positive integer")
    out = Path(out_dir)
    check_output(out, overwrite)
    if salt is not None and not str(salt):
        raise InputError("salt='': give a non-empty salt, or none to use the per-user secret")
    salt_text = str(salt) if salt is not None else load_salt()

    units, pre_skips, n_files = _discover(sources, opts, out.resolve())
    skip_rows = list(pre_skips)
    if opts.kind == "complex":
        for u in [u for u in units if not u.complex]:
            for f, k in zip(u.files, u.keys):
                skip_rows.append(_Skip(f, k, "magnitude-only source and kind='complex' (use "
                                       "kind 'auto'/'magnitude', or add a phase with "
                                       "`mriprior data simulate`)", u.root, u.fmt))
        units = [u for u in units if u.complex]

    options = {"shape": list(opts.shape), "resize": opts.resize, "normalize": opts.normalize,
               "axes": list(opts.axes), "kind": opts.kind, "combine": opts.combine,
               "split": list(opts.split), "subject_from": opts.subject_from,
               "min_signal": opts.min_signal, "empty_fraction": EMPTY_FRACTION,
               "salt": "argument" if salt is not None else "per-user secret",
               "hash": f"sha256(salt + NUL + key)[:{HASH_CHARS}]",
               "source_paths": "relative to SRC; DICOM and skipped files hashed"}
    sink = _Sink(_kind_up_front(opts, units),
                 dict(out_dir=out, shape=opts.shape, options=options, overwrite=overwrite,
                      provenance=_provenance(opts, len(sources), salt is not None)))
    tally = _Tally(opts, salt_text, skip_rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = _results(units, opts, workers, out.parent)
    try:
        for done, (unit, result) in enumerate(zip(units, results), 1):
            tally.add(unit, *result, sink)
            if progress is not None:
                progress(done, len(units))
        skipped = _skip_entries(tally.skip_rows, tally.h)
        if sink.count == 0:
            first = "; ".join(f"{s['path']}: {s['detail']}" for s in skipped[:3])
            raise InputError(f"nothing to import: no slice could be read from {n_files} "
                             f"file(s) in {len(sources)} source(s)"
                             + (f" (e.g. {first})" if first else ""))
        summary = tally.summary(sink.count, n_files, skipped)
        path = sink.close(summary)
    except BaseException:
        sink.abort()
        raise
    finally:
        results.close()  # stops the worker pool, if any
    return dict(summary, kind=sink.kind, shape=list(opts.shape), out=str(path),
                skipped=skipped, seconds=time.perf_counter() - t0)


class _Tally:
    """Counts per format and split, subject hashes and skip rows while units are imported."""

    def __init__(self, opts, salt_text: str, skip_rows: list):
        self.opts, self.salt, self.skip_rows, self.hashes = opts, salt_text, skip_rows, {}
        self.by_format = {f: {"files": 0, "slices": 0} for f in FORMATS}
        self.per_split = {s: {"slices": 0, "subjects": set()} for s in SPLITS}
        self.n_empty = self.imported_files = 0

    def h(self, text: str) -> str:
        if text not in self.hashes:
            self.hashes[text] = subject_hash(self.salt, text)
        return self.hashes[text]

    def add(self, unit, slices, empty: int, skips, sink) -> None:
        """One decoded unit: its slices go to the sink with their records, its skips noted."""
        self.n_empty += empty
        used = {fi for fi, _, _ in slices}
        self.imported_files += len(used)
        self.by_format[unit.fmt]["files"] += len(used)
        self.by_format[unit.fmt]["slices"] += len(slices)
        dicom = unit.fmt == "dicom"
        series = {"series": "dicom:" + self.h("series:" + unit.series_key)} if dicom else {}
        for fi, arr, rec in slices:
            subj = self.h(unit.subjects[fi])
            sp = split_of(subj, self.opts.split)
            self.per_split[sp]["slices"] += 1
            self.per_split[sp]["subjects"].add(subj)
            source = "dicom:" + self.h("path:" + unit.keys[fi]) if dicom else unit.rels[fi]
            sink.add(arr, {"source": source, "root": unit.root, "format": unit.fmt,
                           **series, "subject": subj, "split": sp, **rec})
        for fi, reason in skips:
            self.skip_rows.append(_Skip(unit.files[fi], unit.keys[fi], reason, unit.root,
                                        unit.fmt))
        if not slices and not skips:
            self.skip_rows.append(_Skip(unit.files[0], unit.keys[0], "no non-empty slice (every "
                                        "slice is below the empty-slice threshold, "
                                        f"min_signal={self.opts.min_signal:g})", unit.root,
                                        unit.fmt))

    def summary(self, count: int, n_files: int, skipped: list) -> dict:
        return {"count": count,
                "files": {"found": n_files, "imported": self.imported_files,
                          "skipped": len({s["path"] for s in skipped})},
                "by_format": {k: v for k, v in self.by_format.items() if v["files"]},
                "empty_slices": self.n_empty,
                "subjects": sum(len(v["subjects"]) for v in self.per_split.values()),
                "splits": {k: {"slices": v["slices"], "subjects": len(v["subjects"])}
                           for k, v in self.per_split.items()},
                "skipped": [{"source": s["source"], "reason": s["reason"]} for s in skipped]}


def _skip_entries(rows, h) -> list[dict]:
    """Skip entries ordered by SRC then path, one per file and reason: ``source`` and ``reason``
    as the manifest stores them, plus ``path`` and ``detail`` (the full reason) for the caller."""
    out, seen = [], set()
    for skip in sorted(rows, key=lambda r: (r.root, r.key)):
        if (skip.path, skip.reason) in seen:
            continue
        seen.add((skip.path, skip.reason))
        shown = "skipped:" + h("path:" + skip.key)
        out.append({"source": shown, "reason": _manifest_reason(skip, shown), "path": skip.path,
                    "detail": _strip_path(skip.reason, skip.path, skip.path)})
    return out
