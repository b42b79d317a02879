"""Training checkpoints on disk, shared by every trainer (priors, unrolled networks, the GAN).

A run folder keeps ``checkpoints/ckpt-SSSSSSSS.pt`` (``SSSSSSSS`` = the step), each a dict
written by ``torch.save`` holding tensors and plain types only, with a ``"format"`` key naming the
engine. Reading is ``torch.load(weights_only=True)``: a file handed to us is never unpickled.
Resume uses :func:`newest_readable_checkpoint`, which skips a truncated newest file (a full disk,
a kill during a copy) with a warning naming it. :func:`save_run_checkpoint` is a trainer's
``save`` hook: the checkpoint of a step, written by rank 0 while the other ranks wait.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import torch

from mriprior.errors import InputError
from mriprior.io.files import atomic_write_bytes

__all__ = ["list_checkpoints", "latest_checkpoint", "read_checkpoint",
           "newest_readable_checkpoint", "write_checkpoint", "save_checkpoint",
           "save_run_checkpoint", "resume_point",
           "check_fixed", "rng_state", "set_rng_state"]


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


def save_checkpoint(output, step: int, state: dict, keep_last: int) -> Path:
    """Write ``checkpoints/ckpt-SSSSSSSS.pt`` and delete all but the newest ``keep_last``."""
    path = write_checkpoint(Path(output) / "checkpoints" / f"ckpt-{step:08d}.pt", state)
    for old in list_checkpoints(output)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def save_run_checkpoint(ctx, output, step: int, *, fmt: str, config: dict, states: dict,
                        loader, export=None, **extra) -> Path:
    """On rank 0: write checkpoint ``step`` (``{"format": fmt, **extra, "step", "config", the
    ``state_dict()`` of each of ``states`` (a module's weights on the CPU), "loader"}``), keep
    the newest ``config["train"]["keep_last"]``, then ``export(step)``; every rank then waits
    for it. Returns the checkpoint's path (on every rank)."""
    path = Path(output) / "checkpoints" / f"ckpt-{step:08d}.pt"
    if ctx.rank == 0:
        state = {"format": fmt, **extra, "step": step, "config": config,
                 **{k: ({n: t.detach().cpu() for n, t in v.state_dict().items()}
                        if isinstance(v, torch.nn.Module) else v.state_dict())
                    for k, v in states.items()},
                 "loader": loader.state().as_dict()}
        path = save_checkpoint(output, step, state, config["train"]["keep_last"])
        if export is not None:
            export(step)
    ctx.barrier()
    return path


_MISSING = object()


def check_fixed(saved: dict, config: dict, keys, path: Path, missing=None) -> None:
    """InputError naming the first config entry (``("model",)``, ``("data", "path")``, ...)
    that differs between a checkpoint's config and the run's. ``missing``: entry -> the value
    a checkpoint written before that entry existed had (its default then)."""
    for key in keys:
        a, b = saved, config
        for k in key:
            a = a.get(k, _MISSING) if isinstance(a, dict) else _MISSING
            b = (b or {}).get(k)
        if a is _MISSING:
            a = (missing or {}).get(tuple(key))
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise InputError(f"{path}: {'.'.join(key)} differs from the checkpoint's "
                             f"({a!r} vs {b!r}); resume needs the same setting")


def resume_point(output, resume: bool, fmt: str, version: int | None = None, *,
                 world_size: int | None = None, config: dict | None = None, fixed=(),
                 missing=None) -> tuple[Path | None, dict | None]:
    """The checkpoint a run starts from: ``(None, None)`` for a fresh start. Without ``resume``
    a folder holding checkpoints is an error; with it the newest readable checkpoint must have
    been written with the same ``fixed`` config entries (:func:`check_fixed`, with
    ``missing``) and, when given,
    the same number of ranks (exact resume)."""
    newest = latest_checkpoint(output)
    if newest is not None and not resume:
        raise InputError(f"{output}: already holds checkpoints ({newest.name}); use --resume "
                         "to continue, or choose a new train.output")
    if newest is None:
        return None, None
    path, ckpt = newest_readable_checkpoint(output, fmt, version)
    if config is not None:
        check_fixed(ckpt["config"], config, fixed, path, missing)
    if world_size is not None and ckpt.get("world_size", 1) != world_size:
        raise InputError(f"{path}: written by {ckpt.get('world_size', 1)} rank(s), resumed "
                         f"with {world_size}; exact resume needs the same world size")
    return path, ckpt


def rng_state(device: torch.device, **generators: torch.Generator) -> dict:
    """The named generators' states plus the global torch CPU (and CUDA) RNG."""
    state = {k: g.get_state() for k, g in generators.items()}
    state["torch_cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device, **generators: torch.Generator) -> None:
    for k, g in generators.items():
        g.set_state(state[k])
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)
