"""Helpers shared by the commands (torch is imported only by the helpers that need it, so
commands without torch, e.g. ``data import``, stay light)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, read_cfl, read_kspace

if TYPE_CHECKING:
    import torch


def device(name: str | None) -> torch.device:
    """``--device``: cpu, cuda, cuda:N or auto (a GPU when there is one), checked."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    return dev


def check_finite(arr, path: str, what: str) -> None:
    """InputError naming ``path`` when ``arr`` holds NaN or Inf."""
    a = np.asarray(arr)
    if not np.isfinite(a).all():
        bad = np.unravel_index(int(np.argmin(np.isfinite(a).ravel())), a.shape)
        raise InputError(f"{path}: NaN or Inf in {what} (first at BART index "
                         f"{tuple(int(i) for i in bad)})")


def check_output(x: torch.Tensor, what: str) -> None:
    """Refuse to write a non-finite result (InputError instead of a file of NaN)."""
    import torch

    if not bool(torch.isfinite(x).all()):
        raise InputError(f"the {what} is not finite (NaN or Inf): nothing written; check the "
                         "inputs and parameters")


def load_maps(path: str, layout: BartLayout, dev) -> torch.Tensor:
    """BART sensitivity file -> ``(1, maps, coil, y, x)``."""
    import torch

    arr = read_cfl(path)
    check_finite(arr, path, "the coil maps")
    if not np.any(arr):
        raise InputError(f"{path}: the coil maps are zero everywhere")
    m = layout.to_torch(arr, name=path, max_dim=4)
    if m.ndim == 3:
        m = m[None]
    return torch.from_numpy(np.ascontiguousarray(m)).unsqueeze(0).to(dev)


def load_problem(args, dev):
    """``args.kspace``, ``args.sens`` and the optional ``args.pattern`` -> ``(ksp, maps, mask,
    layout)``: ``(1, coil, y, x)``, ``(1, maps, coil, y, x)``, real ``(1, 1, y, x)`` or None."""
    ksp, layout = read_kspace(args.kspace, dev)
    maps = load_maps(args.sens, layout, dev)
    if maps.shape[2] != ksp.shape[1]:
        raise InputError(f"{args.sens}: {maps.shape[2]} coils, but {args.kspace} has "
                         f"{ksp.shape[1]}")
    mask = load_pattern(args.pattern, layout, dev) if args.pattern else None
    return ksp, maps, mask, layout


def load_pattern(path: str, layout: BartLayout, dev) -> torch.Tensor:
    """BART pattern/mask file (coil dim 1) -> real ``(1, 1, y, x)``."""
    import torch

    arr = read_cfl(path)
    check_finite(arr, path, "the pattern")
    p = layout.to_torch(arr, name=path, max_dim=3)
    if p.ndim == 3 and p.shape[0] != 1:
        raise InputError(f"{path}: pattern must have 1 coil, got {p.shape[0]}")
    return torch.from_numpy(np.ascontiguousarray(p.real)).reshape(1, 1, *p.shape[-2:]).to(dev)


def check_at_least_one(what: str = "", **flags) -> None:
    """InputError naming the first ``flag=value`` (``None``: not given) that is below 1
    (``what``: the quantity, named in the message)."""
    for flag, v in flags.items():
        if v is not None and not v >= 1:
            raise InputError(f"{flag} {v}: {what + ' ' if what else ''}must be >= 1")


def parse_sizes(text: str, layout: BartLayout, option: str) -> tuple[int, int]:
    """``N``, ``x:y`` or ``d0:d1:d2`` -> ``(y, x)`` sizes in the slice plane of ``layout``."""
    try:
        vals = [int(t) for t in str(text).split(":")]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected N, x:y or d0:d1:d2 integers") from None
    if len(vals) == 1:
        vals = vals * 3
    elif len(vals) == 2:
        both = {layout.x_dim: vals[0], layout.y_dim: vals[1]}
        vals = [both.get(d, 1) for d in range(3)]
    elif len(vals) != 3:
        raise InputError(f"{option} {text!r}: expected N, x:y or d0:d1:d2 integers")
    y, x = vals[layout.y_dim], vals[layout.x_dim]
    if x < 1 or y < 1:
        raise InputError(f"{option} {text!r}: sizes must be positive")
    return y, x


