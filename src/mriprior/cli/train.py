"""Train a score prior from a YAML config (single process, or DDP under ``torchrun``).

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


def run(args):
    from mriprior.priors.config import load_config
    from mriprior.priors.train import train

    overrides = {}
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    if args.device is not None:
        overrides["train.device"] = args.device
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=1))
