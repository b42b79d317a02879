"""Modified Shepp-Logan phantom image or k-space, optionally multi-coil (``bart phantom``).

Output: BART dims ``N x N x 1 x C`` (dims 0, 1 spatial; dim 3 coils, C = 1 without -s/-S).

  mriprior phantom -x 128 img              image (same geometry and values as bart phantom)
  mriprior phantom -x 128 -k ksp           analytic k-space, consistent with `bart fft -u 3`
  mriprior phantom -x 128 -s 8 cimg        image times 8 birdcage coil sensitivities
  mriprior phantom -x 128 -s 8 -k cksp     their k-space: fft(maps * ifft(analytic k-space))
  mriprior phantom -x 128 -S 8 sens        the sensitivities themselves

Differences from BART 0.8: the coil sensitivities are the analytic birdcage model of
mriprior.physics.phantom.birdcage_maps (radius 1.5, RSS 1 at the centre), not BART's 8-channel
head-coil fit; and the k-space is scaled to match the FFT of the image, which makes it
pi * sqrt(2 pi) * N / 8 (about 0.98 N) times BART's.
"""

from __future__ import annotations

from mriprior.cli._common import check_at_least_one
from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, write_cfl

MAX_SIZE = 16384


def add_arguments(p):
    p.add_argument("-x", dest="size", type=int, default=128, metavar="N",
                   help="image size N x N (default 128)")
    p.add_argument("-s", dest="coils", type=int, default=None, metavar="NCOILS",
                   help="multiply by NCOILS coil sensitivities")
    p.add_argument("-k", dest="kspace", action="store_true", help="k-space instead of image")
    p.add_argument("-S", dest="sens", type=int, default=None, metavar="NCOILS",
                   help="output NCOILS sensitivities instead")
    p.add_argument("output", help="output cfl name (without .cfl/.hdr)")


def _validate(args) -> None:
    if not 1 <= args.size <= MAX_SIZE:
        raise InputError(f"-x {args.size}: size must be in 1..{MAX_SIZE}")
    check_at_least_one("number of coils", **{"-s": args.coils, "-S": args.sens})
    if args.sens is not None and args.coils is not None:
        raise InputError("-s and -S cannot be combined (-S outputs only the sensitivities)")
    if args.sens is not None and args.kspace:
        raise InputError("-k and -S cannot be combined (-S outputs sensitivities in image space)")


def make(size: int, coils: int | None = None, kspace: bool = False,
         sens: int | None = None):
    """The requested array as ``(coil, y, x)`` complex64 tensor."""
    from mriprior.physics.fft import fft2c, ifft2c
    from mriprior.physics.phantom import birdcage_maps, shepp_logan, shepp_logan_kspace

    if sens is not None:
        return birdcage_maps(sens, size)
    if coils is None:
        return (shepp_logan_kspace(size) if kspace else shepp_logan(size))[None]
    maps = birdcage_maps(coils, size)
    if kspace:
        return fft2c(maps * ifft2c(shepp_logan_kspace(size)))
    return maps * shepp_logan(size)


def run(args):
    _validate(args)
    out = make(args.size, args.coils, args.kspace, args.sens)
    layout = BartLayout(0, 1, (args.size, args.size, 1))
    flags = [f"-x {args.size}"]
    flags += [f"-s {args.coils}"] if args.coils is not None else []
    flags += ["-k"] if args.kspace else []
    flags += [f"-S {args.sens}"] if args.sens is not None else []
    write_cfl(args.output, layout.to_bart(out.numpy()),
              command=f"mriprior phantom {' '.join(flags)}")