def split_files(args, prog: str) -> str:
    """``KSP SENS OUT`` (cfl; sets args.kspace/sens/output) or ``VOLUME.h5 OUT`` (a fastMRI
    volume, every slice; sets args.kspace/output, args.sens None). Returns "volume", "slices"
    (cfl k-space with several slices in BART dim 13) or "slice"."""
    files = args.files
    if len(files) == 2 and files[0].endswith(".h5"):
        args.kspace, args.sens, args.output = files[0], None, files[1]
        return "volume"
    if len(files) == 3:
        args.kspace, args.sens, args.output = files
        from mriprior.io.cfl import read_header

        return "slices" if read_header(args.kspace)[SLICE_DIM] > 1 else "slice"
    raise InputError(f"expected KSP SENS OUT (cfl) or VOLUME.h5 OUT, got {len(files)} file "
                     f"name(s): {' '.join(files)} (see mriprior {prog} --help)")


def progress_bar(desc: str, unit: str, quiet: bool = False, **tqdm_options):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (on a terminal only,
    so logs and captured output stay clean), made at the first call and closed once ``done >=
    total`` or by ``progress.close()``. ``tqdm_options`` are passed on (default leave=False)."""
    from tqdm import tqdm

    bar = None

    def progress(done, total):
        nonlocal bar
        if quiet:
            return
        if bar is None:
            bar = tqdm(unit=unit, desc=desc, disable=None, **{"leave": False, **tqdm_options})
        bar.total, bar.n = total, done
        bar.refresh()
        if done >= total:
            bar.close()

    def close():
        if bar is not None:
            bar.close()

    progress.close = close
    return progress


SLICE_DIM = 13  # BART's slice dimension


def run_slices(args, run_one, prog: str, inputs, outputs) -> None:
    """A k-space file with several slices in BART dim 13: ``run_one(args)`` once per slice.

    Every file option in ``inputs`` with the same slice count is cut per slice, one with a
    single slice is shared; the files in ``outputs`` are stacked along dim 13. Resumable: each
    slice's outputs go to ``OUT.parts/`` and a slice counts as done once its marker is written;
    rerunning the same command continues (a different command line is refused). The output's
    lock is held throughout.
    """
    import shutil
    from pathlib import Path

    from mriprior.io.cfl import read_cfl, read_header, write_cfl
    from mriprior.io.files import atomic_write_text, output_lock, work_folder

    n = read_header(args.kspace)[SLICE_DIM]
    counts = {name: read_header(path)[SLICE_DIM] for name in inputs
              if (path := getattr(args, name, None))}  # slices of each input file given
    for name, count in counts.items():
        if count not in (1, n):
            raise InputError(f"{getattr(args, name)}: {count} slices (BART dim 13), but "
                             f"{args.kspace} has {n}")
    outputs = [name for name in outputs if getattr(args, name, None)]
    out = Path(args.output)
    parts = out.with_name(out.name + ".parts")
    sig = {k: v for k, v in sorted(vars(args).items())
           if isinstance(v, (str, int, float, bool, type(None))) and not k.startswith("_")}
    progress = progress_bar("slices", "slice", getattr(args, "quiet", False))
    with output_lock(out, prog):
        work_folder(parts, sig)
        for s in range(n):
            if not (parts / f"done-{s:05d}").exists():
                one = argparse.Namespace(**vars(args))
                for name in (name for name, count in counts.items() if count == n):
                    cut = parts / f"in-{name}-{s:05d}"
                    write_cfl(cut, np.take(read_cfl(getattr(args, name), squeeze=False), [s],
                                           SLICE_DIM))
                    setattr(one, name, str(cut))
                for name in outputs:
                    setattr(one, name, str(parts / f"out-{name}-{s:05d}"))
                one.files = [one.kspace, one.sens, one.output]
                run_one(one)
                atomic_write_text(parts / f"done-{s:05d}", "")
            progress(s + 1, n)
        for name in outputs:
            stack = [read_cfl(parts / f"out-{name}-{s:05d}", squeeze=False) for s in range(n)]
            write_cfl(getattr(args, name), np.concatenate(stack, axis=SLICE_DIM))
        shutil.rmtree(parts, ignore_errors=True)
