"""Turn a magnitude dataset into a complex one with a simulated, physics-based image phase.

    mriprior data simulate --in data/clinical --out data/clinical-complex --seed 0
    mriprior data simulate --in data/t1 --out data/t1-3T --b0 3 --te 2:4
    mriprior data simulate --in data/t1 --out data/t1-ksp --kspace --coils 8 --snr 30 \\
        --noise-cov ../shared/data/coil-noise-16ch/noise

Every slice keeps its magnitude (|output| == input) and gets phase = smooth background
(polynomial + Gaussian random field) + susceptibility (B0) field of tissue / air / bone classes
found in the magnitude + small tissue-class offsets (model: mriprior.data.simulate,
docs/simulation.md). Slice i is drawn with a seed derived from (--seed, i); its manifest record
gets "simulation": {"seed", "phase": {all parameters}} so it can be remade alone. The same
--seed gives byte-identical output.

--te LO:HI draws the echo time (ms) uniformly, --te X fixes it; --b0 A,B,... picks a field
strength (T) uniformly, --b0 X fixes it. --kspace also writes multi-coil k-space and the coil
maps used per slice to OUT/kspace/{ksp,maps}-NNNNN.npy, (n, coil, y, x) complex64, aligned
with the image shards (mriprior.data.simulate.KSpaceShards reads them): --coils birdcage coils
(or --maps FILE, BART maps, map 0) rotated by a random angle and zoomed by --zoom LO:HI, with
complex Gaussian noise at --snr (RMS k-space / noise sigma), white or with the covariance of a
BART noise file (--noise-cov; reduced to --coils coils by --noise-reduce). No --snr: noiseless.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from mriprior.errors import InputError


def add_arguments(p):
    p.add_argument("--in", dest="src", required=True, metavar="MAG_DATASET",
                   help="magnitude dataset folder")
    p.add_argument("--out", required=True, metavar="COMPLEX_DATASET", help="folder to create")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--te", default=None, metavar="MS|LO:HI",
                   help="echo time in ms, fixed or a uniform range (default 2:6)")
    p.add_argument("--b0", default=None, metavar="T|A,B,..",
                   help="field strength in tesla, one value or a list to pick from "
                        "(default 1.5,3)")
    p.add_argument("--kspace", action="store_true", help="also write multi-coil k-space")
    p.add_argument("--coils", type=int, default=8, help="number of coils (default 8)")
    p.add_argument("--maps", default=None, metavar="FILE",
                   help="BART coil maps (cfl, map 0 used) instead of birdcage maps")
    p.add_argument("--zoom", default="1", metavar="X|LO:HI",
                   help="random zoom of the coil maps (default 1: none)")
    p.add_argument("--snr", type=float, default=None,
                   help="k-space SNR: RMS of the noiseless k-space / noise sigma (default: "
                        "noiseless)")
    p.add_argument("--noise-cov", default=None, metavar="FILE",
                   help="BART noise samples (n x 1 x 1 x coils) for the noise covariance")
    p.add_argument("--noise-reduce", choices=("spread", "first", "svd"), default="spread",
                   help="how to get --coils coils from the noise file (default spread)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per batch (default 16)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--force", action="store_true", help="replace an existing --out dataset")


def _range(text: str, name: str) -> tuple[float, float]:
    """``"X"`` -> ``(X, X)``; ``"LO:HI"`` -> ``(LO, HI)``."""
    try:
        parts = [float(t) for t in text.split(":")]
    except ValueError:
        raise InputError(f"{name} {text!r}: expected a number or LO:HI") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not parts[0] <= parts[1]:
        raise InputError(f"{name} {text!r}: expected a number or LO:HI with LO <= HI")
    return parts[0], parts[1]


def _choices(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise InputError(f"{name} {text!r}: expected a number or a comma-separated list") \
            from None


def build_model(args):
    from mriprior.data.simulate import PhaseModel

    kw = {}
    if args.te is not None:
        kw["te_ms"] = _range(args.te, "--te")
    if args.b0 is not None:
        kw["b0"] = _choices(args.b0, "--b0")
    return dataclasses.replace(PhaseModel(), **kw)


def _load_maps(path: str):
    """A BART maps file -> ``(coil, y, x)`` complex64 tensor (the first set of maps)."""
    import torch

    from mriprior.io.cfl import BartLayout, read_cfl

    arr = read_cfl(path)
    layout = BartLayout.from_dims(arr.shape, name=path)
    m = layout.to_torch(arr, name=path, max_dim=4)  # (maps, coil, y, x) / (coil, y, x)
    m = m.reshape((-1,) + m.shape[-3:])[0]
    return torch.from_numpy(np.ascontiguousarray(m))


def build_kspace(args):
    from mriprior.data.simulate import KSpaceOptions, noise_covariance_from_cfl

    if not args.kspace:
        for flag, v in (("--maps", args.maps), ("--snr", args.snr),
                        ("--noise-cov", args.noise_cov)):
            if v is not None:
                raise InputError(f"{flag} only applies with --kspace")
        return None
    if args.coils < 1:
        raise InputError(f"--coils {args.coils}: must be >= 1")
    if args.noise_cov is not None and args.snr is None:
        raise InputError("--noise-cov needs --snr (the file's absolute noise level does not "
                         "fit normalised images)")
    maps, maps_source = "birdcage", "birdcage"
    if args.maps is not None:
        maps, maps_source = _load_maps(args.maps), args.maps
        if maps.shape[0] != args.coils:
            raise InputError(f"--maps {args.maps} has {maps.shape[0]} coils but --coils is "
                             f"{args.coils}")
    cov = None
    if args.noise_cov is not None:
        cov = noise_covariance_from_cfl(args.noise_cov, args.coils, args.noise_reduce)
    zoom = _range(args.zoom, "--zoom")
    if zoom[0] <= 0:
        raise InputError(f"--zoom {args.zoom}: must be > 0")
    return KSpaceOptions(coils=args.coils, maps=maps, maps_source=maps_source, noise_cov=cov,
                         noise_source=None if cov is None else
                         f"{args.noise_cov} ({args.noise_reduce})",
                         snr=args.snr, zoom=zoom)


def run(args):
    from mriprior.cli._common import check_at_least_one, device, progress_bar
    from mriprior.data.simulate import simulate_dataset

    check_at_least_one(**{"--batch-size": args.batch_size})
    model = build_model(args)
    kspace = build_kspace(args)
    summary = simulate_dataset(args.src, args.out, seed=args.seed, model=model, kspace=kspace,
                               overwrite=args.force, batch_size=args.batch_size,
                               device=device(args.device),
                               progress=progress_bar("simulate", "slice"))
    extra = f", {summary['kspace_files']} k-space shard(s)" if kspace is not None else ""
    print(f"{summary['out']}: {summary['count']} complex slices{extra}")
    if summary["negative_pixels_clamped"]:
        print(f"note: {summary['negative_pixels_clamped']} negative magnitude pixels set to 0",
              file=sys.stderr)
