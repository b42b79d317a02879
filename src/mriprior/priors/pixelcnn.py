"""PixelCNN++: an autoregressive prior with an explicit (discretised) log-likelihood.

After Salimans, Karpathy, Chen & Kingma, "PixelCNN++" (ICLR 2017), written for MRI images.

Data convention ("network scale")
  The network sees ``x`` of shape ``(batch, C, H, W)``, float, values in ``[-1, 1]``:

  * ``C = 2``: a complex image normalised to max magnitude 1, as (real, imaginary) channels, so
    both lie in ``[-1, 1]``; the channels enter unchanged.
  * ``C = 1``: a magnitude image ``m`` in ``[0, 1]`` enters as ``2 m - 1``
    (:func:`to_network_scale` / :func:`from_network_scale` do the mapping).

  Each channel value is modelled as quantised to 256 bins on ``[-1, 1]``: bin centres
  ``-1 + 2 k / 255`` (``k = 0 .. 255``), bin width ``2 / 255``; the two edge bins extend to
  ``-inf`` and ``+inf``. So the prior of a magnitude image is a distribution over ``m`` in steps
  of ``1 / 255``, and the NLL is a discrete NLL (no change-of-variables term, whatever mapping).

Likelihood (per pixel, ``K = n_mix`` components)
  ``p(x_ij) = sum_k pi_k prod_c DL(x_c | mu_kc, s_kc)`` where ``DL`` is the logistic
  distribution with mean ``mu`` and scale ``s`` integrated over the bin around the value:
  ``sigmoid((x - mu + 1/255) / s) - sigmoid((x - mu - 1/255) / s)``, with the lower term dropped
  below ``-1 + 1/255`` and the upper term above ``1 - 1/255`` (open edge bins). The bin is centred
  on ``x`` itself, not on ``round(x)``: for values on the grid this is exactly the discrete
  probability; between grid points it is a smooth interpolation, so ``d NLL / d x`` is meaningful
  (for use as a regulariser). Values outside ``[-1, 1]`` keep a finite NLL whose gradient points
  back into the range. The log of the bin mass uses
  ``log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(-expm1(b - a))``,
  exact and stable for every ``a > b``. Log-scales are clamped below at -7.

  Channel conditioning (as PixelCNN++ does for RGB): for ``C = 2`` the imaginary mean is
  ``mu_k,imag + c_k * x_real`` with ``c_k = tanh(.)`` from the network, i.e. the imaginary
  channel of a pixel is conditioned on the real channel of the same pixel, while the network's
  parameters at pixel ``(i, j)`` depend only on the pixels before it in raster order (rows above,
  and the row's pixels to the left).

Network output ``params`` ``(batch, P, H, W)``, ``P = K (1 + 2C + C(C-1)/2)`` (``3K`` or ``6K``):
  ``[logits (K) | means (C x K) | log-scales (C x K) | coefficients (K, only C = 2)]``, channel
  ``c`` of component ``k`` at offset ``c * K + k`` inside its block.

Architecture (:class:`PixelCNNPP`): two causal streams, a "down" stream ``u`` (sees the rows
above) from down-shifted 2x3 convolutions and a "down-right" stream ``ul`` (sees the rows above
and the pixels to the left) from down-right-shifted 2x2 convolutions; the input gets an extra
all-ones channel so zero padding is recognisable. ``n_levels`` resolution levels: an encoder of
``n_resnet`` gated resnets per level (strided shifted convolutions between levels), then a decoder
(shifted transposed convolutions) with ``n_resnet`` (lowest level) or ``n_resnet + 1`` gated
resnets per level, each taking the matching encoder output as a skip input (``ul`` also gets
``u``). Gated resnet: ``c = conv(concat_elu(x)) [+ nin(concat_elu(skip))]``,
``c = conv(dropout(concat_elu(c)))`` into ``a, b``, output ``x + a * sigmoid(b)``. All
convolutions are weight-normalised (``w = g v / ||v||``), initialised without data; the last
convolution of every gated resnet and the output layer start at scale 0.1. H and W must be
multiples of ``2 ** (n_levels - 1)``.

Sampling (:func:`sample_pixelcnn`) is ancestral: pixel by pixel in raster order, the real channel
then the imaginary channel given the (quantised) real value; one network call per pixel, on the
rows computed so far only (``H * W`` calls in all).

Everything takes tensors on any device; nothing here touches the global RNG except network
initialisation (``torch.manual_seed`` before construction makes two networks identical).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mriprior.errors import InputError, check_int

__all__ = [
    "PixelCNNPP",
    "PIXELCNN_PRESETS",
    "PIXELCNN_KEYS",
    "BINS",
    "HALF_BIN",
    "LOG_SCALE_MIN",
    "num_params_per_pixel",
    "split_params",
    "conditional_means",
    "discretized_logistic_mixture_nll",
    "to_network_scale",
    "from_network_scale",
    "quantise",
    "image_nll",
    "bits_per_dim",
    "image_bpd",
    "sample_pixelcnn",
    "likelihood_meta",
]

BINS = 256
HALF_BIN = 1.0 / (BINS - 1)  # half the bin width 2 / 255
LOG_SCALE_MIN = -7.0
_OUT_INIT = 0.1  # initial weight-norm scale of the residual branches' last conv and the output

PIXELCNN_KEYS = ("in_channels", "filters", "n_resnet", "n_mix", "n_levels", "dropout")

PIXELCNN_PRESETS: dict[str, dict[str, Any]] = {
    # 1.52 M parameters (measured: 1,515,940 complex; 1,514,870 magnitude): trains on a 2-core
    # CPU at 64 x 64 crops (configs/pixelcnn-cpu.yaml has the measured throughput).
    "pixelcnn-cpu": {
        "type": "pixelcnn", "in_channels": 2, "filters": 40, "n_resnet": 2, "n_mix": 5,
        "n_levels": 3, "dropout": 0.0,
    },
    # The founding study's size: 128 filters, 3 resnets per stage, 10 mixtures; 3 levels as in
    # PixelCNN++. 21.7 M parameters (measured: 21,745,912 complex, weight-norm scales included).
    "pixelcnn-published": {
        "type": "pixelcnn", "in_channels": 2, "filters": 128, "n_resnet": 3, "n_mix": 10,
        "n_levels": 3, "dropout": 0.5,
    },
}


# ----------------------------------------------------------------------------- checks
def num_params_per_pixel(in_channels: int, n_mix: int) -> int:
    """Output channels of the network: ``n_mix * (1 + 2C + C(C-1)/2)``."""
    c = in_channels
    return n_mix * (1 + 2 * c + c * (c - 1) // 2)


# ----------------------------------------------------------------------------- layers
def _concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of ``[x, -x]`` along channels: ``(B, C, H, W) -> (B, 2C, H, W)``."""
    return F.elu(torch.cat([x, -x], dim=1))


