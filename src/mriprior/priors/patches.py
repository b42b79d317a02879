"""Patch priors (the idea of PaDIS, Hu et al. 2024): a denoiser trained on small patches that
know where they are, applied to whole images tile by tile.

Training draws, at every step, one patch size ``p`` from ``sizes`` and cuts ``(area // p)^2``
patches of ``p x p`` at uniformly random positions out of each whole training slice (so every
step costs about as much as ``batch`` crops of ``area x area``, whatever ``p`` is). The network
is a conditional U-Net whose two condition channels are the **position channels** of each pixel:
its ``(y, x)`` coordinate in the slice, centred and scaled by the training slice size ``ref``,

    pos_y = (row + 0.5 - H / 2) / (ref_y / 2),    pos_x likewise,

so a training slice spans [-1, 1] in both directions and an image of another size keeps the
physical pixel positions of the training slices (its edges extrapolate beyond +-1).

At inference :class:`PatchTiler` wraps the network so that it looks like any whole-image network
(``net(x, sigma)``, ``x`` of shape ``(batch, C, H, W)``). With ``infer = None`` (the default) it
applies the fully convolutional network to the whole image at once, with the whole image's
position channels (zero-padded, centred, to the network's size multiple): one evaluation, no
seams. With ``infer = P`` it cuts the image into ``P x P`` tiles that lie inside the image,
starting at 0, at ``s, s + P, s + 2 P, ...`` and at ``H - P`` (likewise in x) for a random shift
``s`` drawn anew at every call, so the seams move from one network evaluation to the next;
later tiles overwrite earlier ones where they overlap. Every tile is then a patch of the kind
seen in training, but the tile borders lack context: on the first patch prior
(``configs/edm-patch-cpu.yaml``, 16-64 pixel patches) 64-pixel tiles denoised 256 x 256
validation slices worse than the whole image at once (held-out loss at sigma 0.01 / 0.03 / 0.1:
0.420 / 0.249 / 0.096 against 0.376 / 0.213 / 0.087), so whole images are the default.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mriprior.errors import InputError

__all__ = ["position_channels", "extract_patches", "training_patches", "tile_starts", "PatchTiler",
           "check_patches"]


def check_patches(patches: Mapping, slice_shape: Sequence[int]) -> dict:
    """The validated ``data.patches`` of a config, checked against the training slices, with
    ``ref`` (the slice shape that the position channels are scaled by) added."""
    for p in sorted({*patches["sizes"], patches.get("infer") or 0} - {0}):
        if p > min(slice_shape):
            raise InputError(f"data.patches: patch size {p} is larger than the slices "
                             f"{tuple(slice_shape)}")
    return {**patches, "ref": [int(slice_shape[0]), int(slice_shape[1])]}


def position_channels(oy: torch.Tensor, ox: torch.Tensor, size: tuple[int, int],
                      image: tuple[int, int], ref: Sequence[int]) -> torch.Tensor:
    """Position channels ``(n, 2, ph, pw)`` of patches with top-left corners ``(oy, ox)`` (each
    ``(n,)`` integer) and size ``size`` in an image of shape ``image``; ``ref``: the training
    slice shape that maps to [-1, 1]."""
    ph, pw = size
    dev = oy.device
    ys = (oy[:, None].float() + torch.arange(ph, device=dev) + 0.5 - image[0] / 2) / (ref[0] / 2)
    xs = (ox[:, None].float() + torch.arange(pw, device=dev) + 0.5 - image[1] / 2) / (ref[1] / 2)
    n = oy.shape[0]
    return torch.stack([ys[:, :, None].expand(n, ph, pw), xs[:, None, :].expand(n, ph, pw)], 1)


def extract_patches(x: torch.Tensor, p: int, per_image: int, ref: Sequence[int],
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_image`` random ``p x p`` patches of each image of ``x`` ``(B, C, H, W)``.

    Returns ``(patches (B * per_image, C, p, p), positions (B * per_image, 2, p, p))``; the
    corners are uniform over the positions inside the image (drawn from ``generator``)."""
    b, c, h, w = x.shape
    if p > h or p > w:
        raise InputError(f"patch size {p} is larger than the images {h} x {w}")
    n = b * per_image
    oy = torch.randint(0, h - p + 1, (n,), generator=generator, device=x.device)
    ox = torch.randint(0, w - p + 1, (n,), generator=generator, device=x.device)
    ar = torch.arange(p, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]  # (n, p, 1)
    cols = (ox[:, None] + ar)[:, None, :]  # (n, 1, p)
    img = torch.arange(b, device=x.device).repeat_interleave(per_image)[:, None, None]
    patches = x.permute(0, 2, 3, 1)[img, rows, cols].permute(0, 3, 1, 2).contiguous()
    return patches, position_channels(oy, ox, (p, p), (h, w), ref).to(x.dtype)


