"""Write the magnitude of a 2D cfl image as an 8-bit PNG (``bart toimg``).

Example: ``mriprior toimg img img.png``. The image is scaled to its maximum magnitude (or to
``--max``); BART dim 0 runs left to right, dim 1 top to bottom, as in ``bart toimg``. More
than one non-singleton dim beyond the plane is an error (``mriprior slice`` first).
"""

from __future__ import annotations

import io

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl
from mriprior.io.files import atomic_write_bytes


def add_arguments(p):
    p.add_argument("--max", type=float, default=None,
                   help="magnitude shown as white (default: the image's maximum)")
    p.add_argument("input")
    p.add_argument("output", help="PNG file")


def run(args):
    from PIL import Image

    a = read_cfl(args.input, squeeze=False)
    big = [d for d in range(a.ndim) if a.shape[d] > 1]
    if len(big) > 2:
        raise InputError(f"{args.input}: {len(big)} non-singleton dims {big}; toimg writes one "
                         "2D image (use mriprior slice first)")
    mag = np.abs(a).reshape([a.shape[d] for d in big] or [1], order="F")
    if mag.ndim == 1:
        mag = mag[:, None]
    if not np.isfinite(mag).all():
        raise InputError(f"{args.input}: NaN or Inf in the image")
    top = args.max if args.max is not None else float(mag.max())
    if not top > 0:
        raise InputError(f"{args.input}: the image is zero everywhere" if args.max is None
                         else f"--max {args.max}: must be > 0")
    img = np.clip(mag.T / top * 255.0 + 0.5, 0, 255).astype(np.uint8)  # rows = dim 1
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    atomic_write_bytes(args.output, buf.getvalue())