def _down_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift down one row (zeros enter at the top)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def _right_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift right one column (zeros enter at the left)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class _WNConv(nn.Module):
    """Weight-normalised 2-D convolution (or transposed convolution): ``w = g v / ||v||`` with the
    norm over each output channel's weights. ``pad`` is (left, right, top, bottom) zero padding
    applied before the convolution; ``crop`` (rows, (col_start, col_end)) after a transposed one.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], *, stride: int = 1,
                 pad: tuple[int, int, int, int] = (0, 0, 0, 0), transposed: bool = False,
                 init_scale: float = 1.0):
        super().__init__()
        kh, kw = kernel
        self.stride, self.pad, self.transposed = stride, pad, transposed
        self.kernel = kernel
        shape = (cin, cout, kh, kw) if transposed else (cout, cin, kh, kw)
        self.v = nn.Parameter(torch.randn(shape) * 0.05)
        self.g = nn.Parameter(torch.full((cout,), float(init_scale)))
        self.bias = nn.Parameter(torch.zeros(cout))

    def weight(self) -> torch.Tensor:
        if self.transposed:
            norm = self.v.transpose(0, 1).flatten(1).norm(dim=1)  # (cout,)
            return self.v * (self.g / norm).view(1, -1, 1, 1)
        norm = self.v.flatten(1).norm(dim=1)
        return self.v * (self.g / norm).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        w = self.weight()
        if not self.transposed:
            return F.conv2d(x, w, self.bias, stride=self.stride)
        kh, kw = self.kernel
        h, wd = x.shape[-2:]
        y = F.conv_transpose2d(x, w, self.bias, stride=self.stride, output_padding=1)
        # Keep the first 2h rows (row r comes from input row r // 2: causal); centre the columns.
        c0 = (kw - 1) // 2 if kw % 2 else 0
        return y[:, :, : 2 * h, c0: c0 + 2 * wd]


def _down_shifted(cin, cout, kernel=(2, 3), stride=1, init_scale=1.0) -> _WNConv:
    """Output (i, j) sees input rows i - kh + 1 .. i and columns j - kw//2 .. j + kw//2."""
    kh, kw = kernel
    return _WNConv(cin, cout, kernel, stride=stride,
                   pad=((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0), init_scale=init_scale)


def _down_right_shifted(cin, cout, kernel=(2, 2), stride=1, init_scale=1.0) -> _WNConv:
    """Output (i, j) sees input rows i - kh + 1 .. i and columns j - kw + 1 .. j."""
    kh, kw = kernel
    return _WNConv(cin, cout, kernel, stride=stride, pad=(kw - 1, 0, kh - 1, 0),
                   init_scale=init_scale)


def _nin(cin, cout, init_scale=1.0) -> _WNConv:
    return _WNConv(cin, cout, (1, 1), init_scale=init_scale)


class _GatedResnet(nn.Module):
    def __init__(self, filters: int, make_conv: Callable[..., _WNConv], skip_channels: int,
                 dropout: float):
        super().__init__()
        self.conv_in = make_conv(2 * filters, filters)
        self.skip = _nin(2 * skip_channels, filters) if skip_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = make_conv(2 * filters, 2 * filters, init_scale=_OUT_INIT)

    def forward(self, x: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv_in(_concat_elu(x))
        if self.skip is not None:
            c = c + self.skip(_concat_elu(a))
        c = self.conv_out(self.dropout(_concat_elu(c)))
        gate_a, gate_b = c.chunk(2, dim=1)
        return x + gate_a * torch.sigmoid(gate_b)


class PixelCNNPP(nn.Module):
    """PixelCNN++ ``net(x) -> params``: ``x`` ``(B, C, H, W)`` in network scale ``[-1, 1]``,
    ``params`` ``(B, n_mix (1 + 2C + C(C-1)/2), H, W)`` (layout in the module docstring).

    Args:
        in_channels: 2 (complex: real, imaginary) or 1 (magnitude, as ``2 m - 1``).
        filters: channels of both streams at every level.
        n_resnet: gated resnets per level in the encoder (decoder: this, or this + 1).
        n_mix: logistic mixture components per pixel.
        n_levels: resolution levels (``n_levels - 1`` stride-2 down / up samplings).
        dropout: dropout probability inside the gated resnets (train mode only).

    ``model.config`` holds the arguments plus ``"type": "pixelcnn"``.
    """

    def __init__(self, in_channels: int = 2, filters: int = 128, n_resnet: int = 3,
                 n_mix: int = 10, n_levels: int = 3, dropout: float = 0.5):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, 1)
        if in_channels not in (1, 2):
            raise InputError(f"in_channels must be 1 (magnitude) or 2 (complex: real, imag), "
                             f"got {in_channels}")
        filters = check_int("filters", filters, 1)
        n_resnet = check_int("n_resnet", n_resnet, 1)
        n_mix = check_int("n_mix", n_mix, 1)
        n_levels = check_int("n_levels", n_levels, 1)
        if (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                or not 0.0 <= dropout < 1.0):
            raise InputError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.in_channels, self.filters, self.n_resnet = in_channels, filters, n_resnet
        self.n_mix, self.n_levels = n_mix, n_levels
        self.out_params = num_params_per_pixel(in_channels, n_mix)
        self.config: dict[str, Any] = {
            "type": "pixelcnn", "in_channels": in_channels, "filters": filters,
            "n_resnet": n_resnet, "n_mix": n_mix, "n_levels": n_levels,
            "dropout": float(dropout),
        }
        f, cin = filters, in_channels + 1  # + the all-ones channel

        def u_conv(a, b, init_scale=1.0):
            return _down_shifted(a, b, (2, 3), init_scale=init_scale)

        def ul_conv(a, b, init_scale=1.0):
            return _down_right_shifted(a, b, (2, 2), init_scale=init_scale)

        self.u_init = _down_shifted(cin, f, (2, 3))
        self.ul_init_up = _down_shifted(cin, f, (1, 3))
        self.ul_init_left = _down_right_shifted(cin, f, (2, 1))

        self.enc_u = nn.ModuleList()
        self.enc_ul = nn.ModuleList()
        for _ in range(n_levels):
            self.enc_u.append(nn.ModuleList(
                _GatedResnet(f, u_conv, 0, dropout) for _ in range(n_resnet)))
            self.enc_ul.append(nn.ModuleList(
                _GatedResnet(f, ul_conv, f, dropout) for _ in range(n_resnet)))
        self.down_u = nn.ModuleList(_down_shifted(f, f, (2, 3), stride=2)
                                    for _ in range(n_levels - 1))
        self.down_ul = nn.ModuleList(_down_right_shifted(f, f, (2, 2), stride=2)
                                     for _ in range(n_levels - 1))

        # Decoder, lowest level first.
        self.dec_u = nn.ModuleList()
        self.dec_ul = nn.ModuleList()
        for lev in range(n_levels):
            n = n_resnet if lev == 0 else n_resnet + 1
            self.dec_u.append(nn.ModuleList(
                _GatedResnet(f, u_conv, f, dropout) for _ in range(n)))
            self.dec_ul.append(nn.ModuleList(
                _GatedResnet(f, ul_conv, 2 * f, dropout) for _ in range(n)))
        self.up_u = nn.ModuleList(_WNConv(f, f, (2, 3), stride=2, transposed=True)
                                  for _ in range(n_levels - 1))
        self.up_ul = nn.ModuleList(_WNConv(f, f, (2, 2), stride=2, transposed=True)
                                   for _ in range(n_levels - 1))
        self.out = _nin(f, self.out_params, init_scale=_OUT_INIT)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2 ** (self.n_levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"x must be a real float tensor (batch, channel, y, x), got {shape}")
        b, c, h, w = x.shape
        if c != self.in_channels:
            raise InputError(f"x has {c} channels (shape {tuple(x.shape)}), the PixelCNN++ "
                             f"expects {self.in_channels}")
        m = self.size_multiple
        if h % m or w % m:
            raise InputError(f"image size {h} x {w} (x shape {tuple(x.shape)}) is not divisible "
                             f"by {m} = 2^{self.n_levels - 1}, required by the {self.n_levels} "
                             "resolution levels; pad or crop the image")
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        u = _down_shift(self.u_init(x))
        ul = _down_shift(self.ul_init_up(x)) + _right_shift(self.ul_init_left(x))
        us, uls = [u], [ul]
        for lev in range(self.n_levels):
            for ru, rul in zip(self.enc_u[lev], self.enc_ul[lev]):
                u = ru(u)
                ul = rul(ul, u)
                us.append(u)
                uls.append(ul)
            if lev < self.n_levels - 1:
                u = self.down_u[lev](u)
                ul = self.down_ul[lev](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for lev in range(self.n_levels):
            for ru, rul in zip(self.dec_u[lev], self.dec_ul[lev]):
                u = ru(u, us.pop())
                ul = rul(ul, torch.cat([u, uls.pop()], dim=1))
            if lev < self.n_levels - 1:
                u = self.up_u[lev](u)
                ul = self.up_ul[lev](ul)
        assert not us and not uls
        return self.out(F.elu(ul))


# ----------------------------------------------------------------------------- likelihood
def _n_mix(params: torch.Tensor, channels: int) -> int:
    per = num_params_per_pixel(channels, 1)
    if params.shape[1] % per:
        raise InputError(f"params have {params.shape[1]} channels, not a multiple of {per} "
                         f"(the parameters of one component for {channels} image channel(s))")
    return params.shape[1] // per


def split_params(params: torch.Tensor, channels: int):
    """``params (B, P, H, W)`` -> ``(logits (B, K, H, W), means (B, C, K, H, W), log_scales
    (B, C, K, H, W) clamped at -7, coeffs (B, K, H, W) in (-1, 1) or None for C = 1)``."""
    k = _n_mix(params, channels)
    c = channels
    logits = params[:, :k]
    means = params[:, k: k + c * k].unflatten(1, (c, k))
    log_scales = params[:, k + c * k: k + 2 * c * k].unflatten(1, (c, k)).clamp(min=LOG_SCALE_MIN)
    coeffs = torch.tanh(params[:, k + 2 * c * k:]) if c == 2 else None
    return logits, means, log_scales, coeffs


def conditional_means(means: torch.Tensor, coeffs: torch.Tensor | None,
                      x: torch.Tensor) -> torch.Tensor:
    """Means ``(B, C, K, H, W)`` with the imaginary mean shifted by ``coeff * x_real`` (C = 2)."""
    if coeffs is None:
        return means
    return torch.stack([means[:, 0], means[:, 1] + coeffs * x[:, 0:1]], dim=1)


def _check_pair(params: torch.Tensor, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise InputError(f"x must be a real float tensor (batch, channel, y, x), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[1] not in (1, 2):
        raise InputError(f"x must have 1 or 2 channels, got shape {tuple(x.shape)}")
    if (not isinstance(params, torch.Tensor) or params.ndim != 4
            or params.shape[0] != x.shape[0] or params.shape[2:] != x.shape[2:]):
        raise InputError(f"params shape "
                         f"{tuple(params.shape) if isinstance(params, torch.Tensor) else '?'} "
                         f"does not match x shape {tuple(x.shape)} (batch, P, y, x)")


def discretized_logistic_mixture_nll(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats per sample ``(B,)``, summed over pixels and channels.

    ``params`` ``(B, P, H, W)`` from :class:`PixelCNNPP`; ``x`` ``(B, C, H, W)`` in network scale
    (C = 1 or 2). Differentiable w.r.t. both (see the module docstring for the bin convention).
    Computed in float32 at least (float64 inputs stay float64).
    """
    _check_pair(params, x)
    dtype = torch.promote_types(torch.promote_types(params.dtype, x.dtype), torch.float32)
    params, x = params.to(dtype), x.to(dtype)
    logits, means, log_scales, coeffs = split_params(params, x.shape[1])
    means = conditional_means(means, coeffs, x)
    inv_s = torch.exp(-log_scales)
    centred = x.unsqueeze(2) - means  # (B, C, K, H, W)
    a = inv_s * (centred + HALF_BIN)  # upper edge of the bin
    b = inv_s * (centred - HALF_BIN)  # lower edge
    log_cdf_a = F.logsigmoid(a)  # log P(X <= x + 1/255)
    log_sf_b = F.logsigmoid(-b)  # log P(X > x - 1/255)
    log_mass = log_cdf_a + log_sf_b + torch.log(-torch.expm1(-2.0 * HALF_BIN * inv_s))
    xe = x.unsqueeze(2)
    log_p = torch.where(xe < -1.0 + HALF_BIN, log_cdf_a,
                        torch.where(xe > 1.0 - HALF_BIN, log_sf_b, log_mass))
    log_p = log_p.sum(1) + F.log_softmax(logits, dim=1)  # (B, K, H, W)
    return -torch.logsumexp(log_p, dim=1).flatten(1).sum(1)


# ----------------------------------------------------------------------------- images
def to_network_scale(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Images in the prior's normalisation -> network input ``(B, C, H, W)`` in ``[-1, 1]``.

    Accepted: complex ``(B, H, W)`` (C = 2; max magnitude ~1), real ``(B, H, W)`` magnitude in
    ``[0, 1]`` (C = 1), or real ``(B, C, H, W)`` channels (complex: real, imag as they are;
    magnitude: in ``[0, 1]``). Magnitudes map to ``2 m - 1``.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"image must be a tensor, got {type(x).__name__}")
    if x.is_complex():
        if x.ndim != 3:
            raise InputError(f"complex image must be (batch, y, x), got shape {tuple(x.shape)}")
        if in_channels != 2:
            raise InputError(f"a complex image {tuple(x.shape)} needs a 2-channel (complex) "
                             f"prior; this prior has {in_channels} channel (magnitude)")
        return torch.stack([x.real, x.imag], dim=1)
    if not x.is_floating_point():
        raise InputError(f"image must be complex or real float, got {x.dtype}")
    if x.ndim == 3:
        if in_channels != 1:
            raise InputError(f"a real (batch, y, x) image {tuple(x.shape)} is a magnitude; this "
                             "prior is complex (2 channels): pass a complex image or "
                             "(batch, 2, y, x) channels")
        return 2.0 * x.unsqueeze(1) - 1.0
    if x.ndim == 4:
        if x.shape[1] != in_channels:
            raise InputError(f"image channels {x.shape[1]} (shape {tuple(x.shape)}) do not "
                             f"match the prior's {in_channels}")
        return 2.0 * x - 1.0 if in_channels == 1 else x
    raise InputError(f"image must be (batch, y, x) or (batch, C, y, x), got shape "
                     f"{tuple(x.shape)}")


def from_network_scale(x: torch.Tensor) -> torch.Tensor:
    """Network scale ``(B, C, H, W)`` -> the prior's normalisation (magnitude: ``(x + 1) / 2``)."""
    return (x + 1.0) / 2.0 if x.shape[1] == 1 else x


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Nearest of the 256 bin centres ``-1 + 2 k / 255`` (values clamped to ``[-1, 1]``)."""
    k = torch.round((x.clamp(-1.0, 1.0) + 1.0) / (2.0 * HALF_BIN))
    return k * (2.0 * HALF_BIN) - 1.0


def _channels_of(net) -> int:
    c = getattr(net, "in_channels", None)
    if c is None:
        c = getattr(getattr(net, "module", None), "in_channels", None)  # DDP
    if c is None:
        raise InputError("net is not a PixelCNNPP (no in_channels)")
    return int(c)


def image_nll(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """NLL in nats ``(B,)`` of images ``x`` under the PixelCNN++ ``net``; differentiable w.r.t.
    ``x`` (and the weights). ``x``: complex ``(B, H, W)`` for a 2-channel prior, real ``(B, H, W)``
    magnitude in ``[0, 1]`` for a 1-channel prior, or real ``(B, C, H, W)`` channels (see
    :func:`to_network_scale`). Images are not rescaled: normalise to max magnitude 1 first."""
    xn = to_network_scale(x, _channels_of(net))
    return discretized_logistic_mixture_nll(net(xn), xn)


def bits_per_dim(nll: torch.Tensor, dims: int) -> torch.Tensor:
    """Nats per image -> bits per dimension (``dims`` = C * H * W real values per image)."""
    return nll / (dims * math.log(2.0))


def image_bpd(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`image_nll` in bits per dimension ``(B,)``."""
    xn = to_network_scale(x, _channels_of(net))
    nll = discretized_logistic_mixture_nll(net(xn), xn)
    return bits_per_dim(nll, xn[0].numel())


def likelihood_meta(in_channels: int) -> dict:
    """The sidecar fields that say how an exported PixelCNN++ prior scores images."""
    return {
        "prior_type": "pixelcnn",
        "parametrisation": "nll",
        "likelihood": "discretized_logistic_mixture",
        "quantisation": {"bins": BINS, "range": [-1.0, 1.0], "bin_width": 2.0 * HALF_BIN,
                         "edges": "open", "log_scale_min": LOG_SCALE_MIN},
        "channel_map": ("complex: (real, imag) of the image normalised to max magnitude 1, "
                        "unchanged" if in_channels == 2 else
                        "magnitude m in [0, 1] -> 2 m - 1"),
        "conditioning": "imag mean += tanh(coeff) * real" if in_channels == 2 else None,
    }


# ----------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_pixelcnn(net: PixelCNNPP, n: int = 4, size=(32, 32), seed: int = 0, device="cpu",
                    temperature: float = 1.0,
                    callback: Callable[[Mapping[str, Any]], None] | None = None) -> torch.Tensor:
    """Ancestral samples ``(n, C, H, W)`` in the prior's normalisation.

    Pixel by pixel in raster order; at each pixel a mixture component ``k ~ softmax(logits / T)``
    (Gumbel-max), then the real value ``mu + T s L`` (``L`` standard logistic), clamped and
    quantised to the 256 bins, then (C = 2) the imaginary value with mean
    ``mu_imag + c_k * real``. ``T = temperature`` (1: the model itself). Complex: real / imag on
    the bin grid in ``[-1, 1]``; magnitude: ``(x + 1) / 2`` in ``[0, 1]``. All draws come from
    ``torch.Generator(device).manual_seed(seed)``. ``callback({"row": i, "x": x})`` after each
    row (``x`` in network scale).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be an integer >= 1, got {n!r}")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    m = net.size_multiple
    if h < 1 or w < 1 or h % m or w % m:
        raise InputError(f"size {h} x {w} is not divisible by {m} (the network's levels)")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise InputError(f"temperature must be a positive number, got {temperature!r}")
    device = torch.device(device)
    net = net.to(device).eval()
    c, k = net.in_channels, net.n_mix
    g = torch.Generator(device=device).manual_seed(int(seed))
    x = torch.zeros(n, c, h, w, device=device)
    rows = torch.arange(n, device=device)
    eps = 1e-5
    for i in range(h):
        top = min(h, -(-(i + 1) // m) * m)  # rows 0..i suffice (causal), rounded up to m
        for j in range(w):
            p = net(x[:, :, :top])[:, :, i, j].float()  # (n, P)
            gumbel = -torch.log(-torch.log(
                torch.rand(n, k, generator=g, device=device).clamp(eps, 1 - eps)))
            comp = torch.argmax(p[:, :k] / temperature + gumbel, dim=1)  # (n,)
            means = p[:, k: k + c * k].view(n, c, k)[rows, :, comp]  # (n, c)
            log_s = p[:, k + c * k: k + 2 * c * k].view(n, c, k)[rows, :, comp]
            scale = torch.exp(log_s.clamp(min=LOG_SCALE_MIN)) * temperature
            u = torch.rand(n, c, generator=g, device=device).clamp(eps, 1 - eps)
            logistic = torch.log(u) - torch.log1p(-u)
            real = quantise(means[:, 0] + scale[:, 0] * logistic[:, 0])
            x[:, 0, i, j] = real
            if c == 2:
                coeff = torch.tanh(p[:, k + 2 * c * k:][rows, comp])
                x[:, 1, i, j] = quantise(means[:, 1] + coeff * real + scale[:, 1] * logistic[:, 1])
        if callback is not None:
            callback({"row": i, "x": x})
    return from_network_scale(x)
