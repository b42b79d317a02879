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
import torch.nn.functional as F

__all__ = ["WaveletThreshold", "wavelet_threshold", "wavelet_levels", "fwt", "soft_threshold"]

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


def wavelet_levels(n: int, minsize: int) -> int:
    """BART's ``wavelet_num_levels`` for one axis (number of transform levels + 1)."""
    b = _bandsize(n)
    return 1 + (wavelet_levels(b, minsize) if b >= minsize else 1)


def _weights(kind: int, axis: int, dtype, device) -> torch.Tensor:
    """conv weights (2 bands, 1, kh, kw): analysis taps reversed, synthesis taps as they are."""
    f = torch.tensor(DAU2[kind], dtype=dtype, device=device)
    if kind == 0:
        f = f.flip(-1)
    return f.reshape(2, 1, 1, FLEN) if axis == -1 else f.reshape(2, 1, FLEN, 1)


def _pad_symmetric(t: torch.Tensor, axis: int, left: int, right: int) -> torch.Tensor:
    n = t.shape[axis]
    return torch.cat([t.narrow(axis, 0, left).flip(axis), t,
                      t.narrow(axis, n - right, right).flip(axis)], dim=axis)


def _split(t: torch.Tensor, axis: int) -> torch.Tensor:
    """Analysis along ``axis`` (-1 or -2) of real ``(M, H, W)`` -> ``(M * 2, H', W')``.

    Band b of item m lands at index ``2 m + b`` (0 low, 1 high). Output length (n + 3) // 2,
    out[j] = sum_l x[sym(2j - 2 + l)] h[3 - l] with half-sample symmetric extension (BART).
    """
    n = t.shape[axis]
    b = _bandsize(n)
    tp = _pad_symmetric(t, axis, 2, 2 * b - n)
    stride = (1, 2) if axis == -1 else (2, 1)
    out = F.conv2d(tp.unsqueeze(1), _weights(0, axis, t.dtype, t.device), stride=stride)
    return out.reshape((-1,) + out.shape[2:])


def _synthesis_weights(axis: int, dtype, device) -> torch.Tensor:
    """Polyphase synthesis weights (out: even/odd, in: low/high, 2 taps).

    From BART's up-sampling loop: out[2i] = g0 c[i+1] + g2 c[i] and out[2i+1] = g1 c[i+1] +
    g3 c[i], summed over the low and high bands c (zero outside the band).
    """
    g = torch.tensor(DAU2[1], dtype=dtype, device=device)  # (band, tap)
    w = torch.stack([g[:, [2, 0]], g[:, [3, 1]]])  # (even/odd, band, 2 taps)
    return w.reshape(2, 2, 1, 2) if axis == -1 else w.reshape(2, 2, 2, 1)


def _merge(c: torch.Tensor, axis: int, n: int) -> torch.Tensor:
    """Synthesis: real ``(M * 2, H', W')`` (low/high pairs) -> ``(M, H, W)`` with length n."""
    c = c.reshape((-1, 2) + c.shape[1:])
    pad = (0, 1) if axis == -1 else (0, 0, 0, 1)
    eo = F.conv2d(F.pad(c, pad), _synthesis_weights(axis, c.dtype, c.device))  # (M, 2, ...)
    if axis == -1:  # interleave even/odd samples
        out = torch.stack([eo[:, 0], eo[:, 1]], dim=-1).flatten(-2)
    else:
        out = torch.stack([eo[:, 0], eo[:, 1]], dim=-2).flatten(-3, -2)
    return out.narrow(axis, 0, n)


def _to_pairs(x: torch.Tensor) -> torch.Tensor:
    """complex (..., H, W) -> real (prod(...) * 2, H, W), (re, im) adjacent."""
    r = torch.view_as_real(x.contiguous()).movedim(-1, -3)
    return r.reshape((-1,) + r.shape[-2:])


def _from_pairs(t: torch.Tensor, shape) -> torch.Tensor:
    r = t.reshape(tuple(shape[:-2]) + (2,) + tuple(t.shape[-2:])).movedim(-3, -1)
    return torch.view_as_complex(r.contiguous())


@lru_cache(maxsize=64)
def _sym_index(n: int) -> torch.Tensor:
    """Indices of the half-sample symmetric extension of length n over positions -2..2b-1."""
    return torch.tensor([_coord(p, n) for p in range(-2, 2 * _bandsize(n))], dtype=torch.long)


@lru_cache(maxsize=16)
def _weights_2d(dtype, device):
    """Polyphase 2x2 analysis (band, phase, 2, 2) and synthesis (phase, band, 2, 2) kernels.

    Band and phase channels are numbered ``2 * y_index + x_index``; analysis band 0 is LL.
    The 4x4 stride-2 analysis filter W acts on the symmetric extension tp as
    out[j, i] = sum W[ly, lx] tp[2j + ly, 2i + lx]; with ly = 2 qy + py this is a 2x2
    convolution of the four polyphase components tp[py::2, px::2] with W[2qy + py, 2qx + px].
    """
    h = torch.tensor(DAU2[0], dtype=torch.float64).flip(-1)  # (band, tap), reversed
    g = torch.tensor(DAU2[1], dtype=torch.float64)
    w4 = torch.einsum("ai,bj->abij", h, h).reshape(4, 4, 4)  # (band, ly, lx)
    ana = w4.reshape(4, 2, 2, 2, 2).permute(0, 2, 4, 1, 3).reshape(4, 4, 2, 2)
    s = torch.stack([g[:, [2, 0]], g[:, [3, 1]]], dim=1)  # (band, parity, 2 taps)
    syn = torch.einsum("api,bqj->pqabij", s, s).reshape(4, 4, 2, 2)  # (py px, ay ax, oy, ox)
    return ana.to(dtype=dtype, device=device), syn.to(dtype=dtype, device=device)


