"""SVD coil compression, like ``bart cc -S``.

Writes KSP compressed to N virtual coils (dim 3), ordered by energy. The SVD uses the centred
calibration region (``-r``, default 24, clipped to the data like BART) or all samples (``-A``).
``-M`` writes the full ``coil x coil`` compression matrix instead (BART dims 3 = coil, 4 = virtual
coil; virtual coil p = sum_c conj(M[c, p]) ksp[c], as in BART).

Example: ``mriprior cc -p 4 ksp ksp_cc`` ; ``mriprior cc -A -M ksp matrix``.
Unlike BART, the calibration region is not shrunk to its fully sampled part (unsampled zeros
add nothing to the SVD). Virtual coils equal BART's up to a sign each.
"""

from __future__ import annotations

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl


def add_arguments(p):
    p.add_argument("-p", dest="n_virtual", type=int, default=None, metavar="N",
                   help="compress to N virtual coils (0: all coils)")
    p.add_argument("-r", dest="calib", default="24", metavar="CAL",
                   help="calibration region size: N, x:y or d0:d1:d2 (default 24)")
    p.add_argument("-A", dest="all", action="store_true", help="use all data for the SVD")
    p.add_argument("-M", dest="matrix", action="store_true",
                   help="write the compression matrix instead of compressed k-space")
    p.add_argument("-S", dest="svd", action="store_true", help="SVD compression (the only type)")
    p.add_argument("ksp", metavar="KSP")
    p.add_argument("out", metavar="OUT")


def run(args):
    from mriprior.cli._common import parse_sizes
    from mriprior.io.cfl import read_kspace
    from mriprior.physics.coils import coil_compression_matrix, compress_coils

    if args.n_virtual is None and not args.matrix:
        raise InputError("give -p N (number of virtual coils) or -M (write the matrix)")
    ksp, layout = read_kspace(args.ksp, "cpu")
    coils = ksp.shape[1]
    n = coils if args.matrix or args.n_virtual == 0 else args.n_virtual
    if not 1 <= n <= coils:
        raise InputError(f"-p {args.n_virtual}: must be between 0 and the number of coils "
                         f"({coils}) of {args.ksp}")
    calib = None if args.all else tuple(  # clipped to the data, like BART
        min(c, s) for c, s in zip(parse_sizes(args.calib, layout, "-r"), ksp.shape[-2:]))
    try:
        matrix = coil_compression_matrix(ksp, n, calib)
    except InputError as e:
        raise InputError(f"{args.ksp}: {e}") from None
    cmd = f"mriprior cc {'-M' if args.matrix else f'-p {n}'}{' -A' if args.all else ''}"
    if args.matrix:
        out = np.zeros((1, 1, 1, coils, coils), dtype=np.complex64)
        out[0, 0, 0] = np.conj(matrix[0].numpy()).T  # [coil, virtual coil]
        write_cfl(args.out, out, command=cmd)
        return
    virtual = compress_coils(ksp, matrix)[0]  # (n, y, x)
    write_cfl(args.out, layout.to_bart(virtual.numpy()), command=cmd)
