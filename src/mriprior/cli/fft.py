"""Centred orthonormal FFT of a cfl file over the dims in BITMASK (``bart fft -u``).

Example: ``mriprior fft -u 3 img ksp`` ; ``mriprior fft -u -i 3 ksp img``.
The transform is always unitary here; ``-u`` is accepted for BART compatibility.
"""

from __future__ import annotations

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl, write_cfl


def add_arguments(p):
    p.add_argument("-u", action="store_true", help="unitary (always on; BART compatibility)")
    p.add_argument("-i", dest="inverse", action="store_true", help="inverse FFT")
    p.add_argument("bitmask", type=int, help="BART dims to transform, as a bitmask (3 = dims 0,1)")
    p.add_argument("input")
    p.add_argument("output")


def run(args):
    import torch
    from mriprior.physics.fft import fftnc, ifftnc

    if args.bitmask < 0 or args.bitmask >= 1 << 16:
        raise InputError(f"bitmask {args.bitmask} out of range 0..65535")
    a = read_cfl(args.input, squeeze=False)
    # BART dim d is C-order axis (15 - d) of the reversed array.
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(tuple(range(15, -1, -1)))))
    dims = tuple(15 - d for d in range(16) if args.bitmask >> d & 1)
    if dims:
        t = (ifftnc if args.inverse else fftnc)(t, dims)
    write_cfl(args.output, t.numpy().transpose(tuple(range(15, -1, -1))),
              command=f"mriprior fft {'-i ' if args.inverse else ''}{args.bitmask}")
