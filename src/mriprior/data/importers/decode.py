"""Decoding one unit (a file or a DICOM series) into slices, in worker processes when asked.

The readers and torch are imported inside the decoders that need them, so that ``mriprior data
import --help`` and the spawned workers do not pay for what they do not use."""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager

import numpy as np

from mriprior.errors import InputError
from mriprior.data.importers.discover import _Unit, _reason
from mriprior.data.importers.geometry import fit_slice, is_empty, normalize_slice
from mriprior.data.importers.options import AXES, MIN_SIDE, _Options
from mriprior.physics.crop import centre_crop


# =============================================================================================
# decoding (runs in worker processes when workers > 1)

@contextmanager
def _torch_single_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield torch
    finally:
        torch.set_num_threads(n)


def _coil_combine(k: np.ndarray, combine: str) -> np.ndarray:
    """``(coil, y, x)`` fully sampled k-space -> complex (espirit) or magnitude (rss) image."""
    from mriprior.physics.espirit import espirit
    from mriprior.physics.fft import ifft2c
    from mriprior.physics.sense import sense_combine

    with _torch_single_thread() as torch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kt = torch.from_numpy(np.ascontiguousarray(k, dtype=np.complex64))
        if k.shape[0] == 1:
            img = ifft2c(kt[0])
            return (img if combine == "espirit" else img.abs()).numpy()
        if combine == "rss":
            return ifft2c(kt).abs().square().sum(0).sqrt().numpy()
        calib = min(24, k.shape[-2], k.shape[-1])
        maps = espirit(kt[None], calib=calib, kernel=min(6, calib), maps=1)
        return sense_combine(kt[None], maps[:, 0])[0].numpy().astype(np.complex64)


def _decode_fastmri(unit: _Unit, opts: _Options):
    from mriprior.io.fastmri import read_fastmri

    path = unit.files[0]
    with read_fastmri(path) as vol:
        if vol.mask is not None:
            raise InputError(f"{path}: undersampled k-space (has a 'mask': a test/challenge "
                             "split); a prior needs fully sampled data")
        recon = vol.header.get("recon_matrix")
        out = []
        for i in range(vol.num_slices):
            img = _coil_combine(vol.slice(i), opts.combine)
            rec = {"index": i, "combine": opts.combine, "coils": int(vol.shape[1])}
            if recon is not None:
                img = centre_crop(img, (recon[0], recon[1]))
                rec["recon_crop"] = [int(v) for v in img.shape]
            out.append((0, img, rec))
    return [out], []


def _decode_nifti(unit: _Unit, opts: _Options):
    from mriprior.io.nifti import read_nifti

    vol, _ = read_nifti(unit.files[0])
    vols = [vol] if vol.ndim == 3 else [vol[..., t] for t in range(vol.shape[3])]
    groups = []
    for t, v in enumerate(vols):
        group = []
        for axis in opts.axes:
            a = AXES.index(axis)
            for k in range(v.shape[a]):
                plane = np.take(v, k, axis=a)
                rec = {"index": k, "axis": axis}
                if len(vols) > 1:
                    rec["volume"] = t
                group.append((0, np.ascontiguousarray(plane.T[::-1]), rec))
        groups.append(group)
    return groups, []


def _decode_image(unit: _Unit, opts: _Options):
    from mriprior.io.images import read_image

    img, meta = read_image(unit.files[0])
    rec = {"index": 0, "bit_depth": meta["bit_depth"]}
    if meta.get("converted"):
        rec["converted"] = meta["converted"]
    return [[(0, img, rec)]], []


def _decode_cfl(unit: _Unit, opts: _Options):
    from mriprior.io.cfl import NDIMS, BartLayout, read_cfl

    path = unit.files[0]
    arr = read_cfl(path)
    dims = list(arr.shape) + [1] * (NDIMS - arr.ndim)
    lay = BartLayout.from_dims(dims, name=path)
    a = np.moveaxis(arr.reshape(dims, order="F"), (lay.y_dim, lay.x_dim), (0, 1))
    ny, nx = a.shape[:2]
    stack = a.reshape(ny, nx, -1, order="F").transpose(2, 0, 1)
    return [[(0, np.ascontiguousarray(s, dtype=np.complex64), {"index": i})
             for i, s in enumerate(stack)]], []


