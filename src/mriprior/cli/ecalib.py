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

from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl


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
    p.add_argument("-d", dest="debug_level", type=int, default=None, metavar="LEVEL",
                   help="BART's debug level (accepted; mriprior prints its notes always)")
    p.add_argument("ksp", metavar="KSP")
    p.add_argument("sens", metavar="SENS")
    p.add_argument("ev_maps", metavar="EV_MAPS", nargs="?", help="optional eigenvalue maps")


def run(args):
    from mriprior.cli._common import parse_sizes
    from mriprior.io.cfl import read_kspace
    from mriprior.physics.espirit import espirit

    ksp, layout = read_kspace(args.ksp, "cpu")
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
