"""Reconstruct every slice of a multi-slice k-space file (fastMRI / ISMRMRD-converted HDF5).

Per slice of :func:`mriprior.io.fastmri.read_fastmri`'s ``(slices, coil, y, x)`` k-space (in
fastMRI's files the rows ``y`` are the readout, the columns ``x`` the phase encoding that the
mask undersamples):

1. readout oversampling removed as fastMRI does: the image is cropped along ``y`` to the
   ISMRMRD header's reconstruction matrix (``reconSpace`` x, the readout; inverse FFT along
   ``y``, centre crop, FFT back), which also halves the work;
2. the sampling pattern: the file's ``mask`` (test splits) or the nonzero k-space;
3. ESPIRiT coil maps (one set) from the fully sampled centre (``calib``, shrunk to what is
   fully sampled);
4. ``method``: ``"pics"`` (l1-wavelet PICS, image in the data's units), ``"fast"`` or
   ``"langevin"`` (posterior sampling with a prior; MMSE and pixelwise std);
5. the image centre-cropped to the reconstruction matrix ``(y, x)``, as fastMRI's
   ``reconstruction_rss``.

Output: a fastMRI-style HDF5 file with ``reconstruction`` float32 ``(slices, y, x)``
(magnitudes, as fastMRI's submissions) and, for the posterior methods, ``std`` (the pixelwise
standard deviation over chains; the calibrated error std, :mod:`mriprior.recon.calibration`,
where the prior's sidecar has a calibration for the settings, recorded in ``settings``
as ``std_calibration``); attributes ``method``, ``settings`` (JSON), ``source`` (the
input's file name, never a patient identifier) and ``created_by``. Or, for an output name not
ending in ``.h5``, BART cfl files of the complex images with slices along BART's dim 13
(``SLICE_DIM``) (``OUT`` and, for posterior methods, ``OUT_std``).

Resumable and one job per output: each finished slice is written atomically to
``OUT.parts/slice-NNNNN.npz``; rerunning the same command continues after the last finished
slice (different settings are refused, naming the folder), and the output appears only when
every slice is done. A running job holds the output's lock (:mod:`mriprior.io.files`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl
from mriprior.io.fastmri import read_fastmri
from mriprior.io.files import atomic_write, atomic_write_bytes, locks_output, work_folder
from mriprior.physics.espirit import espirit
from mriprior.physics.crop import centre_crop
from mriprior.physics.fft import fftnc, ifftnc
from mriprior.physics.masks import pattern_kind
from mriprior.priors.export import prior_files, read_sidecar

__all__ = ["reconstruct_volume", "crop_readout", "METHODS"]

METHODS = ("pics", "fast", "langevin")
SLICE_DIM = 13  # BART's slice dimension


def crop_readout(ksp: torch.Tensor, rows: int) -> torch.Tensor:
    """``(..., y, x)`` k-space -> the k-space of the image centre-cropped to ``rows`` along y
    (the readout of fastMRI's files)."""
    ny = ksp.shape[-2]
    if rows >= ny:
        return ksp
    img = ifftnc(ksp, dims=(-2,))
    start = ny // 2 - rows // 2
    return fftnc(img[..., start:start + rows, :].contiguous(), dims=(-2,))


def _recon_matrix(vol, ny: int, nx: int) -> tuple[int, int]:
    """The output image size: the header's reconstruction matrix ``(x, y)`` on ``(rows,
    columns)`` as fastMRI crops ``reconstruction_rss`` (and mriprior's importer), else the
    k-space's own size."""
    rm = vol.header.get("recon_matrix")
    if not rm or len(rm) < 2 or min(rm[:2]) < 1:
        return ny, nx
    return min(int(rm[0]), ny), min(int(rm[1]), nx)


def _one_slice(k: np.ndarray, pattern, shape, method: str, settings: dict, prior, device):
    options = dict(settings["options"])
    seed = settings.get("seed", 0)
    ksp = torch.from_numpy(np.ascontiguousarray(k))[None].to(device)  # (1, coil, ky, kx)
    ksp = crop_readout(ksp, shape[0])
    mask = (ksp.abs().sum(1, keepdim=True) > 0).to(ksp.real.dtype) if pattern is None else \
        torch.from_numpy(np.broadcast_to(pattern, ksp.shape[-2:]).astype(np.float32))[
            None, None].to(device)
    ksp = ksp * mask
    maps = espirit(ksp, calib=settings["calib"], maps=1)  # (1, 1, coil, y, x)
    std = None
    if method == "pics":
        from mriprior.recon.classical import pics
        img, _ = pics(ksp, maps, reg="l1", mask=mask, rescale=True, **options)
        img = img[:, 0]
    else:
        from mriprior.recon.posterior import METHODS as FUNCTIONS
        r = FUNCTIONS[method](ksp, maps[:, 0], prior, mask=mask, seed=seed, **options)
        img, std = r.mmse, r.std
        if "std_calibration" in settings:
            from mriprior.recon.calibration import calibrated_std
            std = calibrated_std(std, settings["std_calibration"])
    if not bool(torch.isfinite(img).all()):
        raise InputError("the reconstruction is not finite (NaN or Inf)")
    img = centre_crop(img[0], shape).cpu().numpy().astype(np.complex64)
    if std is not None:
        std = centre_crop(std[0], shape).cpu().numpy().astype(np.float32)
    return img, std


def _keywords(method: str) -> tuple:
    from mriprior.recon.posterior import OPTIONS
    return tuple(OPTIONS[method].values())


def _settings(method: str, prior, options, calib: int, seed: int, device, pattern: str):
    """The job's settings (JSON) and the loaded prior; InputError naming what is wrong.
    ``pattern``: the sampling's kind ("1d" or "2d"), whose tuned settings the prior gives."""
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, not {method!r}")
    allowed = ("lam", "max_iter") if method == "pics" else _keywords(method)
    unknown = sorted(set(options or {}) - set(allowed))
    if unknown:
        raise InputError(f"{method}: unknown option(s) {unknown}; choose from {list(allowed)}")
    settings = {"method": method, "calib": int(calib)}
    if method == "pics":
        settings["options"] = {"lam": 0.005, "max_iter": 100, **(options or {})}
        return settings, prior
    if prior is None:
        raise InputError(f"method {method!r} needs a prior")
    settings["seed"] = int(seed)
    if isinstance(prior, (str, os.PathLike)):
        from mriprior.recon.priors import load_image_prior
        settings["prior"] = str(prior_files(prior)[0].name)
        settings["prior_step"] = read_sidecar(prior).get("step")
        prior = load_image_prior(prior, device=device)
    from mriprior.recon.calibration import calibration_for
    from mriprior.recon.posterior import tuned_options
    settings["pattern"] = pattern
    settings["options"] = {**tuned_options(method, prior, pattern), **(options or {})}
    cal = calibration_for(prior, method, settings["options"], pattern)
    if cal is not None:  # the std written is the calibrated one (recon.calibration)
        settings["std_calibration"] = {"scale": cal["scale"], "pool": cal.get("pool", 1)}
    return settings, prior


def _parts(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


@locks_output("out", "volume reconstruction")
def reconstruct_volume(src, out, method: str = "pics", *, prior=None, options: dict | None = None,
                       calib: int = 24, seed: int = 0, device="cpu", progress=None,
                       log=None) -> dict:
    """Reconstruct every slice of fastMRI file ``src`` into ``out`` (see the module docstring).

    ``prior``: an :class:`~mriprior.recon.priors.ImagePrior` or a prior name / path (posterior
    methods). ``options``: keyword arguments of the method's function
    (:func:`~mriprior.recon.classical.pics`'s ``lam`` / ``max_iter`` for ``"pics"``, default
    0.005 / 100; :func:`~mriprior.recon.posterior.fast_posterior` /
    :func:`~mriprior.recon.posterior.langevin_posterior`'s otherwise); a posterior method's
    options left out take the prior's tuned ``recon_defaults``, else the library's
    (:func:`~mriprior.recon.posterior.tuned_options`), as ``mriprior recon`` on one slice.
    ``progress(done, total)`` after every slice. Returns a summary dict.
    """
    from mriprior import __version__

    src, out = Path(src), Path(out)
    vol = read_fastmri(src)
    try:
        settings, prior = _settings(method, prior, options, calib, seed, device, pattern_kind(
            vol.mask if vol.mask is not None else np.abs(vol.slice(0)).sum(0) > 0))
        n, _, ny, nx = vol.shape
        shape = _recon_matrix(vol, ny, nx)
        pattern = None if vol.mask is None else np.asarray(vol.mask, dtype=bool)
        job = {"format": "mriprior-volume-job", "version": 1, "source": src.name,
               "slices": n, "shape": list(shape), "settings": settings}
        parts = _parts(out)
        created = work_folder(parts, job, lambda old, new: f"settings {old.get('settings')}")
        t0, done = time.perf_counter(), 0
        try:
            for i in range(n):
                part = parts / f"slice-{i:05d}.npz"
                if not part.exists():
                    img, std = _one_slice(vol.slice(i), pattern, shape, method, settings, prior,
                                          device)
                    arrays = {"image": img} if std is None else {"image": img, "std": std}
                    atomic_write(part, lambda t, a=arrays: np.savez(t, **a))
                    done += 1
                if progress is not None:
                    progress(i + 1, n)
        except BaseException:
            if created and not any(parts.glob("slice-*.npz")):
                shutil.rmtree(parts, ignore_errors=True)
            raise
    finally:
        vol.close()
    images, stds = [], []
    for i in range(n):
        with np.load(parts / f"slice-{i:05d}.npz") as z:
            images.append(z["image"])
            stds.append(z["std"] if "std" in z.files else None)
    images = np.stack(images)
    std = None if stds[0] is None else np.stack(stds)
    meta = {"method": method, "settings": json.dumps(settings), "source": src.name,
            "created_by": f"mriprior {__version__}"}
    if out.suffix == ".h5":
        _write_h5(out, np.abs(images).astype(np.float32), std, meta)
    else:
        write_cfl(out, _slices_bart(images), command=f"mriprior {method} volume {src.name}")
        if std is not None:
            write_cfl(str(out) + "_std", _slices_bart(std.astype(np.complex64)))
    shutil.rmtree(parts, ignore_errors=True)
    secs = time.perf_counter() - t0
    if log is not None:
        log(f"wrote {out}: {n} slices of {shape[0]} x {shape[1]} ({method}; {done} reconstructed "
            f"now, {n - done} from an earlier run; {secs:.1f} s)")
    return {"out": str(out), "slices": n, "shape": list(shape), "reconstructed_now": done,
            "seconds": secs, "settings": settings}


def _slices_bart(a: np.ndarray) -> np.ndarray:
    """``(slices, y, x)`` -> BART dims ``x y 1 ... slices`` (slices in dim 13)."""
    b = a.transpose(2, 1, 0)  # (x, y, slices)
    return b.reshape(b.shape[0], b.shape[1], *([1] * (SLICE_DIM - 2)), b.shape[2])


def _write_h5(out: Path, recon: np.ndarray, std, meta: dict) -> None:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("reconstruction", data=recon)
        if std is not None:
            f.create_dataset("std", data=std)
        for k, v in meta.items():
            f.attrs[k] = v
    atomic_write_bytes(out, buf.getvalue())
