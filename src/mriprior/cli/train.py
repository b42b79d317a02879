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

from mriprior.launch import launch_env


def add_arguments(p):
    p.add_argument("config", help="YAML run config (see mriprior.priors.config)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in train.output (fresh start if none)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps (total steps)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None,
                   help="override train.device (default: the config's, 'auto' if unset)")


def resolve(path, overrides: dict | None = None) -> tuple[str, dict]:
    """``(kind, validated config)`` of a run config: ``gan: true`` -> ``"gan"``, ``unrolled:
    true`` -> ``"unrolled"``, otherwise ``"prior"``."""
    from mriprior.priors.config import load_config, read_yaml

    raw = read_yaml(path)
    if isinstance(raw, dict) and raw.get("gan") is True:
        from mriprior.priors.gan_train import load_gan_config
        return "gan", load_gan_config(path, overrides)
    if isinstance(raw, dict) and raw.get("unrolled") is True:
        from mriprior.unrolled.train import load_unrolled_config
        return "unrolled", load_unrolled_config(path, overrides)
    return "prior", load_config(path, overrides)


def run(args):
    overrides = {k: v for k, v in (("train.steps", args.steps), ("train.device", args.device))
                 if v is not None}
    kind, cfg = resolve(args.config, overrides)
    if kind == "gan":
        from mriprior.priors.gan_train import train_gan as trainer
    elif kind == "unrolled":
        from mriprior.unrolled.train import train_unrolled as trainer
    else:
        from mriprior.priors.train import train as trainer
    result = trainer(cfg, resume=args.resume)
    if launch_env().rank == 0:
        print(json.dumps(result, indent=1))
