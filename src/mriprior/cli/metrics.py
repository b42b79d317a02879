"""PSNR / SSIM / NMSE of a reconstruction against a reference (two cfl files, same dims).

    mriprior metrics REF REC                    # compare magnitudes as given
    mriprior metrics --scale lsq REF REC        # least-squares magnitude scaling first
    mriprior metrics --mask ROI --json REF REC

Convention (see mriprior.metrics): magnitudes; data range = max |REF| per image; SSIM as fastMRI
computes it (scikit-image, 7x7 window). Files are 2D slices (BART dims: two of x, y, z > 1);
other non-singleton dims (maps, ...) are treated as a batch of images and averaged.
"""

from __future__ import annotations

import json

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, read_cfl


def add_arguments(p):
    p.add_argument("--scale", choices=["none", "lsq"], default="none",
                   help="'lsq': scale |REC| by the least-squares factor first")
    p.add_argument("--mask", help="region-of-interest cfl (nonzero = inside)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("reference")
    p.add_argument("reconstruction")


def _images(path):
    a = read_cfl(path, squeeze=False)
    lay = BartLayout.from_dims(a.shape, name=path)
    img = lay.to_torch(a, name=path, max_dim=15)
    return img.reshape(-1, *img.shape[-2:]), a.shape


def _volume(path: str):
    """A fastMRI-style .h5: 'reconstruction', else the reference reconstruction_rss / _esc."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for key in ("reconstruction", "reconstruction_rss", "reconstruction_esc"):
                if key in f:
                    return np.abs(np.asarray(f[key][()]))
            keys = sorted(f.keys())
    except OSError as e:
        raise InputError(f"{path}: not a readable HDF5 file ({' '.join(str(e).split())})") from None
    raise InputError(f"{path}: no 'reconstruction' or 'reconstruction_rss' dataset (keys: {keys})")


def _run_volume(args):
    from mriprior.metrics import evaluate_volume

    if args.scale != "none" or args.mask:
        raise InputError("--scale / --mask apply to cfl images; volumes use fastMRI's metrics")
    ref, rec = _volume(args.reference), _volume(args.reconstruction)
    try:
        r = evaluate_volume(ref, rec)
    except InputError as e:
        raise InputError(f"{args.reference} vs {args.reconstruction}: {e}") from None
    _report(r, args.json, f"  (fastMRI volume metrics, {ref.shape[0]} slices)")


def _report(r: dict, as_json: bool, note: str = "") -> None:
    print(json.dumps(r) if as_json else
          f"PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}  NMSE {r['nmse']:.4e}{note}")


def run(args):
    from mriprior.metrics import evaluate

    if args.reference.endswith(".h5") or args.reconstruction.endswith(".h5"):
        return _run_volume(args)

    ref, rs = _images(args.reference)
    rec, cs = _images(args.reconstruction)
    for img, path in ((ref, args.reference), (rec, args.reconstruction)):
        if not np.isfinite(img).all():
            raise InputError(f"{path}: contains NaN or Inf")
    if not bool((ref != 0).any()):
        raise InputError(f"{args.reference}: the reference is zero everywhere (its data range is "
                         "0, so PSNR / SSIM are undefined)")
    if rs != cs:
        raise InputError(f"{args.reference} has dims {_dims(rs)} but {args.reconstruction} has "
                         f"{_dims(cs)}")
    mask = None
    if args.mask:
        m, _ = _images(args.mask)
        if m.shape[-2:] != ref.shape[-2:]:
            raise InputError(f"{args.mask}: mask plane {m.shape[-2:]} != image {ref.shape[-2:]}")
        mask = np.abs(m[0]) > 0
    _report(evaluate(ref, rec, scale=args.scale, mask=mask), args.json)


def _dims(shape):
    d = list(shape)
    while len(d) > 1 and d[-1] == 1:
        d.pop()
    return " x ".join(map(str, d))
