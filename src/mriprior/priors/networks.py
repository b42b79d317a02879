"""Prior networks for MRI images: noise-conditional score networks (backbones) and, registered
here for the same factory and presets, the autoregressive PixelCNN++ of
:mod:`mriprior.priors.pixelcnn` (``"type": "pixelcnn"``; presets ``pixelcnn-cpu``,
``pixelcnn-published``; called as ``net(x)`` without sigma).

Data convention at the network's edge: a complex image ``(batch, y, x)`` complex64 enters as two
real channels ``(batch, 2, y, x)`` (real, imaginary), float32; a magnitude-only prior uses one
channel. The network is a *backbone* ``F(x, sigma)``: it does no preconditioning and no scaling by
sigma. Wrappers elsewhere (a denoiser ``D(x, sigma)`` or a score ``s(x, sigma)``) decide what the
output means.

:class:`ScoreUNet` is an NCSN++ / DDPM-style U-Net:

* residual blocks: GroupNorm -> SiLU -> 3x3 conv -> (+ noise embedding, per channel) -> GroupNorm
  -> SiLU -> dropout -> 3x3 conv, plus a (1x1 conv) skip; the sum is scaled by 1/sqrt(2);
* ``len(channel_mults)`` resolution levels; level ``i`` has ``base_channels * channel_mults[i]``
  channels; between levels a stride-2 3x3 conv downsamples and nearest-neighbour x2 + 3x3 conv
  upsamples; every encoder feature map is concatenated into the decoder (U-Net skips);
* optional multi-head self-attention after every residual block of the levels listed in
  ``attention_levels`` (and in the bottleneck when the lowest level is listed);
* the noise level enters as fixed random Gaussian Fourier features of ``log(sigma)`` (frequencies
  drawn once at construction from N(0, fourier_scale^2), stored as a buffer so checkpoints carry
  them) followed by a two-layer MLP; each residual block adds a learned projection of it.

All normalisations are per sample (GroupNorm, attention within one image), so the output for one
image never depends on the other images of the batch. The network is fully convolutional: it can
be trained on crops and applied to full images of any size whose sides are divisible by
``2 ** (len(channel_mults) - 1)``.

Initialisation uses the global torch RNG (``torch.manual_seed`` before construction makes two
networks identical, Fourier frequencies included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mriprior.errors import InputError, check_int
from mriprior.priors.gan import PhaseGenerator
from mriprior.priors.pixelcnn import PIXELCNN_KEYS, PIXELCNN_PRESETS, PixelCNNPP

__all__ = [
    "ScoreUNet",
    "PixelCNNPP",
    "GaussianFourierFeatures",
    "PRESETS",
    "count_parameters",
    "network_from_config",
    "network_from_preset",
]

_SKIP_SCALE = 1.0 / math.sqrt(2.0)


def _num_groups(channels: int) -> int:
    """GroupNorm groups: about 4 channels per group, at most 32 groups, dividing ``channels``."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


