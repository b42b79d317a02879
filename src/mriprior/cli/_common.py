"""Helpers shared by the cfl-in / cfl-out commands."""

from __future__ import annotations

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, read_cfl


def device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    return dev


def load_kspace(path: str, dev) -> tuple[torch.Tensor, BartLayout]:
    """BART k-space file -> ``(1, coil, y, x)`` complex64 tensor and its layout."""
    arr = read_cfl(path)
    layout = BartLayout.from_dims(arr.shape, name=path)
    k = layout.to_torch(arr, name=path, max_dim=3)  # (coil, y, x)
    return torch.from_numpy(k).unsqueeze(0).to(dev), layout


def load_maps(path: str, layout: BartLayout, dev) -> torch.Tensor:
    """BART sensitivity file -> ``(1, maps, coil, y, x)``."""
    arr = read_cfl(path)
    m = layout.to_torch(arr, name=path, max_dim=4)
    if m.ndim == 3:
        m = m[None]
    return torch.from_numpy(np.ascontiguousarray(m)).unsqueeze(0).to(dev)


def load_pattern(path: str, layout: BartLayout, dev) -> torch.Tensor:
    """BART pattern/mask file (coil dim 1) -> real ``(1, 1, y, x)``."""
    arr = read_cfl(path)
    p = layout.to_torch(arr, name=path, max_dim=3)
    if p.ndim == 3 and p.shape[0] != 1:
        raise InputError(f"{path}: pattern must have 1 coil, got {p.shape[0]}")
    return torch.from_numpy(np.ascontiguousarray(p.real)).reshape(1, 1, *p.shape[-2:]).to(dev)