@lru_cache(maxsize=64)
def _polyphase_index(ny: int, nx: int):
    """Index tensors gathering the 4 polyphase components of the symmetric extension."""
    iy, ix = _sym_index(ny), _sym_index(nx)
    idx_y = torch.stack([iy[py::2] for py in (0, 0, 1, 1)])[:, :, None]  # (4, by + 1, 1)
    idx_x = torch.stack([ix[px::2] for px in (0, 1, 0, 1)])[:, None, :]  # (4, 1, bx + 1)
    return idx_y, idx_x


def _analysis_2d(t: torch.Tensor) -> torch.Tensor:
    """Real ``(M, H, W)`` -> ``(M, 4, (H+3)//2, (W+3)//2)`` (LL, LH, HL, HH)."""
    idx_y, idx_x = _polyphase_index(t.shape[-2], t.shape[-1])
    phases = t[:, idx_y.to(t.device), idx_x.to(t.device)]  # (M, 4, by + 1, bx + 1)
    ana, _ = _weights_2d(t.dtype, t.device)
    return F.conv2d(phases, ana)


def _synthesis_2d(c: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(M, 4, by, bx)`` bands -> ``(M, h, w)``."""
    _, syn = _weights_2d(c.dtype, c.device)
    phases = F.conv2d(F.pad(c, (0, 1, 0, 1)), syn)  # (M, 4 phases, by, bx)
    return F.pixel_shuffle(phases, 2)[:, 0, :h, :w]


def _soft_bands(c: torch.Tensor, thr: float) -> torch.Tensor:
    """Soft-threshold real-pair bands ``(M, k, ...)``, M = 2 * items with (re, im) adjacent."""
    if thr <= 0:
        return c
    v = c.reshape((-1, 2) + c.shape[1:])
    scale = (1.0 - thr / torch.hypot(v[:, 0], v[:, 1])).clamp_(min=0.0)
    return (v * scale.unsqueeze(1)).reshape(c.shape)


def _thresh_rec(t: torch.Tensor, axes, minsize, thr: float) -> torch.Tensor:
    if len(axes) == 2:  # fast path: both axes split at this level
        h, w = t.shape[-2:]
        c = _analysis_2d(t)
        low = c[:, 0]
        axes2 = [a for a in axes if low.shape[a] >= minsize[a]]
        low = _thresh_rec(low, axes2, minsize, thr) if axes2 else _soft_bands(low, thr)
        c = torch.cat([low.unsqueeze(1), _soft_bands(c[:, 1:], thr)], dim=1)
        return _synthesis_2d(c, h, w)
    m = t.shape[0]
    sizes = []
    c = t
    for a in axes:
        sizes.append(c.shape[a])
        c = _split(c, a)
    k = 1 << len(axes)
    c = c.reshape((m, k) + c.shape[1:])
    low = c[:, 0]
    axes2 = [a for a in axes if low.shape[a] >= minsize[a]]
    low = _thresh_rec(low, axes2, minsize, thr) if axes2 else _soft_bands(low, thr)
    c = torch.cat([low.unsqueeze(1), _soft_bands(c[:, 1:], thr)], dim=1)
    c = c.reshape((m * k,) + low.shape[1:])
    for a, n in zip(reversed(axes), reversed(sizes)):
        c = _merge(c, a, n)
    return c


def _axes_minsize(shape):
    axes = [a for a in (-1, -2) if shape[a] > 1]
    return axes, {a: min(shape[a], 16) for a in axes}


def fwt(x: torch.Tensor):
    """Forward multi-level transform of complex ``(..., y, x)``: a list of per-level detail
    tensors (complex, bands stacked on axis -3) followed by the coarse band."""
    axes, minsize = _axes_minsize(x.shape)
    lead = x.shape[:-2]
    t = _to_pairs(x)
    out = []
    while axes:
        m = t.shape[0]
        c = t
        for a in axes:
            c = _split(c, a)
        k = 1 << len(axes)
        c = c.reshape((m, k) + c.shape[1:])
        t, high = c[:, 0], c[:, 1:]
        hv = high.reshape((-1, 2) + high.shape[1:]).movedim(1, -1).contiguous()
        out.append(torch.view_as_complex(hv).reshape(lead + hv.shape[1:-1]))
        axes = [a for a in axes if t.shape[a] >= minsize[a]]
    out.append(_from_pairs(t, lead + t.shape[-2:]))
    return out


def wavelet_threshold(x: torch.Tensor, thr: float) -> torch.Tensor:
    """Soft-threshold all dau2 coefficients of complex ``(..., y, x)`` at ``thr`` (no shift)."""
    axes, minsize = _axes_minsize(x.shape)
    if not axes:
        return soft_threshold(x, thr)
    # oneDNN's per-call overhead dominates for these 4-tap kernels on CPU (2x slower); toggled
    # directly because torch.backends.mkldnn.flags() warns about TF32 on every call
    was = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        return _from_pairs(_thresh_rec(_to_pairs(x), axes, minsize, thr), x.shape)
    finally:
        torch._C._set_mkldnn_enabled(was)


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
        y = wavelet_threshold(xs, t)
        return torch.roll(y, shifts=tuple(-s for s in amount), dims=dims) if any(amount) else y
