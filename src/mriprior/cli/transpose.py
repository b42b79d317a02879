"""Swap two dims of a cfl file (``bart transpose``).

Example: ``mriprior transpose 0 2 pat pat`` (a ``poisson`` pattern, 1 x Y x Z, to Z x Y x 1,
the plane of ``phantom -k`` k-space).
"""

from __future__ import annotations

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import NDIMS, read_cfl, write_cfl


def add_arguments(p):
    p.add_argument("dim1", type=int)
    p.add_argument("dim2", type=int)
    p.add_argument("input")
    p.add_argument("output")


def run(args):
    for d in (args.dim1, args.dim2):
        if not 0 <= d < NDIMS:
            raise InputError(f"dim {d}: BART dims are 0..{NDIMS - 1}")
    a = read_cfl(args.input, squeeze=False)
    order = list(range(NDIMS))
    order[args.dim1], order[args.dim2] = order[args.dim2], order[args.dim1]
    write_cfl(args.output, np.ascontiguousarray(a.transpose(order)),
              command=f"mriprior transpose {args.dim1} {args.dim2}")
