"""1D variable-density / equispaced and 2D uniform random sampling masks.

  mriprior mask --type vd1d|equispaced|random -Y ny -Z nx --accel R --acs N [-s SEED] out

Writes a ``1 x Y x Z`` mask of 0/1 values (the layout of ``bart poisson``). BART dim 1 (size
``-Y``) is the phase-encode axis: for ``vd1d`` and ``equispaced`` whole lines are sampled at
some dim-1 indices, each line running over all of dim 2 (size ``-Z``, the readout). The ACS
(``--acs`` central lines, centred at index Y // 2) is always sampled.

* ``vd1d``: exactly round(Y / R) lines, ACS included, drawn with density decaying away from
  the centre (:func:`mriprior.physics.masks.variable_density_1d`).
* ``equispaced``: every R-th line from ``--offset`` (drawn from the seed if not given) plus the
  ACS, as fastMRI's EquispacedMaskFunc; the ACS makes the achieved R lower than R.
* ``random``: round(Y * Z / R) points uniformly at random over the grid plus a fully sampled
  ``--acs`` x ``--acs`` central block.

For 2D BART k-space ``X x Y`` (readout in dim 0, phase encoding in dim 1) use ``-Z 1``: the
``1 x Y x 1`` line mask broadcasts over the readout. The achieved acceleration goes to stderr.
"""

from __future__ import annotations

import sys

from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl

TYPES = ("vd1d", "equispaced", "random")


def add_arguments(p):
    p.add_argument("--type", dest="kind", required=True, choices=TYPES, help="mask type")
    p.add_argument("-Y", dest="ny", type=int, required=True, metavar="ny",
                   help="phase-encode lines (BART dim 1)")
    p.add_argument("-Z", dest="nx", type=int, required=True, metavar="nx",
                   help="readout samples per line (BART dim 2); 1 for a line mask")
    p.add_argument("--accel", type=float, required=True, metavar="R", help="acceleration")
    p.add_argument("--acs", type=int, default=24, metavar="N",
                   help="central ACS lines (random: N x N block; default 24)")
    p.add_argument("--offset", type=int, default=None,
                   help="equispaced: first sampled line (default: drawn from the seed)")
    p.add_argument("-s", dest="seed", type=int, default=0, metavar="SEED",
                   help="random seed (default 0)")
    p.add_argument("output")


def run(args):
    from mriprior.cli._common import check_at_least_one
    from mriprior.physics.masks import equispaced_1d, uniform_random, variable_density_1d

    check_at_least_one("size", **{"-Y": args.ny, "-Z": args.nx})
    check_at_least_one("acceleration", **{"--accel": args.accel})
    if args.acs < 0 or args.acs > args.ny or (args.kind == "random" and args.acs > args.nx):
        limit = args.ny if args.kind != "random" else min(args.ny, args.nx)
        raise InputError(f"--acs {args.acs}: must be in 0..{limit} for a {args.ny} x {args.nx} "
                         f"{args.kind} mask")
    if args.offset is not None and args.kind != "equispaced":
        raise InputError("--offset applies to --type equispaced only")
    if args.seed < 0:
        raise InputError(f"-s {args.seed}: seed must be >= 0")
    shape = (args.ny, args.nx)
    if args.kind == "vd1d":
        m = variable_density_1d(shape, args.accel, args.acs, seed=args.seed)
    elif args.kind == "equispaced":
        m = equispaced_1d(shape, args.accel, args.acs, offset=args.offset, seed=args.seed)
    else:
        m = uniform_random(shape, args.accel, calib=args.acs or None, seed=args.seed)
    write_cfl(args.output, m.to_bart(), command="mriprior mask " + " ".join(sys.argv[2:]))
    print(f"mask ({args.kind}): {m.n_sampled} of {args.ny} x {args.nx} points sampled, "
          f"R = {m.accel:.3f} (target {args.accel:g})", file=sys.stderr)
