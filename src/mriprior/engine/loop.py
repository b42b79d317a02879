"""The one training loop, with the model-specific parts as hooks; LR schedule, optimiser, hashes.

:func:`run_loop` iterates the loader (which knows its own start step and length, see
:func:`mriprior.data.loader.make_loader`) and at every step calls ``hooks.step(batch)`` -- one
optimisation step returning scalars for the log. Every ``log_every`` steps (and at the last)
it writes ``{"step", <the step's scalars>, "images_per_s"}`` to the log, the ``hooks.averaged``
scalars averaged over the interval and over ranks, the others as last seen; every
``eval_every`` steps ``{"step", "heldout": hooks.evaluate(step)}``; every ``save_every`` steps
(and at the last) ``hooks.save(step)`` on every rank. ``stop_at`` stops right after that step's
checkpoint, without anything a finished run writes: the state a kill at that moment leaves
(for tests of resumption).

Set-up shared by the trainers: :func:`prepare_run_dir`, :func:`training_loader`,
:func:`heldout_images`; :func:`optimiser_step` is one AMP-aware optimiser update.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from mriprior.data.loader import LoaderState, SliceDataset, make_loader
from mriprior.engine.checkpoints import latest_checkpoint
from mriprior.io.files import atomic_write_text

__all__ = ["Hooks", "run_loop", "lr_factor", "make_optimizer", "state_sha256", "git_revision",
           "prepare_run_dir", "training_loader", "heldout_images", "optimiser_step"]


def prepare_run_dir(output: Path, config: dict | None = None) -> None:
    """Create the run folder (a file in the way: one clear error) and its ``checkpoints/``;
    write ``config`` (the resolved config), when given, as ``config.json``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "checkpoints").mkdir(exist_ok=True)
    if config is not None:
        atomic_write_text(output / "config.json", json.dumps(config, indent=1))


def training_loader(slices, ckpt: dict | None, ctx, train: dict, num_workers: int):
    """The run's loader over ``slices`` (``train``: batch_size, seed, steps; this rank's shard),
    at the checkpoint's position (step 0 without one)."""
    start = LoaderState.from_dict(ckpt["loader"]) if ckpt is not None else 0
    return make_loader(slices, train["batch_size"], num_workers=num_workers, seed=train["seed"],
                       start_step=start, rank=ctx.rank, world_size=ctx.world_size,
                       total_steps=train["steps"])


def heldout_images(ds, heldout: dict, crop, channels: str, seed: int, ctx):
    """Rank 0's fixed held-out images, on its device: the first ``heldout["n_images"]`` slices of
    the ``heldout["split"]`` split (no flips); None when evaluation is off or on other ranks."""
    if not (heldout["every"] and ctx.rank == 0):
        return None
    hs = SliceDataset(ds, split=heldout["split"], crop=crop, flips=False, channels=channels,
                      seed=seed)
    return torch.stack([hs[i] for i in range(min(heldout["n_images"], len(hs)))]).to(ctx.device)


