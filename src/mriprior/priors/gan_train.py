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
import json
import time
from pathlib import Path

import torch
import torch.nn as nn

from mriprior.data.dataset import open_dataset
from mriprior.data.loader import LoaderState, SliceDataset, make_loader
from mriprior.errors import InputError
from mriprior.io.files import output_lock
from mriprior.priors.checkpoints import (list_checkpoints, newest_readable_checkpoint,
                                         write_checkpoint)
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


def _fixed(cfg: dict) -> dict:
    """The config without ``train.steps`` (the one key a resume may change)."""
    return {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "steps"}}


def train_gan(raw, resume: bool = False, base_dir=".", log=print) -> dict:
    """Train (or resume) the GAN; returns ``{"step", "output", "l1", "weights"}``.

    One job per output folder (``mriprior.io.files.output_lock``); resume continues from the
    newest readable checkpoint (a truncated newest one is skipped with a warning)."""
    cfg = validate_gan_config(raw, base_dir)
    with output_lock(cfg["train"]["output"], "training"):
        return _train_gan(cfg, resume, log)


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


def _train_gan(cfg: dict, resume: bool, log) -> dict:
    mc, dc, oc, tc = cfg["model"], cfg["data"], cfg["optim"], cfg["train"]
    out = Path(tc["output"])
    ckdir = out / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    device = torch.device(tc["device"])
    ds = open_dataset(dc["path"])
    if ds.kind != "complex":
        raise InputError(f"data.path {dc['path']}: the GAN learns phase from complex data, "
                         f"this dataset is {ds.kind!r}")
    torch.manual_seed(tc["seed"])
    G = PhaseGenerator(mc["base_channels"], mc["depth"], mc["dropout"]).to(device)
    D = PatchDiscriminator(mc["disc_channels"], mc["disc_layers"]).to(device)
    og = torch.optim.Adam(G.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]))
    od = torch.optim.Adam(D.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]))
    start, lstate = 0, 0
    ckpts = list_checkpoints(out)
    if resume and ckpts:
        path, ck = newest_readable_checkpoint(out, CKPT_FORMAT)
        if json.dumps(ck["config"], sort_keys=True) != json.dumps(_fixed(cfg), sort_keys=True):
            raise InputError(f"{path}: written with a different config (only train.steps "
                             "may change on resume)")
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
        og.load_state_dict(ck["opt_G"])
        od.load_state_dict(ck["opt_D"])
        torch.set_rng_state(ck["rng"])
        start, lstate = ck["step"], LoaderState.from_dict(ck["loader"])
    elif not resume and ckpts:
        raise InputError(f"{out}: holds checkpoints; use --resume or another train.output")
    sd = SliceDataset(ds, split=dc["split"], crop=dc["crop"], flips=dc["flips"],
                      channels="complex", seed=tc["seed"])
    loader = make_loader(sd, tc["batch_size"], num_workers=dc["num_workers"],
                         start_step=lstate, total_steps=tc["steps"])
    bce = nn.BCEWithLogitsLoss()
    meta = {"prior_type": "gan", "parametrisation": "phasor", "network": G.config,
            "data": {"channels": "complex", "crop": dc["crop"], "dataset": dc["path"],
                     "normalisation": "max"},
            "config": cfg}
    log_path = out / "log.jsonl"
    step, l1_avg, t0, n_img = start, float("nan"), time.perf_counter(), 0
    sums = {"l1": 0.0, "g_adv": 0.0, "d": 0.0, "n": 0}

    def save(step):
        state = {"format": CKPT_FORMAT, "step": step, "config": _fixed(cfg),
                 "G": G.state_dict(), "D": D.state_dict(), "opt_G": og.state_dict(),
                 "opt_D": od.state_dict(), "rng": torch.get_rng_state(),
                 "loader": loader.state().as_dict()}
        write_checkpoint(ckdir / f"ckpt-{step:08d}.pt", state)
        for old in list_checkpoints(out)[:-tc["keep_last"]]:
            old.unlink(missing_ok=True)
        return save_prior(out / "prior", copy.deepcopy(G).cpu().eval(), {**meta, "step": step})

    weights = None
    G.train()
    D.train()
    for x in loader:
        x = x.to(device)
        l1, g_adv, loss_d = _gan_step(G, D, og, od, bce, x, tc["l1_weight"])
        step += 1
        n_img += x.shape[0]
        for k, v in (("l1", l1), ("g_adv", g_adv), ("d", loss_d)):
            sums[k] += float(v.detach())
        sums["n"] += 1
        if step % tc["log_every"] == 0 or step == tc["steps"]:
            dt = time.perf_counter() - t0
            rec = {"step": step, **{k: sums[k] / sums["n"] for k in ("l1", "g_adv", "d")},
                   "images_per_s": n_img / max(dt, 1e-9)}
            l1_avg = rec["l1"]
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            sums = {"l1": 0.0, "g_adv": 0.0, "d": 0.0, "n": 0}
            t0, n_img = time.perf_counter(), 0
        if step % tc["save_every"] == 0 or step == tc["steps"]:
            weights, _ = save(step)
    return {"step": step, "output": str(out), "l1": l1_avg,
            "weights": str(weights) if weights else None}
