"""The archive-scale phase-augmentation job: magnitude dataset in, complex dataset out.

Work is cut into **chunks** of ``chunk`` consecutive input slices; chunk ``c`` is done by rank
``c % world_size`` (``RANK`` / ``WORLD_SIZE`` from ``torchrun``; no process group is needed) and
written, atomically (temporary name, then rename), to ``OUT.parts/chunk-CCCCCC.npz`` holding its
``samples x slices`` images and their manifest records. A chunk's content depends only on the
job's settings and ``c`` (its seed is derived from ``seed`` and ``c``), never on the number of
ranks or on earlier interruptions. When every chunk exists, rank 0 assembles them, in order,
into the output dataset (:class:`mriprior.data.dataset.DatasetWriter`: built in a temporary
folder, renamed into place) and removes ``OUT.parts``.

Resumable and idempotent: kill any rank at any moment and run the same command again; finished
chunks are kept, a chunk's temporary file is ignored and redone, an interrupted assembly is
redone, and a finished job says so and changes nothing. ``OUT.parts/job.json`` records the
job's settings; running again with different settings is refused (naming the setting), so two
different jobs never mix their chunks.

Each output record is the source slice's record plus ``"augment": {"method", "sample",
"source_index", "seed", "prior_sha256" (methods with a prior), "settings"}``; splits are kept, so
all samples of a test slice stay in the test split.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mriprior.augment.phase import (METHODS, conditional_phase, gan_phase, langevin_phase,
                                    smooth_phase, zero_phase)
from mriprior.data.dataset import DatasetWriter, check_output, open_magnitude_source
from mriprior.data.simulate import slice_seed
from mriprior.diffusion.losses import PARAMETRISATIONS
from mriprior.errors import InputError
from mriprior.launch import launch_env
from mriprior.io.files import atomic_write, locks_output, sha256_file, work_folder
from mriprior.priors.export import load_prior, prior_files, prior_kind
from mriprior.recon.priors import DiffusionPrior

__all__ = ["AugmentSettings", "augment_dataset", "work_dir"]

PARTS_SUFFIX = ".parts"
MODEL_METHODS = ("langevin", "conditional", "gan")


@dataclass
class AugmentSettings:
    """Everything that determines the output (recorded in ``job.json`` and the manifest)."""

    method: str
    samples: int = 1
    seed: int = 0
    chunk: int = 16
    prior: str | None = None          # path (for the record); the hash is what is checked
    prior_sha256: str | None = None
    langevin: dict = field(default_factory=lambda: {"n_levels": 10, "steps": 50, "eta": 0.15})
    conditional: dict = field(default_factory=lambda: {"n_levels": 200, "snr": 0.16})

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.samples < 1 or self.chunk < 1:
            raise InputError(f"samples and chunk must be >= 1 (got {self.samples}, "
                             f"{self.chunk})")
        if self.method in MODEL_METHODS and self.prior is None:
            raise InputError(f"method {self.method!r} needs a model (--prior)")
        if self.method not in MODEL_METHODS and self.prior is not None:
            raise InputError(f"method {self.method!r} takes no prior")

    def signature(self) -> dict:
        """The settings that must agree between runs writing the same chunks."""
        sig = {"method": self.method, "samples": self.samples, "seed": self.seed,
               "chunk": self.chunk}
        if self.method in ("langevin", "conditional"):
            sig.update({"prior_sha256": self.prior_sha256,
                        self.method: dict(getattr(self, self.method))})
        elif self.method == "gan":
            sig["prior_sha256"] = self.prior_sha256
        return sig


def work_dir(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTS_SUFFIX)


def _chunk_path(parts: Path, c: int) -> Path:
    return parts / f"chunk-{c:06d}.npz"


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k} ({a.get(k)!r} vs {b.get(k)!r})" for k in keys if a.get(k) != b.get(k))


class _Phaser:
    """Applies the method to one batch of magnitudes ``(b, y, x)``."""

    def __init__(self, settings: AugmentSettings, device):
        self.s, self.device, self.prior = settings, torch.device(device), None
        if settings.method == "gan":
            net, meta = load_prior(settings.prior, device=self.device)
            if prior_kind(meta) != "gan":
                raise InputError(f"{settings.prior}: not a phase GAN (prior_type "
                                 f"{prior_kind(meta)!r}); --method gan needs "
                                 "one trained with a `gan: true` config")
            self.prior = net
        elif settings.method in ("langevin", "conditional"):

            net, meta = load_prior(settings.prior, device=self.device)
            if prior_kind(meta) != "diffusion":
                raise InputError(f"{settings.prior}: a {prior_kind(meta)!r} model; --method "
                                 f"{settings.method} needs a diffusion model")
            channels = meta.get("data", {}).get("channels")
            conditional = bool(int(net.config.get("cond_channels", 0)))
            if channels != "complex" or meta.get("parametrisation") not in PARAMETRISATIONS:
                raise InputError(f"{settings.prior}: phase augmentation needs a complex "
                                 f"diffusion model (this one: {channels!r}, "
                                 f"{meta.get('parametrisation')!r})")
            if conditional != (settings.method == "conditional"):
                raise InputError(f"{settings.prior}: "
                                 + ("a conditional model: use --method conditional"
                                    if conditional else "an unconditional prior: use "
                                    "--method langevin"))
            self.prior = DiffusionPrior(net, meta)

    def __call__(self, mag: torch.Tensor, seeds: list[int], batch_seed: int, callback=None):
        mag = mag.to(self.device)
        if self.s.method == "zero":
            return zero_phase(mag)
        if self.s.method == "smooth":
            return smooth_phase(mag, seeds)
        with torch.no_grad():
            if self.s.method == "gan":
                return gan_phase(self.prior, mag, seed=batch_seed)
            if self.s.method == "conditional":
                return conditional_phase(self.prior, mag, seed=seeds, callback=callback,
                                         **self.s.conditional)
            return langevin_phase(self.prior, mag, seed=seeds, callback=callback,
                                  **self.s.langevin)


def _assemble(ds, src: Path, out: Path, parts: Path, job: dict, settings: AugmentSettings,
              n_chunks: int, log, poll_seconds: float) -> int:
    """Rank 0: wait for every chunk, write them in order as the output dataset (built under a
    temporary name, renamed into place), remove the work folder; returns the slice count."""
    from mriprior import __version__

    missing = [c for c in range(n_chunks) if not _chunk_path(parts, c).exists()]
    if missing:
        log(f"rank 0: waiting for {len(missing)} chunks of the other ranks")
    while missing:
        time.sleep(poll_seconds)
        missing = [c for c in missing if not _chunk_path(parts, c).exists()]
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # assemblies killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    options = {"augment": {"job": job, "prior": settings.prior, "tool_version": __version__},
               "source_options": ds.manifest.get("options", {})}
    provenance = {"tool": "mriprior augment", "version": __version__, "source_dataset": str(src),
                  "source_provenance": ds.manifest.get("provenance", {})}
    count = 0
    with DatasetWriter(out, "complex", ds.shape, options=options, provenance=provenance,
                       overwrite=True) as w:
        for c in range(n_chunks):
            images, records = _load_chunk(_chunk_path(parts, c))
            if len(images) != len(records):
                raise InputError(f"{_chunk_path(parts, c)}: {len(images)} images but "
                                 f"{len(records)} records; delete it and run again")
            for img, rec in zip(images, records):
                w.add(img, rec)
            count += len(images)
        expected = len(ds) * settings.samples
        if count != expected:
            raise InputError(f"{parts}: chunks hold {count} slices, expected {expected}")
        w.summary = {"count": count, "method": settings.method, "samples": settings.samples}
    shutil.rmtree(parts, ignore_errors=True)
    return count


def _source_hash(ds) -> str:
    return sha256_file(ds.path / "manifest.json")


def _do_chunk(ds, src_path, c, settings, phaser, batch, parts, callback=None) -> None:
    n = len(ds)
    lo, hi = c * settings.chunk, min(n, (c + 1) * settings.chunk)
    items = [(i, k) for i in range(lo, hi) for k in range(settings.samples)]
    images, records = [], []
    for b0 in range(0, len(items), batch):
        part = items[b0: b0 + batch]
        mag = torch.from_numpy(np.stack([np.asarray(ds[i], dtype=np.float32) for i, _ in part]))
        mag = mag.clamp_min(0)
        seeds = [slice_seed(settings.seed, i * settings.samples + k) for i, k in part]
        out = phaser(mag, seeds, slice_seed(settings.seed, c, 2) + b0, callback)
        images.append(out.cpu().numpy().astype(np.complex64))
        for (i, k), s in zip(part, seeds):
            rec = {"method": settings.method, "sample": k, "source_index": i, "seed": s,
                   "source_dataset": str(src_path)}
            if settings.prior_sha256:
                rec["prior_sha256"] = settings.prior_sha256
            records.append(dict(ds.records[i], augment=rec))
    arr = np.concatenate(images) if images else np.zeros((0,) + ds.shape, np.complex64)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images=arr, records=np.array(json.dumps(records)))
            f.flush()
            os.fsync(f.fileno())

    atomic_write(_chunk_path(parts, c), write)


def _load_chunk(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["images"], json.loads(str(z["records"]))
    except Exception as e:  # noqa: BLE001 - any unreadable chunk is reported by name
        raise InputError(f"{path}: unreadable chunk ({e}); delete it and run again") from None


def _finished(out: Path, job: dict) -> bool:
    m = out / "manifest.json"
    if not m.exists():
        return False
    try:
        done = json.loads(m.read_text()).get("options", {}).get("augment", {}).get("job")
    except json.JSONDecodeError:
        return False
    return done == job


@locks_output("out", "augment")
def augment_dataset(src, out, settings: AugmentSettings, *, batch: int = 8, device="cpu",
                    rank: int | None = None, world_size: int | None = None,
                    overwrite: bool = False, progress=None, log=print,
                    poll_seconds: float = 5.0) -> dict:
    """Run (or resume) the job; see the module docstring. Returns a summary dict.

    ``rank`` / ``world_size`` default to the ``RANK`` / ``WORLD_SIZE`` environment (torchrun).
    Rank 0 waits for the other ranks' chunks (polling the folder) and assembles the dataset;
    the other ranks return when their chunks are written. ``progress(done, total)`` counts this
    rank's chunks.
    """
    src, out = Path(src), Path(out)
    rank, world_size, _ = launch_env(rank, world_size)
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} out of range for world size {world_size}")
    ds = open_magnitude_source(src, out, "augmentation expects magnitudes")
    if settings.prior is not None and settings.prior_sha256 is None:
        weights, _ = prior_files(settings.prior)
        if not weights.exists():
            raise InputError(f"{weights}: prior weights not found")
        settings.prior_sha256 = sha256_file(weights)
    job = {"format": "mriprior-augment-job", "version": 1, "source": str(src),
           "source_manifest_sha256": _source_hash(ds), "count": len(ds),
           "settings": settings.signature()}
    if settings.method == "gan":  # its dropout noise is drawn per batch (the samplers': per item)
        job["batch"] = int(batch)
    parts = work_dir(out)
    finished = _finished(out, job)
    phaser = None if finished else _Phaser(settings, device)  # checks the model before any write
    if finished:
        if rank == 0 and parts.exists():
            shutil.rmtree(parts, ignore_errors=True)  # killed after the rename: tidy up
        log(f"{out}: already complete ({len(ds) * settings.samples} slices); nothing to do")
        return {"out": str(out), "count": len(ds) * settings.samples, "chunks_done": 0,
                "already_complete": True}
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists and is not this job's finished output "
                         "(use --force to replace it)")
    check_output(out, overwrite)
    created = work_folder(parts, job, lambda old, new: _diff(old.get("settings", {}),
                                                            new["settings"]) or _diff(old, new))
    n_chunks = -(-len(ds) // settings.chunk)
    mine = [c for c in range(n_chunks) if c % world_size == rank
            and not _chunk_path(parts, c).exists()]
    t0 = time.perf_counter()
    try:
        for j, c in enumerate(mine):
            _do_chunk(ds, src, c, settings, phaser, batch, parts)
            if progress is not None:
                progress(j + 1, len(mine))
    except BaseException:  # a failed first chunk (full disk, bad model) leaves nothing behind
        if created and world_size == 1 and not any(parts.glob("chunk-*.npz")):
            shutil.rmtree(parts, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - t0
    summary = {"out": str(out), "chunks_done": len(mine), "chunks": n_chunks,
               "seconds": elapsed, "rank": rank, "world_size": world_size}
    if mine:
        n_img = sum(min(len(ds), (c + 1) * settings.chunk) - c * settings.chunk for c in mine)
        summary["images_per_s"] = n_img * settings.samples / max(elapsed, 1e-9)
    if rank != 0:
        return summary
    count = _assemble(ds, src, out, parts, job, settings, n_chunks, log, poll_seconds)
    summary.update(count=count, already_complete=False)
    log(f"wrote {out}: {count} complex slices ({settings.method}, {settings.samples} per "
        f"magnitude slice)")
    return summary
