"""Multiply two cfl files elementwise, optionally summing over dims (``bart fmac``).

Example: ``mriprior fmac ksp_full pat ksp`` (undersample: k-space times pattern);
``mriprior fmac -C -s 8 coil_imgs sens img`` (coil combination: sum over dim 3 of a conj(b)).
Dims of size 1 broadcast, as in BART; other differing sizes are an error naming both files.
"""

from __future__ import annotations

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import NDIMS, read_cfl, write_cfl


def add_arguments(p):
    p.add_argument("-C", dest="conj", action="store_true", help="use the conjugate of input 2")
    p.add_argument("-s", dest="squash", type=int, default=0, metavar="BITMASK",
                   help="sum over the dims in BITMASK")
    p.add_argument("input1")
    p.add_argument("input2")
    p.add_argument("output")


def run(args):
    if not 0 <= args.squash < 1 << NDIMS:
        raise InputError(f"-s {args.squash}: bitmask out of range 0..{(1 << NDIMS) - 1}")
    a = read_cfl(args.input1, squeeze=False)
    b = read_cfl(args.input2, squeeze=False)
    for d, (x, y) in enumerate(zip(a.shape, b.shape)):
        if x != y and 1 not in (x, y):
            raise InputError(f"{args.input1} has {x} in dim {d}, {args.input2} has {y}: dims "
                             "must agree or be 1")
    out = a * (np.conj(b) if args.conj else b)
    axes = tuple(d for d in range(NDIMS) if args.squash >> d & 1)
    if axes:
        out = out.sum(axis=axes, keepdims=True)
    write_cfl(args.output, out.astype(np.complex64),
              command=f"mriprior fmac{' -C' if args.conj else ''}"
                      f"{f' -s {args.squash}' if args.squash else ''}")
