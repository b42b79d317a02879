"""Pack the compact sources of the GPU run (`bench/gpu/run.py`) into one folder to carry.

A lent GPU machine has no network and takes at most 64 MiB of working tree plus carried paths,
so the run builds its training data there from this pack (docs/gpu.md):

* ``pack.npz`` (NumPy's own format, no pickle):
    ``open_jpeg`` / ``open_offsets``         the open corpus's TRAIN slices (magnitude, max-
                                            normalised), each an 8-bit JPEG at quality 95
                                            (mean |error| ~ 0.0014 of the max, about one 8-bit
                                            level), concatenated, with byte offsets (n + 1);
    ``open_index``                          their indices in the source dataset (the phase seed);
    ``clinical_jpeg`` / ``clinical_offsets`` a seeded random subset of the clinical archive's
                                            original JPEG files, byte for byte;
    ``val`` / ``val_index``, ``test`` / ``test_index``
                                            the held-out complex slices (complex64) of the
                                            complex dataset that `bench/recon.py` evaluates on
                                            (`pick_slices`), with their dataset indices;
* ``real/ksp.{cfl,hdr}``, ``real/img.{cfl,hdr}``  the real 8-coil slice (optional);
* ``pack.json``: what went in (counts, sizes, SHA-256 of the source manifests, options).

Usage (after `mriprior data open --out data/open256` and `mriprior data simulate --in
data/open256 --out data/open256-complex --seed 0`):

    python bench/gpu/pack.py --open data/open256 --complex data/open256-complex \\
        --clinical ../shared/data/clinical-magnitude --real ../shared/data/brain-8coil-slice \\
        --out .gpu
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from mriprior.data.dataset import open_dataset
from mriprior.io.files import sha256_file
from mriprior.errors import InputError
from mriprior.experiments.recon_cases import pick_slices

JPEG_QUALITY = 95


def _concat(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, np.uint8)
    return data, offsets


def _jpeg(mag: np.ndarray) -> bytes:
    from PIL import Image

    u8 = np.clip(np.round(np.asarray(mag, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def clinical_files(folder, n: int, seed: int, only=None) -> list[Path]:
    """``n`` JPEG / PNG files of ``folder`` (recursive), a seeded random subset in sorted order;
    ``only``: the set of paths relative to ``folder`` that may be picked."""
    files = sorted(p for p in Path(folder).rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
    if only is not None:
        files = [p for p in files if str(p.relative_to(folder)) in only]
    if not files:
        raise InputError(f"{folder}: no JPEG / PNG files" + (
            "" if only is None else " among the training split's sources"))
    if n < len(files):
        pick = np.random.default_rng(seed).choice(len(files), n, replace=False)
        files = [files[i] for i in sorted(pick)]
    return files


def train_sources(dataset) -> set:
    """The ``source`` paths of the training split of an imported dataset (e.g. the clinical
    archive after `mriprior data dedup`: no held-out slice and no copy of one)."""
    return {r["source"] for r in open_dataset(dataset).records if r.get("split") == "train"}


def pack(open_path, complex_path, out, *, clinical=None, clinical_n=1800, clinical_from=None,
         real=None, n_val=2, n_test=8, seed=0, eval_path=None, log=print) -> dict:
    """Write the pack folder ``out`` (atomically: built beside it, then renamed). ``eval_path``:
    a complex dataset whose val / test splits give the evaluation slices instead of
    ``complex_path``'s (e.g. held-out clinical images with simulated phase). ``clinical_from``:
    an imported dataset of the ``clinical`` folder whose training split's sources are the only
    files drawn; required with ``eval_path``, whose slices may come from the same archive."""
    out = Path(out)
    if clinical is not None and eval_path is not None and clinical_from is None:
        raise InputError("--clinical with --eval: name the imported archive with --clinical-from "
                         "(e.g. data/clinical256-dedup) so that training draws only from its "
                         "training split, never an evaluation slice or a copy of one")
    mag = open_dataset(open_path)
    cplx = open_dataset(complex_path)
    if mag.kind != "magnitude":
        raise InputError(f"{open_path}: expected a magnitude dataset, got {mag.kind!r}")
    if cplx.kind != "complex" or len(cplx) != len(mag) or cplx.shape != mag.shape:
        raise InputError(f"{complex_path}: expected the complex version of {open_path} "
                         f"({len(mag)} slices of {mag.shape}), got {cplx.kind!r} "
                         f"{len(cplx)} x {cplx.shape}")
    train_idx = [i for i, r in enumerate(mag.manifest["slices"]) if r["split"] == "train"]
    blobs = [_jpeg(mag[i]) for i in train_idx]
    open_jpeg, open_offsets = _concat(blobs)
    ev = cplx if eval_path is None else open_dataset(eval_path)
    if ev.kind != "complex" or ev.shape != mag.shape:
        raise InputError(f"{eval_path}: expected a complex dataset of {mag.shape} slices, got "
                         f"{ev.kind!r} {ev.shape}")
    val_idx = pick_slices(ev, "val", n_val)
    test_idx = pick_slices(ev, "test", n_test)
    arrays = {
        "open_jpeg": open_jpeg, "open_offsets": open_offsets,
        "open_index": np.asarray(train_idx, dtype=np.int64),
        "val": np.stack([np.asarray(ev[i], dtype=np.complex64) for i in val_idx]),
        "val_index": np.asarray(val_idx, dtype=np.int64),
        "test": np.stack([np.asarray(ev[i], dtype=np.complex64) for i in test_idx]),
        "test_index": np.asarray(test_idx, dtype=np.int64),
    }
    files = []
    if clinical is not None:
        files = clinical_files(clinical, clinical_n, seed,
                               None if clinical_from is None else train_sources(clinical_from))
        arrays["clinical_jpeg"], arrays["clinical_offsets"] = _concat(
            [p.read_bytes() for p in files])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        np.savez(tmp / "pack.npz", **arrays)
        if real is not None:
            (tmp / "real").mkdir()
            for name in ("ksp.cfl", "ksp.hdr", "img.cfl", "img.hdr"):
                src = Path(real) / name
                if not src.is_file():
                    raise InputError(f"{src}: missing (the real slice needs ksp and img)")
                shutil.copyfile(src, tmp / "real" / name)
        info = {
            "format": "mriprior-gpu-pack", "version": 1, "shape": list(mag.shape),
            "open": {"dataset": str(open_path), "train_slices": len(train_idx),
                     "manifest_sha256": sha256_file(Path(open_path) / "manifest.json"),
                     "jpeg_quality": JPEG_QUALITY},
            "complex": {"dataset": str(complex_path),
                        "manifest_sha256": sha256_file(Path(complex_path) / "manifest.json"),
                        "simulate": cplx.manifest.get("options", {}).get("simulate"),
                        "val_index": val_idx, "test_index": test_idx},
            "eval": None if eval_path is None else {
                "dataset": str(eval_path),
                "manifest_sha256": sha256_file(Path(eval_path) / "manifest.json"),
                "simulate": ev.manifest.get("options", {}).get("simulate")},
            "clinical": None if clinical is None else {
                "folder": str(clinical), "files": len(files), "seed": seed,
                "train_split_of": None if clinical_from is None else {
                    "dataset": str(clinical_from),
                    "manifest_sha256": sha256_file(Path(clinical_from) / "manifest.json")},
                "names_sha256": hashlib.sha256("\n".join(
                    str(p.relative_to(clinical)) for p in files).encode()).hexdigest()},
            "real": None if real is None else str(real),
            "bytes": {k: int(v.nbytes) for k, v in arrays.items()},
        }
        (tmp / "pack.json").write_text(json.dumps(info, indent=1))
        if out.exists():  # only an earlier pack is replaced, never another folder
            if not (out / "pack.json").is_file():
                raise InputError(f"{out}: exists and is not a pack; choose another --out")
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"{out}: {len(train_idx)} open train slices ({open_jpeg.nbytes / 1e6:.1f} MB), "
        f"{len(files)} clinical files ({arrays.get('clinical_jpeg', np.zeros(0)).nbytes / 1e6:.1f}"
        f" MB), {len(val_idx)} val + {len(test_idx)} test slices; {total / 2**20:.1f} MiB in all")
    return {**info, "total_bytes": total}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--open", required=True, help="open corpus (magnitude dataset)")
    p.add_argument("--complex", required=True, help="its complex version (data simulate)")
    p.add_argument("--clinical", default=None, help="folder of clinical JPEG / PNG files")
    p.add_argument("--clinical-n", type=int, default=1800)
    p.add_argument("--clinical-from", default=None, metavar="DATASET",
                   help="draw clinical files only from this imported dataset's training split "
                        "(required with --eval; e.g. data/clinical256-dedup)")
    p.add_argument("--real", default=None, help="folder with the real slice's ksp / img")
    p.add_argument("--val", type=int, default=2)
    p.add_argument("--test", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", default=None,
                   help="complex dataset whose val / test splits are the evaluation slices "
                        "(default: those of --complex)")
    p.add_argument("--out", default=".gpu")
    a = p.parse_args(argv)
    try:
        pack(a.open, a.complex, a.out, clinical=a.clinical, clinical_n=a.clinical_n,
             clinical_from=a.clinical_from, real=a.real,
             n_val=a.val, n_test=a.test, seed=a.seed, eval_path=a.eval)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
