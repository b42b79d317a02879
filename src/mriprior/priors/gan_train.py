"""Training the pix2pix-style phase GAN (networks: :mod:`mriprior.priors.gan`).

Generator ``G(m) -> (cos phi, sin phi)``: a U-Net (Isola et al. 2017: 4 x 4 stride-2
convolutions down, transposed convolutions up, skip connections, instance norm, dropout in the
innermost up-blocks as the noise source) from the normalised magnitude ``m`` ``(B, 1, H, W)`` to
a unit phasor ``(B, 2, H, W)`` (unit length: no phase wrap to learn). Discriminator: a PatchGAN on
``(m, Re, Im)`` of ``m * phasor`` (real pairs) or ``m * G(m)`` (generated pairs). Losses: the
non-saturating GAN loss plus ``l1_weight`` times the L1 distance between ``m * G(m)`` and the
true complex image (magnitude-weighted, because the phase of dark pixels is noise).

Training: ``train_gan(config)`` on a complex dataset (the same data the diffusion models use),
one process on CPU or one GPU, with exact resume (generator, discriminator, both optimisers, step,
RNG and loader position in each atomically written checkpoint). The generator is exported as
``prior.safetensors`` + ``prior.json`` (``"prior_type": "gan"``); ``mriprior augment --method
gan`` applies it (:func:`mriprior.augment.phase.gan_phase`: dropout kept on, seeded, so several
samples differ, as in pix2pix).

Config (YAML, every key checked; defaults in :data:`SCHEMA`)::

    gan: true                           # marks a GAN config for `mriprior train`
    model: {base_channels, depth, dropout, disc_channels, disc_layers}
    data: {path, split, crop, flips, num_workers}
    optim: {lr, betas}
    train: {batch_size, steps, l1_weight, save_every, keep_last, seed, log_every, output, device}
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from mriprior.data.dataset import open_dataset
from mriprior.data.loader import SliceDataset
from mriprior.engine import (Dist, Hooks, Logger, prepare_run_dir, resume_point, rng_state,
                             run_loop, run_ranked, save_run_checkpoint, set_rng_state,
                             training_loader)
from mriprior.errors import InputError
from mriprior.launch import launch_env
from mriprior.priors.config import SCHEMA as PRIOR_SCHEMA
from mriprior.priors.config import (Field, adam_betas, at_least, check_section, check_sections,
                                    in_unit_interval, load_yaml_config, positive, resolve_path)
from mriprior.priors.export import save_prior
from mriprior.priors.gan import PatchDiscriminator, PhaseGenerator

__all__ = ["SCHEMA", "validate_gan_config", "load_gan_config", "train_gan"]


# ----------------------------------------------------------------------------- config
CKPT_FORMAT = "mriprior-gan-checkpoint"

SCHEMA = {
    "model": {"base_channels": Field(int, 32, check=at_least(1)),
              "depth": Field(int, 5, check=at_least(1)),
              "dropout": Field(float, 0.5, check=in_unit_interval),
              "disc_channels": Field(int, 32, check=at_least(1)),
              "disc_layers": Field(int, 3, check=at_least(1))},
    "data": {"path": Field(str, doc="complex dataset (relative: to the config file)"),
             "split": PRIOR_SCHEMA["data"]["split"],
             "crop": Field(int, 128, check=at_least(1)),
             "flips": Field(bool, True),
             "num_workers": Field(int, 1, check=at_least(0))},
    "optim": {"lr": Field(float, 2e-4, check=positive),
              "betas": Field("float_pair", [0.5, 0.999], check=adam_betas)},
    "train": {"batch_size": Field(int, 8, check=at_least(1)),
              "steps": Field(int, 2000, check=at_least(1)),
              "l1_weight": Field(float, 100.0, check=at_least(0)),
              "save_every": Field(int, 500, check=at_least(1)),
              "keep_last": Field(int, 3, check=at_least(1)),
              "seed": Field(int, 0, check=at_least(0)),
              "log_every": Field(int, 10, check=at_least(1)),
              "output": Field(str, doc="run folder (relative: to the config file)"),
              "device": Field(("auto", "cpu", "cuda"), "cpu")},
}


def validate_gan_config(raw, base_dir=".") -> dict:
    """Check every key against :data:`SCHEMA` (unknown or mistyped keys fail naming the key);
    relative ``data.path`` / ``train.output`` are taken relative to ``base_dir``."""
    check_sections(raw, ("gan", *SCHEMA))
    cfg = {"gan": True, **{name: check_section(name, raw.get(name), schema)
                           for name, schema in SCHEMA.items()}}
    cfg["data"]["path"] = resolve_path(cfg["data"]["path"], Path(base_dir))
    cfg["train"]["output"] = resolve_path(cfg["train"]["output"], Path(base_dir))
    if cfg["data"]["crop"] % (2 ** cfg["model"]["depth"]):
        raise InputError(f"data.crop {cfg['data']['crop']} must be a multiple of "
                         f"2**model.depth = {2 ** cfg['model']['depth']}")
    return cfg


def load_gan_config(path, overrides: dict | None = None) -> dict:
    """A GAN config file (``overrides``: ``{"section.key": value}``), validated."""
    return load_yaml_config(path, overrides, validate_gan_config)


# ----------------------------------------------------------------------------- training
def _split(x):
    """Loader batch ``(B, 2, H, W)`` (re, im) -> (normalised magnitude m (B,1,H,W), x)."""
    m = x.square().sum(1, keepdim=True).sqrt()
    return m, x


def train_gan(raw, resume: bool = False, base_dir=".") -> dict:
    """Train (or resume) the GAN; returns ``{"step", "output", "l1", "weights"}``.

    One job per output folder (``mriprior.io.files.output_lock``); resume continues from the
    newest readable checkpoint (a truncated newest one is skipped with a warning). The engine
    of :mod:`mriprior.engine`, in one process."""
    cfg = validate_gan_config(raw, base_dir)
    if launch_env().world_size > 1:
        raise InputError("the phase GAN trains in one process: run it without torchrun")
    return run_ranked(cfg["train"]["device"], cfg["train"]["output"],
                      lambda ctx: _GanTrainer(cfg, ctx, resume).run())


def _gan_step(G, D, og, od, bce, x, l1_weight: float):
    """One pix2pix update on the batch ``x``: the discriminator on real vs generated
    (magnitude, image) pairs, then the generator (fool D + ``l1_weight`` x L1 to the true
    complex image). Returns ``(l1, g_adv, loss_d)``."""
    m, real = _split(x)
    fake = m * G(m)
    d_real = D(torch.cat([m, real], 1))
    d_fake = D(torch.cat([m, fake.detach()], 1))
    loss_d = 0.5 * (bce(d_real, torch.ones_like(d_real)) +
                    bce(d_fake, torch.zeros_like(d_fake)))
    od.zero_grad(set_to_none=True)
    loss_d.backward()
    od.step()
    d_fake = D(torch.cat([m, fake], 1))
    g_adv = bce(d_fake, torch.ones_like(d_fake))
    l1 = (fake - real).abs().mean()
    loss_g = g_adv + l1_weight * l1
    og.zero_grad(set_to_none=True)
    loss_g.backward()
    og.step()
    return l1, g_adv, loss_d


class _GanTrainer:
    """One run: data, the two networks and optimisers, and the engine's hooks."""

    def __init__(self, cfg: dict, ctx: Dist, resume: bool):
        mc, dc, oc, tc = cfg["model"], cfg["data"], cfg["optim"], cfg["train"]
        self.cfg, self.ctx, self.resume, self.device = cfg, ctx, resume, ctx.device
        self.output = Path(tc["output"])
        fixed = [(s,) for s in SCHEMA if s != "train"] + [("train", k) for k in tc if k != "steps"]
        _, ckpt = resume_point(self.output, resume, CKPT_FORMAT, config=cfg, fixed=fixed)
        ds = open_dataset(dc["path"])
        if ds.kind != "complex":
            raise InputError(f"data.path {dc['path']}: the GAN learns phase from complex data, "
                             f"this dataset is {ds.kind!r}")
        prepare_run_dir(self.output)
        torch.manual_seed(tc["seed"])
        self.G = PhaseGenerator(mc["base_channels"], mc["depth"], mc["dropout"]).to(self.device)
        self.D = PatchDiscriminator(mc["disc_channels"], mc["disc_layers"]).to(self.device)
        self.og = torch.optim.Adam(self.G.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]))
        self.od = torch.optim.Adam(self.D.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]))
        if ckpt is not None:
            for name, obj in self._states().items():
                obj.load_state_dict(ckpt[name])
            set_rng_state(ckpt["rng"], self.device)
        sd = SliceDataset(ds, split=dc["split"], crop=dc["crop"], flips=dc["flips"],
                          channels="complex", seed=tc["seed"])
        self.loader = training_loader(sd, ckpt, ctx, tc, dc["num_workers"])
        self.bce = nn.BCEWithLogitsLoss()
        self.meta = {"prior_type": "gan", "parametrisation": "phasor", "network": self.G.config,
                     "data": {"channels": "complex", "crop": dc["crop"], "dataset": dc["path"],
                              "normalisation": "max"},
                     "config": cfg}
        self.weights = None

    def _states(self) -> dict:
        return {"G": self.G, "D": self.D, "opt_G": self.og, "opt_D": self.od}

    def step(self, x) -> dict:
        l1, g_adv, loss_d = _gan_step(self.G, self.D, self.og, self.od, self.bce,
                                      x.to(self.device), self.cfg["train"]["l1_weight"])
        return {"l1": float(l1.detach()), "g_adv": float(g_adv.detach()),
                "d": float(loss_d.detach())}

    def save(self, step: int) -> Path:
        return save_run_checkpoint(self.ctx, self.output, step, fmt=CKPT_FORMAT, config=self.cfg,
                                   states=self._states(), loader=self.loader, export=self.export,
                                   rng=rng_state(self.device))

    def export(self, step: int) -> None:
        self.weights, _ = save_prior(self.output / "prior", copy.deepcopy(self.G).cpu().eval(),
                                     {**self.meta, "step": step})

    def run(self) -> dict:
        logger = Logger(self.output, True, self.loader.step if self.resume else None,
                        tensorboard=False)
        self.G.train()
        self.D.train()
        r = run_loop(self.loader, Hooks(self.step, self.save, averaged=("l1", "g_adv", "d")),
                     ctx=self.ctx, logger=logger, output=self.output, train=self.cfg["train"])
        return {"step": r["step"], "output": str(self.output),
                "l1": r["log"].get("l1", float("nan")),
                "weights": str(self.weights) if self.weights else None}