def optimiser_step(loss, net, opt, sched, scaler, clip: float | None) -> tuple[float, float]:
    """Backward of ``loss`` through the grad ``scaler``, global gradient-norm clipping to ``clip``
    (None: none), the optimiser and LR-scheduler steps. Returns ``(lr, grad_norm)``: the step's
    learning rate and the gradient norm before clipping (nan without clipping)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    grad_norm = (float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip))
                 if clip is not None else float("nan"))
    lr = opt.param_groups[0]["lr"]
    scaler.step(opt)
    scaler.update()
    sched.step()
    return lr, grad_norm


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier at optimiser step ``step`` (0-based): linear warm-up over ``warmup`` steps,
    then constant or cosine from 1 down to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(net: torch.nn.Module, ocfg: dict, total: int):
    """AdamW (no weight decay on biases and norm scales, i.e. parameters of <= 1 dimension) and
    the LR schedule of :func:`lr_factor`, from an ``optim`` config section."""
    decay = [p for p in net.parameters() if p.ndim > 1]
    other = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ocfg["weight_decay"]},
                             {"params": other, "weight_decay": 0.0}],
                            lr=ocfg["lr"], betas=tuple(ocfg["betas"]), eps=ocfg["eps"])
    warmup, min_ratio = ocfg["warmup_steps"], ocfg["min_lr"] / ocfg["lr"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, ocfg["schedule"], min_ratio))
    return opt, sched


def state_sha256(*states: dict) -> str:
    """SHA-256 of tensors (``state_dict``-like mappings, keys sorted): equal weights, equal hash."""
    h = hashlib.sha256()
    for state in states:
        for k in sorted(state):
            t = state[k].detach().cpu().contiguous()
            h.update(k.encode())
            h.update(str(t.dtype).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def git_revision() -> str | None:
    """The source checkout's commit (for a model's provenance), or None outside one."""
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = r.stdout.strip()
    return rev if r.returncode == 0 and rev else None


@dataclass
class Hooks:
    """What a trainer plugs into :func:`run_loop`."""

    step: Callable[[object], dict]                 # one optimisation step -> log scalars
    save: Callable[[int], Path]                    # checkpoint (every rank calls it)
    evaluate: Callable[[int], dict] | None = None  # held-out metrics ({} on ranks without)
    averaged: tuple = ("loss",)                    # scalars averaged over the log interval


def run_loop(loader, hooks: Hooks, *, ctx, logger, output, train: dict, eval_every: int = 0,
             stop_at: int | None = None) -> dict:
    """Run the loop (module docstring) from the loader's step to ``train["steps"]``, with the
    ``train`` section's ``log_every``, ``save_every`` and ``batch_size`` (per rank). Returns
    ``{"step", "log" (the last log record), "heldout", "checkpoint", "stopped"}``; a run that had
    nothing left to do returns the newest checkpoint (or saves step 0)."""
    start_step, total = loader.step, train["steps"]
    log_every, save_every = train["log_every"], train["save_every"]
    images_per_step = train["batch_size"] * ctx.world_size
    bar = tqdm(total=total, initial=start_step, dynamic_ncols=True, desc="train",
               disable=not (ctx.rank == 0 and sys.stderr.isatty()))
    step, last, heldout, last_ckpt = start_step, {}, {}, None
    acc, n, t_last = {}, 0, time.perf_counter()
    try:
        for batch in loader:
            out = hooks.step(batch)
            step, n = step + 1, n + 1
            for k in hooks.averaged:
                acc[k] = acc.get(k, 0.0) + float(out[k])
            if step % log_every == 0 or step == total:
                ips = n * images_per_step / max(time.perf_counter() - t_last, 1e-9)
                last = {"step": step, **{k: ctx.mean(acc[k] / n) if k in acc else float(v)
                                         for k, v in out.items()}, "images_per_s": ips}
                logger.write(last)
                bar.set_postfix(loss=f"{last[hooks.averaged[0]]:.4f}", img_s=f"{ips:.1f}")
                acc, n, t_last = {}, 0, time.perf_counter()
            bar.update(1)
            if hooks.evaluate is not None and eval_every and step % eval_every == 0:
                heldout = hooks.evaluate(step)
                if heldout:
                    logger.write({"step": step, "heldout": heldout})
            if step % save_every == 0 or step == total:
                last_ckpt = hooks.save(step)
                if stop_at is not None and step >= stop_at:
                    break
    finally:
        bar.close()
        logger.close()
    stopped = stop_at is not None and step >= stop_at
    if not stopped and last_ckpt is None:  # nothing left to train (resumed a finished run)
        last_ckpt = latest_checkpoint(output) if step else hooks.save(step)
    return {"step": step, "log": last, "heldout": heldout, "checkpoint": last_ckpt,
            "stopped": stopped}
