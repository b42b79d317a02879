"""Extract a slice of a cfl file: dim DIM at position POS, for one or more pairs
(``bart slice``).

Example: ``mriprior slice 2 40 vol ksp40`` (slice 40 of a volume's dim 2);
``mriprior slice 4 0 sens sens0`` (the first ESPIRiT map).
"""

from __future__ import annotations

from mriprior.errors import InputError
from mriprior.io.cfl import NDIMS, read_cfl, write_cfl


def add_arguments(p):
    p.add_argument("args", nargs="+", metavar="DIM POS ... INPUT OUTPUT")


def run(args):
    *pairs, src, dst = args.args
    if not pairs or len(pairs) % 2:
        raise InputError("give DIM POS pairs, then INPUT and OUTPUT (e.g. slice 2 40 in out)")
    try:
        pairs = [(int(pairs[i]), int(pairs[i + 1])) for i in range(0, len(pairs), 2)]
    except ValueError:
        raise InputError(f"DIM and POS must be integers, got {' '.join(args.args[:-2])}") from None
    a = read_cfl(src, squeeze=False)
    index = [slice(None)] * NDIMS
    for d, pos in pairs:
        if not 0 <= d < NDIMS:
            raise InputError(f"dim {d}: BART dims are 0..{NDIMS - 1}")
        if not 0 <= pos < a.shape[d]:
            raise InputError(f"{src}: position {pos} out of range for dim {d} (size "
                             f"{a.shape[d]})")
        index[d] = slice(pos, pos + 1)
    write_cfl(dst, a[tuple(index)].copy(order="F"),
              command="mriprior slice " + " ".join(f"{d} {p}" for d, p in pairs))
