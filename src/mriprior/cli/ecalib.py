"""ESPIRiT coil sensitivity calibration, like ``bart ecalib``.

Reads k-space KSP (BART dims: a 2D slice in two of dims 0-2, coils in dim 3) with a fully sampled
centre and writes the maps SENS (same spatial dims, coils in dim 3, maps in dim 4) and, if given,
the eigenvalue maps EV_MAPS (coil dim 1, maps in dim 4).

Example: ``mriprior ecalib -m1 ksp sens`` ; ``mriprior ecalib -r 20 -c 0.9 ksp sens ev``.

``-r`` takes one size for all dims, ``x:y`` for the slice plane (x = the lower in-plane BART
dim), or BART's ``d0:d1:d2``. Unlike BART, a calibration region that is not fully sampled is an
error (the message gives the largest fully sampled size) rather than shrunk silently.
"""

from __future__ import annotations

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.io.cfl import COIL_DIM, BartLayout, read_cfl, write_cfl
from mriprior.physics.espirit import espirit


def add_arguments(p):
    p.add_argument("-r", dest="calib", default="24", metavar="CAL",
                   help="calibration region size: N, x:y or d0:d1:d2 (default 24)")
    p.add_argument("-k", dest="kernel", default="6", metavar="K",
                   help="kernel size: K or d0:d1:d2 with equal in-plane sizes (default 6)")
    p.add_argument("-t", dest="threshold", type=float, default=0.001,
                   help="singular-value threshold: keep s/s_max > sqrt(T) (default 0.001)")
    p.add_argument("-c", dest="crop", type=float, default=0.8,
                   help="crop maps where the eigenvalue is <= C (default 0.8)")
    p.add_argument("-m", dest="maps", type=int, default=2, help="number of maps (default 2)")
    p.add_argument("-P", dest="no_phase", action="store_true",
                   help="do not rotate the phase relative to the first principal component")
    p.add_argument("ksp", metavar="KSP")
    p.add_argument("sens", metavar="SENS")
    p.add_argument("ev_maps", metavar="EV_MAPS", nargs="?", help="optional eigenvalue maps")


def parse_sizes(text: str, layout: BartLayout, option: str) -> tuple[int, int]:
    """``N``, ``x:y`` or ``d0:d1:d2`` -> ``(y, x)`` sizes in the slice plane of ``layout``."""
    try:
        vals = [int(t) for t in str(text).split(":")]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected N, x:y or d0:d1:d2 integers") from None
    if len(vals) == 1:
        vals = vals * 3
    elif len(vals) == 2:
        both = {layout.x_dim: vals[0], layout.y_dim: vals[1]}
        vals = [both.get(d, 1) for d in range(3)]
    elif len(vals) != 3:
        raise InputError(f"{option} {text!r}: expected N, x:y or d0:d1:d2 integers")
    y, x = vals[layout.y_dim], vals[layout.x_dim]
    if x < 1 or y < 1:
        raise InputError(f"{option} {text!r}: sizes must be positive")
    return y, x


def load_kspace(name: str) -> tuple[BartLayout, torch.Tensor]:
    """A BART k-space file -> its layout and a ``(1, coil, y, x)`` complex64 tensor."""
    arr = read_cfl(name)
    layout = BartLayout.from_dims(arr.shape, name)
    ksp = layout.to_torch(arr, name, max_dim=COIL_DIM)  # (coil, y, x)
    return layout, torch.from_numpy(ksp)[None]


def run(args):
    layout, ksp = load_kspace(args.ksp)
    calib = parse_sizes(args.calib, layout, "-r")
    ky, kx = parse_sizes(args.kernel, layout, "-k")
    if ky != kx:
        raise InputError(f"-k {args.kernel}: only equal in-plane kernel sizes are supported "
                         f"(got {kx} x {ky})")
    try:
        sens, evals = espirit(ksp, calib=calib, kernel=kx, threshold=args.threshold,
                              crop=args.crop, maps=args.maps, phase_ref=not args.no_phase,
                              return_eigenvalues=True)
    except InputError as e:
        raise InputError(f"{args.ksp}: {e}") from None
    cmd = (f"mriprior ecalib -r {args.calib} -k {args.kernel} -t {args.threshold} "
           f"-c {args.crop} -m {args.maps}{' -P' if args.no_phase else ''}")
    write_cfl(args.sens, layout.to_bart(sens[0].numpy()), command=cmd)
    if args.ev_maps:
        ev = evals[0].numpy().astype(np.complex64)[:, None]  # (maps, 1, y, x)
        write_cfl(args.ev_maps, layout.to_bart(ev), command=cmd)
