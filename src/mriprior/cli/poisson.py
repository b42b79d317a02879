"""Variable-density Poisson-disc sampling pattern, with ``bart poisson``'s flags and output.

Writes a ``1 x Y x Z`` mask (BART dims 1 and 2, like ``bart poisson``) of 0/1 values.

  mriprior poisson -Y 256 -Z 256 -y 1.5 -z 1.5 -C 20 -v -e mask
      BART's model: per-dim accelerations -y/-z set the disc radius (1/1.275 * accel pixels at
      the centre), -v grows it towards the edge, -e keeps the inscribed ellipse, -C adds a fully
      sampled C x C centre. As with BART, the total acceleration depends on all of these.
  mriprior poisson -Y 256 -Z 256 --accel 8 -C 20 -v -e mask
      mriprior's extra: search the disc radius until the total acceleration (Y * Z / samples,
      calibration included) is R (within 1 %); -y/-z are not allowed with it.

The achieved acceleration is printed to stderr. Axes: BART dim 1 (size -Y, acceleration -y) is
axis 0 of ``mriprior.physics.masks.poisson_disc``'s ``(ny, nx)`` mask, dim 2 (-Z, -z) axis 1.
"""

from __future__ import annotations

import sys

from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl


def add_arguments(p):
    p.add_argument("-Y", dest="size_y", type=int, default=128, metavar="size",
                   help="size of dim 1 (default 128)")
    p.add_argument("-Z", dest="size_z", type=int, default=128, metavar="size",
                   help="size of dim 2 (default 128)")
    p.add_argument("-y", dest="accel_y", type=float, default=None, metavar="acc",
                   help="acceleration in dim 1 (BART model; default 1)")
    p.add_argument("-z", dest="accel_z", type=float, default=None, metavar="acc",
                   help="acceleration in dim 2 (BART model; default 1)")
    p.add_argument("-C", dest="calib", type=int, default=0, metavar="size",
                   help="size of the fully sampled calibration region (default 0)")
    p.add_argument("-v", dest="vd", action="store_true", help="variable density")
    p.add_argument("-e", dest="ellipse", action="store_true", help="elliptical scanning")
    p.add_argument("-s", dest="seed", type=int, default=0, metavar="seed",
                   help="random seed (default 0)")
    p.add_argument("--accel", type=float, default=None, metavar="R",
                   help="target total acceleration instead of -y/-z")
    p.add_argument("output")


def run(args):
    from mriprior.cli._common import check_at_least_one
    from mriprior.physics.masks import poisson_disc, poisson_disc_bart

    check_at_least_one("size", **{"-Y": args.size_y, "-Z": args.size_z})
    check_at_least_one("acceleration", **{"-y": args.accel_y, "-z": args.accel_z,
                                          "--accel": args.accel})
    if not 0 <= args.calib <= min(args.size_y, args.size_z):
        raise InputError(f"-C {args.calib}: calibration size must be in 0.."
                         f"{min(args.size_y, args.size_z)} (the smaller of -Y and -Z)")
    if args.seed < 0:
        raise InputError(f"-s {args.seed}: seed must be >= 0")
    shape = (args.size_y, args.size_z)
    if args.accel is not None:
        if args.accel_y is not None or args.accel_z is not None:
            raise InputError("--accel targets the total acceleration: give it or -y/-z, not both")
        try:
            m = poisson_disc(shape, args.accel, calib=args.calib, seed=args.seed,
                             variable_density=args.vd, ellipse=args.ellipse)
        except InputError as e:
            raise InputError(f"--accel {args.accel:g}: {e}") from None
        target = f"target R = {args.accel:g}"
    else:
        ay, az = args.accel_y or 1.0, args.accel_z or 1.0
        m = poisson_disc_bart(shape, ay, az, calib=args.calib, seed=args.seed,
                              variable_density=args.vd, ellipse=args.ellipse)
        target = f"-y {ay:g} -z {az:g}"
    write_cfl(args.output, m.to_bart(), command="mriprior poisson " + " ".join(sys.argv[2:]))
    print(f"poisson: {m.n_sampled} of {shape[0]} x {shape[1]} points sampled, "
          f"R = {m.accel:.3f} ({target})", file=sys.stderr)
