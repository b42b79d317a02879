"""Seeds derived from tuples of integers, the one rule every reproducible stream uses (a slice's
phase, a chain's noise, a rank's training noise): NumPy ``SeedSequence``, well mixed, 63 bits."""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (``SeedSequence(keys)``, keys taken mod 2^63)."""
    s = np.random.SeedSequence([int(k) & (2 ** 63 - 1) for k in keys])
    return int(s.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
