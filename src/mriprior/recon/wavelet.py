"""Multi-level 2D Daubechies-2 wavelet transform and its soft-threshold, as BART computes them.

BART's ``pics -l1`` regulariser is ``lambda * ||W x||_1`` with W a Daubechies-2 ("dau2", 4 taps)
transform over the image axes, applied through "wavelet thresholding": transform, soft-threshold
every coefficient (coarse band included), inverse transform. Details reproduced here so that our
``pics`` matches BART's:

* 1D analysis with half-sample symmetric boundary extension; each band has ``(n + 3) // 2``
  samples (the transform is slightly expansive, not orthogonal); the synthesis filters invert it
  exactly.
* Levels: an axis is transformed while the band it would split is at least ``minsize = min(n, 16)``
  long.
* Random cycle spinning: before each thresholding the image is circularly shifted by a random
  amount per axis in [0, 2^levels] and shifted back afterwards. BART draws these shifts with glibc's
  ``rand_r`` from state 1; :class:`WaveletThreshold` reproduces that sequence exactly
  (``shift="bart"``), or uses a torch generator (``shift="random"``), or no shift (``"none"``).

Images are ``(..., y, x)`` complex tensors; all leading axes are batch axes.
"""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["WaveletThreshold", "wavelet_levels", "fwt", "iwt", "soft_threshold"]

FLEN = 4
# dau2 filters: [analysis | synthesis][low | high][tap]
DAU2 = (
    ((-0.1294095225512603, 0.2241438680420134, 0.8365163037378077, 0.4829629131445341),
     (-0.4829629131445341, 0.8365163037378077, -0.2241438680420134, -0.1294095225512603)),
    ((0.4829629131445341, 0.8365163037378077, 0.2241438680420134, -0.1294095225512603),
     (-0.1294095225512603, -0.2241438680420134, 0.8365163037378077, -0.4829629131445341)),
)
RAND_MAX = 2147483647


def _bandsize(n: int) -> int:
    return (n + FLEN - 1) // 2


def _coord(i: int, n: int) -> int:
    if i < 0:
        i = -i - 1
    if i >= n:
        i = n - 1 - (i - n)
    return i


@lru_cache(maxsize=256)
def _down_index(n: int) -> torch.Tensor:
    b = _bandsize(n)
    return torch.tensor([[_coord(2 * j + 1 - (FLEN - 1) + l, n) for l in range(FLEN)]
                         for j in range(b)], dtype=torch.long)


@lru_cache(maxsize=256)
def _up_index(n: int):
    """For each output sample n: the two band indices and which taps they use (or -1)."""
    b = _bandsize(n)
    idx, tap = [], []
    for i in range(n):
        odd = (i + 1) % 2
        row_i, row_t = [], []
        for l in range(odd, FLEN, 2):
            j = (i + l - 1) // 2
            if 0 <= j < b:
                row_i.append(j)
                row_t.append(FLEN - l - 1)
            else:
                row_i.append(0)
                row_t.append(-1)
        idx.append(row_i)
        tap.append(row_t)
    return torch.tensor(idx, dtype=torch.long), torch.tensor(tap, dtype=torch.long)


def _filters(kind: int, real_dtype, device):
    f = torch.tensor(DAU2[kind], dtype=torch.float64)
    return f.to(dtype=real_dtype, device=device)


def _analysis(x: torch.Tensor, axis: int):
    """One analysis step along ``axis``: returns (low, high), each (n + 3) // 2 long."""
    xt = x.movedim(axis, -1)
    n = xt.shape[-1]
    idx = _down_index(n).to(x.device)
    g = xt[..., idx]  # (..., b, FLEN)
    f = _filters(0, x.real.dtype, x.device).flip(-1)  # tap l uses filter[FLEN - l - 1]
    low = torch.einsum("...bl,l->...b", g, f[0].to(g.dtype))
    high = torch.einsum("...bl,l->...b", g, f[1].to(g.dtype))
    return low.movedim(-1, axis), high.movedim(-1, axis)