class GaussianFourierFeatures(nn.Module):
    """Fixed random Fourier features of ``log(sigma)``: ``[sin(2 pi w log s), cos(2 pi w log s)]``.

    ``w`` (``dim // 2`` frequencies) ~ N(0, scale^2), drawn once with the global torch RNG and
    kept as a (non-trainable) buffer. Input ``(B,)`` positive sigmas; output ``(B, dim)``.
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise InputError(f"Fourier feature dimension must be even and >= 2, got {dim}")
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        arg = 2.0 * math.pi * torch.log(sigma.float())[:, None] * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)  # (B, dim)


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_num_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_num_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x (B, in_ch, H, W); emb (B, emb_dim), already passed through SiLU
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * _SKIP_SCALE


class _Attention(nn.Module):
    """Multi-head self-attention over the pixels of one feature map (heads of ~64 channels)."""

    def __init__(self, ch: int):
        super().__init__()
        self.heads = max(1, ch // 64)
        while ch % self.heads:
            self.heads -= 1
        self.norm = nn.GroupNorm(_num_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, c/heads)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) * _SKIP_SCALE


class _Down(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _check_int_tuple(name: str, value: Any, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputError(f"{name} must be a list of integers, got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _unet_config(in_channels, out_channels, base_channels, channel_mults, num_res_blocks,
                 attention_levels, dropout, fourier_scale, cond_channels) -> dict:
    """The checked, normalised arguments of :class:`ScoreUNet` (its ``config``)."""
    in_channels = check_int("in_channels", in_channels, 1)
    out_channels = in_channels if out_channels is None else out_channels
    out_channels = check_int("out_channels", out_channels, 1)
    base_channels = check_int("base_channels", base_channels, 2)
    channel_mults = _check_int_tuple("channel_mults", channel_mults, 1)
    if not channel_mults:
        raise InputError("channel_mults must list at least one level")
    num_res_blocks = check_int("num_res_blocks", num_res_blocks, 1)
    n_lev = len(channel_mults)
    levels = _check_int_tuple("attention_levels", attention_levels, -n_lev)
    for lev in levels:
        if lev >= n_lev:
            raise InputError(
                f"attention_levels contains {lev}, but there are only {n_lev} levels "
                f"(0..{n_lev - 1}, or -{n_lev}..-1) for channel_mults={list(channel_mults)}"
            )
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if not _is_number(fourier_scale) or not fourier_scale > 0:
        raise InputError(f"fourier_scale must be a positive number, got {fourier_scale!r}")
    return {"type": "unet", "in_channels": in_channels, "out_channels": out_channels,
            "base_channels": base_channels, "channel_mults": list(channel_mults),
            "num_res_blocks": num_res_blocks,
            "attention_levels": sorted({lev % n_lev for lev in levels}),
            "dropout": float(dropout), "fourier_scale": float(fourier_scale),
            "cond_channels": check_int("cond_channels", cond_channels, 0)}


class ScoreUNet(nn.Module):
    """Noise-conditional U-Net ``F(x, sigma[, cond]) -> (B, out_channels, H, W)``.

    Args:
        in_channels: image channels (2 = real/imaginary of a complex image, 1 = magnitude).
        out_channels: output channels; ``None`` means ``in_channels``.
        base_channels: channels of the first level.
        channel_mults: one multiplier per resolution level; ``len(channel_mults) - 1``
            downsamplings, so H and W must be divisible by ``2 ** (len(channel_mults) - 1)``.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_levels: indices of the levels (0 = full resolution, ``len(channel_mults) - 1``
            = lowest; negative indices count from the lowest, so the default ``(-1,)`` is the
            bottleneck level) that get self-attention; stored normalised (non-negative). Levels,
            not pixel sizes, so the architecture does not depend on the image size (train on
            crops, apply to full images). With the default ``channel_mults`` of 4 levels, level
            3 (= -1) is 16 x 16 for a 128 x 128 input and 32 x 32 for 256 x 256.
        dropout: dropout probability inside the residual blocks (active in train mode only).
        fourier_scale: standard deviation of the random Fourier frequencies of ``log(sigma)``.
        cond_channels: extra input channels carrying a conditioning image (e.g. the magnitude
            for a conditional phase model); ``forward`` then requires ``cond``.

    ``model.config`` holds the constructor arguments plus ``"type": "unet"``;
    ``network_from_config(model.config)`` rebuilds the same architecture.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int | None = None,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (-1,),
        dropout: float = 0.0,
        fourier_scale: float = 16.0,
        cond_channels: int = 0,
    ):
        super().__init__()
        self.config: dict[str, Any] = _unet_config(
            in_channels, out_channels, base_channels, channel_mults, num_res_blocks,
            attention_levels, dropout, fourier_scale, cond_channels)
        c = self.config
        in_channels, out_channels, base_channels = (c["in_channels"], c["out_channels"],
                                                    c["base_channels"])
        channel_mults, num_res_blocks = c["channel_mults"], c["num_res_blocks"]
        attention_levels, cond_channels = c["attention_levels"], c["cond_channels"]
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_channels = cond_channels
        self.channels_last = False  # see use_channels_last
        self.num_levels = len(channel_mults)

        emb_dim = 4 * base_channels
        fourier_dim = base_channels + base_channels % 2  # even
        self.fourier = GaussianFourierFeatures(fourier_dim, float(fourier_scale))
        self.emb_mlp = nn.Sequential(
            nn.Linear(fourier_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        self.conv_in = nn.Conv2d(in_channels + cond_channels, base_channels, 3, padding=1)

        # Encoder. `skip_ch` records the channels of every feature map pushed for the decoder.
        self.down = nn.ModuleList()
        skip_ch = [base_channels]
        ch = base_channels
        for lev, mult in enumerate(channel_mults):
            out_ch = base_channels * mult
            for _ in range(num_res_blocks):
                self.down.append(_ResBlock(ch, out_ch, emb_dim, dropout))
                ch = out_ch
                if lev in attention_levels:
                    self.down.append(_Attention(ch))
                skip_ch.append(ch)
            if lev != self.num_levels - 1:
                self.down.append(_Down(ch))
                skip_ch.append(ch)

        # Bottleneck.
        self.mid = nn.ModuleList([_ResBlock(ch, ch, emb_dim, dropout)])
        if self.num_levels - 1 in attention_levels:
            self.mid.append(_Attention(ch))
        self.mid.append(_ResBlock(ch, ch, emb_dim, dropout))

        # Decoder: num_res_blocks + 1 blocks per level, each consuming one skip.
        self.up = nn.ModuleList()
        for lev in reversed(range(self.num_levels)):
            out_ch = base_channels * channel_mults[lev]
            for _ in range(num_res_blocks + 1):
                self.up.append(_ResBlock(ch + skip_ch.pop(), out_ch, emb_dim, dropout))
                ch = out_ch
                if lev in attention_levels:
                    self.up.append(_Attention(ch))
            if lev != 0:
                self.up.append(_Up(ch))
        assert not skip_ch

        self.norm_out = nn.GroupNorm(_num_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def use_channels_last(self, flag: bool = True) -> "ScoreUNet":
        """Keep weights and activations channels-last (NHWC): 1.3x faster inference with oneDNN
        on the CPU (cpu-small at 4 x 256 x 256: 0.65 vs 0.85 s); on the H200 training was
        slower with it. Same function, float rounding aside."""
        self.channels_last = bool(flag)
        return self.to(memory_format=torch.channels_last if flag else torch.contiguous_format)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2 ** (self.num_levels - 1)

    def _sigma_batch(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if isinstance(sigma, torch.Tensor) and sigma.device == x.device:
            sigma = sigma.to(x.dtype)  # (no device constant in a traced graph)
        else:
            sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.numel() == 1:
            sigma = sigma.reshape(1).expand(b)
        elif sigma.numel() == b and all(s == 1 for s in sigma.shape[1:]):
            sigma = sigma.reshape(b)  # (B,) or (B, 1, 1, 1)
        else:
            raise InputError(
                f"sigma must be a scalar or have shape ({b},) for a batch of {b}, "
                f"got shape {tuple(sigma.shape)}"
            )
        if not bool(torch.all(sigma > 0)):
            raise InputError("sigma must be positive (the network is conditioned on log(sigma))")
        return sigma

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Evaluate the network.

        ``x`` (B, in_channels, H, W) float; ``sigma`` positive, a scalar or (B,) (or (B, 1, 1, 1));
        ``cond`` (B, cond_channels, H, W) when ``cond_channels > 0``, else ``None``.
        Returns (B, out_channels, H, W) in ``x``'s dtype.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"x must be a real float tensor (batch, channel, y, x), got {shape}")
        b, c, h, w = x.shape
        if c != self.in_channels:
            raise InputError(
                f"x has {c} channels (shape {tuple(x.shape)}), network expects {self.in_channels}"
            )
        m = self.size_multiple
        if h % m or w % m:
            raise InputError(
                f"image size {h} x {w} (x shape {tuple(x.shape)}) is not divisible by {m} = "
                f"2^{self.num_levels - 1}, required by the {self.num_levels} resolution levels; "
                f"pad or crop the image"
            )
        if self.cond_channels:
            if cond is None:
                raise InputError(
                    f"this network needs cond of shape ({b}, {self.cond_channels}, {h}, {w})"
                )
            if tuple(cond.shape) != (b, self.cond_channels, h, w):
                raise InputError(
                    f"cond has shape {tuple(cond.shape)}, "
                    f"expected ({b}, {self.cond_channels}, {h}, {w})"
                )
            x_in = torch.cat([x, cond.to(x.dtype)], dim=1)
        else:
            if cond is not None:
                raise InputError("cond given, but this network was built with cond_channels=0")
            x_in = x
        sigma = self._sigma_batch(sigma, x)
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)

        emb = F.silu(self.emb_mlp(self.fourier(sigma).to(x.dtype)))  # (B, emb_dim)

        h_ = self.conv_in(x_in)
        skips = [h_]
        for mod in self.down:
            if isinstance(mod, _ResBlock):
                h_ = mod(h_, emb)
            elif isinstance(mod, _Attention):
                h_ = mod(h_)
                skips[-1] = h_  # attention refines the feature map just pushed
                continue
            else:
                h_ = mod(h_)
            skips.append(h_)
        for mod in self.mid:
            h_ = mod(h_, emb) if isinstance(mod, _ResBlock) else mod(h_)
        for mod in self.up:
            if isinstance(mod, _ResBlock):
                h_ = mod(torch.cat([h_, skips.pop()], dim=1), emb)
            else:
                h_ = mod(h_)
        return self.conv_out(F.silu(self.norm_out(h_)))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``; buffers (e.g. Fourier frequencies) excluded."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_NETWORK_TYPES: dict[str, type[nn.Module]] = {"unet": ScoreUNet, "pixelcnn": PixelCNNPP,
                                              "pix2pix": PhaseGenerator}
_CONSTRUCTOR_KEYS: dict[str, tuple[str, ...]] = {
    "unet": (
        "in_channels", "out_channels", "base_channels", "channel_mults", "num_res_blocks",
        "attention_levels", "dropout", "fourier_scale", "cond_channels",
    ),
    "pixelcnn": PIXELCNN_KEYS,
    "pix2pix": ("base_channels", "depth", "dropout"),
}

PRESETS: dict[str, dict[str, Any]] = {
    # 1.59 M parameters; few channels at full resolution so that it trains on a 2-core CPU at
    # 128 x 128 (about 5 images/s forward+backward at batch 8).
    "cpu-small": {
        "type": "unet",
        "in_channels": 2,
        "out_channels": None,
        "base_channels": 16,
        "channel_mults": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attention_levels": [3],
        "dropout": 0.0,
        "fourier_scale": 16.0,
        "cond_channels": 0,
    },
    # About the founding study's score network size (their RefineNet "small": 8.0 M; this one has
    # 8.95 M parameters), for 256 x 256 images.
    "published": {
        "type": "unet",
        "in_channels": 2,
        "out_channels": None,
        "base_channels": 64,
        "channel_mults": [1, 2, 2, 2],
        "num_res_blocks": 2,
        "attention_levels": [3],
        "dropout": 0.1,
        "fourier_scale": 16.0,
        "cond_channels": 0,
    },
    **PIXELCNN_PRESETS,
}


def network_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Build a network from a config mapping: ``"type"`` (``"unet"`` or ``"pixelcnn"``) plus
    constructor arguments.

    Missing arguments take the constructor's defaults; an unknown key or type raises
    :class:`InputError` naming it. Lists (as read from YAML/JSON) are accepted for tuples.
    """
    if not isinstance(config, Mapping):
        raise InputError(f"network config must be a mapping, got {type(config).__name__}")
    kind = config.get("type")
    if kind is None:
        raise InputError(f"network config needs a 'type' key (one of {sorted(_NETWORK_TYPES)})")
    if kind not in _NETWORK_TYPES:
        raise InputError(
            f"unknown network type {kind!r} in key 'type'; known: {sorted(_NETWORK_TYPES)}"
        )
    allowed = _CONSTRUCTOR_KEYS[kind]
    kwargs = {}
    for key, value in config.items():
        if key == "type":
            continue
        if key not in allowed:
            raise InputError(
                f"unknown network config key {key!r} for type {kind!r}; known: {list(allowed)}"
            )
        kwargs[key] = value
    return _NETWORK_TYPES[kind](**kwargs)


def network_from_preset(name: str, **overrides: Any) -> nn.Module:
    """Build ``PRESETS[name]`` with keyword overrides, e.g. ``in_channels=1, cond_channels=1``."""
    if name not in PRESETS:
        raise InputError(f"unknown network preset {name!r}; known: {sorted(PRESETS)}")
    return network_from_config({**PRESETS[name], **overrides})