def training_patches(x: torch.Tensor, patches: Mapping, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step's patches of the batch ``x`` ``(B, C, H, W)`` (whole slices): one size
    drawn from ``patches["sizes"]``, ``(area // size)^2`` patches per slice, with their position
    channels (:func:`extract_patches`); every draw from ``generator``."""
    sizes = patches["sizes"]
    p = sizes[int(torch.randint(len(sizes), (1,), generator=generator, device=x.device))]
    return extract_patches(x, p, (patches["area"] // p) ** 2, patches["ref"], generator)


def tile_starts(length: int, tile: int, shift: int) -> list[int]:
    """Tile starts along one axis: 0, ``shift + k tile`` inside, and ``length - tile``."""
    if length <= tile:
        return [0]
    return sorted({0, *range(shift, length - tile + 1, tile), length - tile})


class PatchTiler(nn.Module):
    """A patch network as a whole-image network ``forward(x (B, C, H, W), sigma (B,))``.

    Args:
        net: the U-Net trained on patches, called as ``net(patches, sigma, positions)``.
        infer: None: the whole image at once; an int: the tile size.
        ref: the training slice shape (position scale).
        seed: seed of the tile shifts (one stream per tiler; a loaded prior starts at ``seed``).
    """

    def __init__(self, net: nn.Module, infer: int | None, ref: Sequence[int], seed: int = 0):
        super().__init__()
        self.net = net
        self.infer = int(infer) if infer else None
        self.ref = (int(ref[0]), int(ref[1]))
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def config(self) -> dict:
        """The inner network's config as a whole-image network (no condition channels)."""
        return {**self.net.config, "cond_channels": 0}

    @property
    def size_multiple(self) -> int:
        return 1

    def use_channels_last(self, flag: bool = True) -> "PatchTiler":
        if hasattr(self.net, "use_channels_last"):
            self.net.use_channels_last(flag)
        return self

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.infer is None:  # whole image: pad to the network's multiple, one evaluation
            m = int(getattr(self.net, "size_multiple", 1))
            th, tw = -(-h // m) * m, -(-w // m) * m
        else:
            th = tw = self.infer
        py, px = max(th - h, 0), max(tw - w, 0)
        if py or px:  # air around the field of view
            x = F.pad(x, (px // 2, px - px // 2, py // 2, py - py // 2))
        hh, ww = x.shape[-2:]
        if self.infer is None:
            ys, xs = [0], [0]
        else:
            sy, sx = (int(v) for v in torch.randint(0, th, (2,), generator=self.generator))
            ys, xs = tile_starts(hh, th, sy), tile_starts(ww, tw, sx)
        k = len(ys) * len(xs)
        tiles = x if k == 1 else torch.stack(
            [x[:, :, y:y + th, x0:x0 + tw] for y in ys for x0 in xs], 1).reshape(b * k, c, th, tw)
        oy = torch.tensor([y for y in ys for _ in xs], device=x.device) - py // 2
        ox = torch.tensor([x0 for _ in ys for x0 in xs], device=x.device) - px // 2
        pos = position_channels(oy, ox, (th, tw), (h, w), self.ref).to(x.dtype)
        pos = pos.repeat(b, 1, 1, 1) if k > 1 else pos.expand(b, -1, -1, -1)
        sig = sigma.reshape(-1).expand(b).repeat_interleave(k)
        out = self.net(tiles, sig, pos).reshape(b, k, -1, th, tw)
        if k == 1:
            result = out[:, 0]
        else:
            result = x.new_zeros(b, out.shape[2], hh, ww)
            i = 0
            for y in ys:
                for x0 in xs:
                    result[:, :, y:y + th, x0:x0 + tw] = out[:, i]
                    i += 1
        if py or px:
            result = result[:, :, py // 2:py // 2 + h, px // 2:px // 2 + w]
        return result