def _decode_dicom(unit: _Unit, opts: _Options):
    from mriprior.io.dicom import read_dicom

    group, skips, index = [], [], 0
    for fi, path in enumerate(unit.files):
        try:
            frames, meta = read_dicom(path)
        except Exception as e:  # noqa: BLE001 - a broken file of a series is skipped alone
            skips.append((fi, _reason(e)))
            continue
        for k, frame in enumerate(frames):
            group.append((fi, frame, {"index": index, "frame": k}))
            index += 1
    return [group], skips


_DECODERS = {"dicom": _decode_dicom, "nifti": _decode_nifti, "image": _decode_image,
             "fastmri": _decode_fastmri, "cfl": _decode_cfl}


def _finish(groups, opts: _Options):
    """Empty-slice rule, geometry, normalisation: ([(file, array, record)], n_empty, skips)."""
    slices, skips, n_empty = [], [], 0
    for group in groups:
        clean = []
        for fi, img, rec in group:
            bad = ~np.isfinite(img)
            if bad.any():
                img = np.where(bad, 0, img)
                rec["nonfinite_zeroed"] = int(bad.sum())
            clean.append((fi, img, rec))
        vmax = max((float(np.abs(img).max()) for _, img, _ in clean if img.size), default=0.0)
        for fi, img, rec in clean:
            if min(img.shape) < MIN_SIDE:
                skips.append((fi, f"slice of shape {tuple(img.shape)} is smaller than "
                                  f"{MIN_SIDE} pixels on a side"))
                continue
            if is_empty(img, vmax, opts.min_signal):
                n_empty += 1
                continue
            try:
                out, geom = fit_slice(img, opts.shape, opts.resize)
            except InputError as e:
                skips.append((fi, str(e)))
                continue
            out, scale, used = normalize_slice(out, geom, opts.normalize)
            rec.update(original_shape=[int(s) for s in img.shape], resize=geom,
                       normalize=used, scale=scale)
            slices.append((fi, out, rec))
    return slices, n_empty, skips


def _process(unit: _Unit, opts: _Options):
    """Decode one unit: ``(slices, n_empty, skips)``; failures become skips, never raise
    (except KeyboardInterrupt / SystemExit, which abort the import)."""
    try:
        groups, skips = _DECODERS[unit.fmt](unit, opts)
        slices, n_empty, more = _finish(groups, opts)
    except Exception as e:  # noqa: BLE001 - a broken file is skipped, never fatal
        return [], 0, [(0, _reason(e))]
    return slices, n_empty, skips + more


def _worker_init():
    warnings.simplefilter("ignore")


def _worker(args):
    """``_process`` in a worker process; the pixels travel through a spool file (one per unit),
    which costs the main process a fraction of unpickling them from the pool's pipe."""
    unit, opts, spool = args
    slices, n_empty, skips = _process(unit, opts)
    if not slices:
        return [], n_empty, skips, None
    fd, path = tempfile.mkstemp(dir=spool, suffix=".bin")
    meta = []
    with os.fdopen(fd, "wb") as f:
        for fi, arr, rec in slices:
            a = np.ascontiguousarray(arr)
            f.write(a.data)
            meta.append((fi, a.dtype.str, a.shape, rec))
    return meta, n_empty, skips, path


def _unspool(meta, path) -> list:
    """The slices a worker wrote with ``_worker`` (the spool file is deleted)."""
    if path is None:
        return []
    raw = np.fromfile(path, dtype=np.uint8)
    os.unlink(path)
    out, offset = [], 0
    for fi, dtype, shape, rec in meta:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        out.append((fi, raw[offset:offset + n].view(dtype).reshape(shape), rec))
        offset += n
    return out
