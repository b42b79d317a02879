"""Train a score prior from a YAML config (single process, or DDP under ``torchrun``).

A config with ``gan: true`` trains the pix2pix phase GAN instead (mriprior.priors.gan_train; one
process, CPU or one GPU, exact resume too); one with ``unrolled: true`` trains an unrolled
reconstruction network (VarNet / MoDL, mriprior.unrolled.train) on synthesised k-space, with the
same DDP / resume / export machinery as the priors.

Examples:
  mriprior train configs/ve-cpu.yaml
  mriprior train configs/ve-cpu.yaml --resume            # continue from the latest checkpoint
  mriprior train configs/ve-cpu.yaml --steps 100 --device cpu
  torchrun --nproc_per_node 2 -m mriprior.cli.main train configs/ve-gpu.yaml

Writes to ``train.output``: config.json, log.jsonl, checkpoints/, prior.safetensors + prior.json
(the EMA weights, for ``load_prior``). Prints a JSON summary on rank 0.
"""

from __future__ import annotations

import json
import os


def add_arguments(p):
    p.add_argument("config", help="YAML run config (see mriprior.priors.config)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in train.output (fresh start if none)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps (total steps)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None,
                   help="override train.device (default: the config's, 'auto' if unset)")


def _marker(path, key) -> bool:
    from mriprior.priors.config import read_yaml

    raw = read_yaml(path)
    return isinstance(raw, dict) and raw.get(key) is True


def _is_gan(path) -> bool:
    return _marker(path, "gan")


def _run_gan(args):
    from pathlib import Path

    from mriprior.errors import InputError
    from mriprior.priors.config import apply_overrides, read_yaml
    from mriprior.priors.gan_train import train_gan

    p = Path(args.config)
    raw = read_yaml(p)
    over = {}
    if args.steps is not None:
        over["train.steps"] = args.steps
    if args.device is not None:
        from mriprior.cli._common import device

        over["train.device"] = device(args.device).type  # the GAN trainer takes cpu / cuda
    if over:
        raw = apply_overrides(raw, over)
    try:
        result = train_gan(raw, resume=args.resume, base_dir=p.resolve().parent)
    except InputError as e:
        raise InputError(f"{p}: {e}") from None
    print(json.dumps(result, indent=1))


def run(args):
    from mriprior.priors.config import load_config
    from mriprior.priors.train import train

    if _is_gan(args.config):
        return _run_gan(args)
    overrides = {}
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    if args.device is not None:
        overrides["train.device"] = args.device
    if _marker(args.config, "unrolled"):
        from mriprior.unrolled.train import load_unrolled_config, train_unrolled

        result = train_unrolled(load_unrolled_config(args.config, overrides),
                                resume=args.resume)
    else:
        result = train(load_config(args.config, overrides), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=1))
