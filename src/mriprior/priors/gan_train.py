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

Config (YAML, every key checked; defaults in :data:`DEFAULTS`)::

    gan: true                           # marks a GAN config for `mriprior train`
    model: {base_channels, depth, dropout, disc_channels, disc_layers}
    data: {path, split, crop, flips, num_workers}
    optim: {lr, betas}
    train: {batch_size, steps, l1_weight, save_every, keep_last, seed, log_every, output, device}
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn as nn

from mriprior.data.dataset import open_dataset
from mriprior.data.loader import LoaderState, SliceDataset, make_loader
from mriprior.engine import (Dist, Hooks, Logger, rank0_lock, resume_point, rng_state, run_loop,
                             save_checkpoint, set_rng_state)
from mriprior.errors import InputError
from mriprior.priors.export import save_prior
from mriprior.priors.gan import PatchDiscriminator, PhaseGenerator

__all__ = ["DEFAULTS", "validate_gan_config", "train_gan"]


# ----------------------------------------------------------------------------- config
CKPT_FORMAT = "mriprior-gan-checkpoint"

DEFAULTS = {
    "model": {"base_channels": 32, "depth": 5, "dropout": 0.5, "disc_channels": 32,
              "disc_layers": 3},
    "data": {"path": None, "split": "train", "crop": 128, "flips": True, "num_workers": 1},
    "optim": {"lr": 2e-4, "betas": [0.5, 0.999]},
    "train": {"batch_size": 8, "steps": 2000, "l1_weight": 100.0, "save_every": 500,
              "keep_last": 3, "seed": 0, "log_every": 10, "output": None, "device": "cpu"},
}


def validate_gan_config(raw, base_dir=".") -> dict:
    """Check every key against :data:`DEFAULTS` (unknown or mistyped keys fail naming the key);
    relative ``data.path`` / ``train.output`` are taken relative to ``base_dir``."""
    if not isinstance(raw, dict):
        raise InputError("GAN config: expected a mapping")
    unknown = set(raw) - set(DEFAULTS) - {"gan"}
    if unknown:
        raise InputError(f"{sorted(unknown)[0]}: unknown section (known: gan, "
                         f"{', '.join(DEFAULTS)})")
    cfg = {}
    for sec, defaults in DEFAULTS.items():
        given = raw.get(sec) or {}
        if not isinstance(given, dict):
            raise InputError(f"{sec}: expected a mapping")
        out = {}
        for key, default in defaults.items():
            if key not in given:
                if default is None:
                    raise InputError(f"{sec}.{key}: required key missing")
                out[key] = copy.deepcopy(default)
                continue
            v = given[key]
            ok = (isinstance(v, bool) if isinstance(default, bool) else
                  isinstance(v, int) and not isinstance(v, bool) if isinstance(default, int) else
                  isinstance(v, (int, float)) and not isinstance(v, bool)
                  if isinstance(default, float) else
                  isinstance(v, list) and len(v) == len(default) if isinstance(default, list)
                  else isinstance(v, str))
            if not ok:
                raise InputError(f"{sec}.{key}: expected {type(default).__name__ if default is not None else 'str'}, got {v!r}")  # noqa: E501
            out[key] = float(v) if isinstance(default, float) else v
        for key in given:
            if key not in defaults:
                raise InputError(f"{sec}.{key}: unknown key (known: {', '.join(defaults)})")
        cfg[sec] = out
    for sec, key in (("data", "path"), ("train", "output")):
        p = Path(cfg[sec][key]).expanduser()
        cfg[sec][key] = str(p if p.is_absolute() else (Path(base_dir) / p).resolve())
    t = cfg["train"]
    if t["steps"] < 1 or t["batch_size"] < 1 or t["save_every"] < 1 or t["keep_last"] < 1:
        raise InputError("train.steps, batch_size, save_every and keep_last must be >= 1")
    if cfg["data"]["crop"] % (2 ** cfg["model"]["depth"]):
        raise InputError(f"data.crop {cfg['data']['crop']} must be a multiple of "
                         f"2**model.depth = {2 ** cfg['model']['depth']}")
    return cfg


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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("the phase GAN trains in one process: run it without torchrun")
    ctx = Dist(cfg["train"]["device"])
    with rank0_lock(ctx, cfg["train"]["output"]):
        return _GanTrainer(cfg, ctx, resume).run()


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
        fixed = [(s,) for s in cfg if s != "train"] + [("train", k) for k in tc if k != "steps"]
        _, ckpt = resume_point(self.output, resume, CKPT_FORMAT, config=cfg, fixed=fixed)
        ds = open_dataset(dc["path"])
        if ds.kind != "complex":
            raise InputError(f"data.path {dc['path']}: the GAN learns phase from complex data, "
                             f"this dataset is {ds.kind!r}")
        self.output.mkdir(parents=True, exist_ok=True)  # a file there: one clear error
        (self.output / "checkpoints").mkdir(exist_ok=True)
        torch.manual_seed(tc["seed"])
        self.G = PhaseGenerator(mc["base_channels"], mc["depth"], mc["dropout"]).to(self.device)
        self.D = PatchDiscriminator(mc["disc_channels"], mc["disc_layers"]).to(self.device)
        self.og = torch.optim.Adam(self.G.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]))
        self.od = torch.optim.Adam(self.D.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]))
        lstate = 0
        if ckpt is not None:
            for name, obj in self._states().items():
                obj.load_state_dict(ckpt[name])
            set_rng_state(ckpt["rng"], self.device)
            lstate = LoaderState.from_dict(ckpt["loader"])
        sd = SliceDataset(ds, split=dc["split"], crop=dc["crop"], flips=dc["flips"],
                          channels="complex", seed=tc["seed"])
        self.loader = make_loader(sd, tc["batch_size"], num_workers=dc["num_workers"],
                                  start_step=lstate, total_steps=tc["steps"])
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
        state = {"format": CKPT_FORMAT, "step": step, "config": self.cfg,
                 **{k: v.state_dict() for k, v in self._states().items()},
                 "rng": rng_state(self.device), "loader": self.loader.state().as_dict()}
        path = save_checkpoint(self.output, step, state, self.cfg["train"]["keep_last"])
        self.weights, _ = save_prior(self.output / "prior", copy.deepcopy(self.G).cpu().eval(),
                                     {**self.meta, "step": step})
        return path

    def run(self) -> dict:
        tc = self.cfg["train"]
        start = self.loader.step
        self.G.train()
        self.D.train()
        r = run_loop(self.loader, Hooks(self.step, self.save, averaged=("l1", "g_adv", "d")),
                     ctx=self.ctx, logger=Logger(self.output, True, start if self.resume else None,
                                                 tensorboard=False),
                     output=self.output, start_step=start, total=tc["steps"],
                     log_every=tc["log_every"], save_every=tc["save_every"],
                     images_per_step=tc["batch_size"])
        return {"step": r["step"], "output": str(self.output),
                "l1": r["log"].get("l1", float("nan")),
                "weights": str(self.weights) if self.weights else None}