def _synthesis(low: torch.Tensor, high: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    lo = low.movedim(axis, -1)
    hi = high.movedim(axis, -1)
    idx, tap = _up_index(n)
    idx, tap = idx.to(lo.device), tap.to(lo.device)
    f = _filters(1, lo.real.dtype, lo.device)  # (2, FLEN)
    zero = torch.zeros(2, 1, dtype=f.dtype, device=f.device)
    fz = torch.cat([f, zero], dim=1)  # tap -1 -> weight 0
    wl = fz[0][tap].to(lo.dtype)  # (n, 2)
    wh = fz[1][tap].to(lo.dtype)
    out = (lo[..., idx] * wl).sum(-1) + (hi[..., idx] * wh).sum(-1)
    return out.movedim(-1, axis)


def wavelet_levels(n: int, minsize: int) -> int:
    """BART's ``wavelet_num_levels`` for one axis (number of transform levels + 1)."""
    b = _bandsize(n)
    return 1 + (wavelet_levels(b, minsize) if b >= minsize else 1)


def _minsizes(shape, axes):
    return {a: min(shape[a], 16) for a in axes}


def fwt(x: torch.Tensor, axes=(-2, -1), minsize=None):
    """Forward multi-level transform. Returns a list of levels, each a dict band-key -> tensor;
    the last entry also holds the coarse band under key ``"coarse"``. Axes of size 1 are skipped.
    """
    axes = [a % x.ndim for a in axes if x.shape[a] > 1]
    minsize = _minsizes(x.shape, axes) if minsize is None else minsize
    levels = []
    cur = x
    while axes:
        bands = {(): cur}
        for a in sorted(axes, reverse=True):  # x axis (lower BART dim) first
            new = {}
            for key, b in bands.items():
                lo, hi = _analysis(b, a)
                new[key + ((a, 0),)] = lo
                new[key + ((a, 1),)] = hi
            bands = new
        low_key = tuple((a, 0) for a in sorted(axes, reverse=True))
        cur = bands.pop(low_key)
        levels.append({"axes": list(axes), "shape": None, "bands": bands})
        axes = [a for a in axes if cur.shape[a] >= minsize[a]]
    levels.append({"coarse": cur})
    return levels


def iwt(levels, shape) -> torch.Tensor:
    """Inverse of :func:`fwt`; ``shape`` is the shape of the original image."""
    cur = levels[-1]["coarse"]
    sizes = [list(shape)]
    # recompute the size of the input of each level
    for lev in levels[:-1]:
        s = list(sizes[-1])
        for a in lev["axes"]:
            s[a] = _bandsize(s[a])
        sizes.append(s)
    for k in range(len(levels) - 2, -1, -1):
        lev = levels[k]
        axes = sorted(lev["axes"], reverse=True)
        bands = dict(lev["bands"])
        bands[tuple((a, 0) for a in axes)] = cur
        insize = sizes[k]
        for i in range(len(axes) - 1, -1, -1):  # undo the last axis first
            a = axes[i]
            new = {}
            for key in {kk[:i] for kk in bands}:
                new[key] = _synthesis(bands[key + ((a, 0),)], bands[key + ((a, 1),)], insize[a], a)
            bands = new
        cur = bands[()]
    return cur


def soft_threshold(c: torch.Tensor, t: float) -> torch.Tensor:
    """Complex soft-thresholding: c * max(0, |c| - t) / |c|."""
    mag = torch.abs(c)
    scale = torch.clamp(mag - t, min=0) / torch.where(mag > 0, mag, torch.ones_like(mag))
    return c * scale


def _rand_r(state: int):
    """glibc rand_r: returns (value, new_state)."""
    nxt = state
    nxt = (nxt * 1103515245 + 12345) & 0xFFFFFFFF
    result = (nxt // 65536) % 2048
    nxt = (nxt * 1103515245 + 12345) & 0xFFFFFFFF
    result = (result << 10) ^ ((nxt // 65536) % 1024)
    nxt = (nxt * 1103515245 + 12345) & 0xFFFFFFFF
    result = (result << 10) ^ ((nxt // 65536) % 1024)
    return result, nxt


class WaveletThreshold:
    """Proximal-style wavelet soft-thresholding with BART's semantics (see module docstring).

    ``__call__(x, t)`` thresholds the coefficients of x at ``t``. The shift state advances on each
    call, as in BART, so a fresh object replays BART's sequence from the start.
    """

    def __init__(self, shift: str = "bart", generator: torch.Generator | None = None):
        if shift not in ("bart", "random", "none"):
            raise ValueError(f"shift must be 'bart', 'random' or 'none', not {shift!r}")
        self.shift = shift
        self.generator = generator
        self._state = 1

    def _rand_lim(self, limit: int) -> int:
        divisor = RAND_MAX // (limit + 1)
        while True:
            r, self._state = _rand_r(self._state)
            v = r // divisor
            if v <= limit:
                return v

    def _shifts(self, shape):
        axes = [a for a in (-1, -2) if shape[a] > 1]
        out = {}
        for a in axes:
            limit = 1 << wavelet_levels(shape[a], min(shape[a], 16))
            if self.shift == "bart":
                out[a] = self._rand_lim(limit)
            elif self.shift == "random":
                out[a] = int(torch.randint(0, limit + 1, (1,), generator=self.generator))
            else:
                out[a] = 0
        return out

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        shifts = self._shifts(x.shape)
        dims = tuple(shifts)
        amount = tuple(shifts[a] for a in dims)
        xs = torch.roll(x, shifts=amount, dims=dims) if any(amount) else x
        levels = fwt(xs)
        for lev in levels[:-1]:
            lev["bands"] = {k: soft_threshold(v, t) for k, v in lev["bands"].items()}
        levels[-1]["coarse"] = soft_threshold(levels[-1]["coarse"], t)
        y = iwt(levels, xs.shape)
        return torch.roll(y, shifts=tuple(-s for s in amount), dims=dims) if any(amount) else y
