"""Training checkpoints on disk, shared by every engine (priors, unrolled networks, the GAN).

A run folder keeps ``checkpoints/ckpt-SSSSSSSS.pt`` (``SSSSSSSS`` = the step), each a dict
written by ``torch.save`` holding tensors and plain types only, with a ``"format"`` key naming the
engine. Reading is ``torch.load(weights_only=True)``: a file handed to us is never unpickled.
Resume uses :func:`newest_readable_checkpoint`, which skips a truncated newest file (a full disk,
a kill during a copy) with a warning naming it.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from mriprior.errors import InputError
from mriprior.io.files import atomic_write_bytes

__all__ = ["list_checkpoints", "latest_checkpoint", "read_checkpoint",
           "newest_readable_checkpoint", "write_checkpoint"]


def list_checkpoints(output) -> list[Path]:
    """Checkpoints of a run folder, oldest first (by step)."""
    d = Path(output) / "checkpoints"
    if not d.is_dir():
        return []
    found = []
    for p in d.glob("ckpt-*.pt"):
        try:
            found.append((int(p.stem.split("-", 1)[1]), p))
        except ValueError:
            continue
    return [p for _, p in sorted(found)]


def read_checkpoint(path: Path, fmt: str, version: int | None = None) -> dict:
    """A checkpoint written by one of our engines (``torch.load(weights_only=True)``: tensors
    and plain types only); InputError if unreadable or not of format ``fmt`` / ``version``."""
    try:
        size = os.path.getsize(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if os.path.exists(path) and size == 0:
            why = "empty file"
        elif type(e).__name__ == "UnpicklingError":
            why = "not a tensors-only PyTorch file: weights-only loading refused it"
        else:
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else 'truncated?'}"
        raise InputError(f"{path}: unreadable checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt or (
            version is not None and ckpt.get("version") != version):
        raise InputError(f"{path}: not an mriprior {fmt} file")
    return ckpt


def write_checkpoint(path, state: dict) -> Path:
    """``torch.save`` of ``state`` to ``path``, atomically and flushed to the disk."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue(), fsync=True)


def latest_checkpoint(output) -> Path | None:
    ckpts = list_checkpoints(output)
    return ckpts[-1] if ckpts else None


def newest_readable_checkpoint(output, fmt: str, version: int | None = None
                               ) -> tuple[Path | None, dict | None]:
    """``(path, checkpoint)`` of the newest checkpoint that reads back (a truncated newest one,
    e.g. from a full disk, is skipped with a warning naming it); ``(None, None)`` if there are
    none; InputError naming the newest if none is readable."""
    ckpts = list_checkpoints(output)
    errors = []
    for path in reversed(ckpts):
        try:
            ckpt = read_checkpoint(path, fmt, version)
        except InputError as e:
            errors.append(e)
            continue
        for e in errors:
            warnings.warn(f"{e}; resuming from {path.name}")
        return path, ckpt
    if errors:
        raise errors[0]
    return None, None
