"""Training engine for unrolled reconstruction networks (VarNet, MoDL) on synthesised k-space.

Config (YAML, one per run, every key checked; ``unrolled: true`` marks it for ``mriprior
train``)::

    unrolled: true
    model:      {type: varnet, cascades, chans, pools, dc_weight}
                | {type: modl, iterations, chans, pools, cg_iters, mu}
    data:       {path, split, crop, flips, num_workers}      a COMPLEX dataset: the targets
    simulation: {coils, snr, masks, accels, acs_fraction, calib_fraction, rotate_coils, bank}
    optim:      as for priors (lr, betas, eps, weight_decay, grad_clip, warmup_steps, schedule,
                min_lr)
    train:      {batch_size, steps, save_every, keep_last, seed, log_every, output, amp, device,
                 loss: l1 | l2}
    heldout:    {every, n_images, split}                     PSNR / SSIM of fixed held-out cases

Each step: a batch of complex slices from the loader (deterministic in (seed, step)), k-space
synthesised from them (:class:`~mriprior.unrolled.synth.Synthesizer`, every draw from a
generator seeded by (seed, rank, step)), the network's image, the loss against the slice
(``l1``: mean |x - ref| of the complex difference; ``l2``: mean |x - ref|^2). The machinery is the
priors engine's: DDP under ``torchrun`` (gloo on CPU, nccl on CUDA; ranks read their own shard),
AdamW with warm-up + cosine, gradient clipping, mixed precision on CUDA, atomic checkpoints with
the last ``keep_last`` kept, **exact resume** (model, optimiser, scheduler, grad scaler, step and
loader position; no other random state exists), log.jsonl + TensorBoard scalars, tqdm progress.
The weights are exported at every save as ``net.safetensors`` + ``net.json``
(:func:`save_network`; :func:`load_network` reads them).
"""

from __future__ import annotations

import copy
import json
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from mriprior.data.dataset import open_dataset
from mriprior.data.loader import SliceDataset
from mriprior.seeds import derive_seed
from mriprior.engine import (Dist, Hooks, Logger, check_tensorboard, git_revision,
                             heldout_images, make_optimizer, optimiser_step, prepare_run_dir,
                             resume_point, run_loop, run_ranked, save_run_checkpoint,
                             state_sha256, training_loader)
from mriprior.errors import InputError
from mriprior.io.files import (atomic_write_bytes, atomic_write_text, sha256_file,
                               weights_and_sidecar)
from mriprior.metrics import psnr, ssim
from mriprior.physics.fft import ifft2c
from mriprior.priors.config import SCHEMA as PRIOR_SCHEMA
from mriprior.priors.config import (Field, at_least, check_section, check_sections,
                                    load_yaml_config, positive, resolve_path)
from mriprior.unrolled.networks import build_network
from mriprior.unrolled.synth import MASK_KINDS, Synthesizer

__all__ = ["SCHEMA", "validate_unrolled_config", "load_unrolled_config", "train_unrolled",
           "save_network", "load_network", "complex_batch"]

FORMAT = "mriprior-unrolled"
CKPT_FORMAT = "mriprior-unrolled-checkpoint"
_STEP_TAG = 0x7572


def _kinds(v):
    bad = [k for k in v if k not in MASK_KINDS]
    return None if v and not bad else f"must be a non-empty list of {list(MASK_KINDS)}, got {v}"


def _accels(v):
    return None if v and all(a >= 1 for a in v) else f"must be a non-empty list of R >= 1, got {v}"


def _fraction(v):
    return None if 0 < v < 1 else f"must be in (0, 1), got {v}"


SCHEMA = {
    "data": {k: f for k, f in PRIOR_SCHEMA["data"].items() if k != "channels"},
    "simulation": {
        "coils": Field(int, 8, check=at_least(1)),
        "snr": Field(float, 40.0, nullable=True, check=positive,
                     doc="RMS k-space / noise sigma; null: noiseless"),
        "masks": Field("strings", ["equispaced", "random"], check=_kinds),
        "accels": Field("floats", [4.0, 8.0], check=_accels),
        "acs_fraction": Field(float, 0.08, check=_fraction, doc="1D ACS rows at R = 4"),
        "calib_fraction": Field(float, 0.08, check=_fraction, doc="Poisson-disc calibration"),
        "rotate_coils": Field(bool, True),
        "bank": Field(int, 16, check=at_least(1), doc="masks per (kind, R)"),
    },
    "optim": PRIOR_SCHEMA["optim"],
    "train": {**{k: f for k, f in PRIOR_SCHEMA["train"].items() if k != "ema_decay"},
              "loss": Field(("l1", "l2"), "l1")},
    "heldout": {"every": Field(int, 0, check=at_least(0)),
                "n_images": Field(int, 8, check=at_least(1)),
                "split": Field(("train", "val", "test"), "val")},
}
_SECTIONS = ("unrolled", "model") + tuple(SCHEMA)
_FIXED = (("model",), ("data",), ("simulation",))


def validate_unrolled_config(raw, base_dir=".") -> dict:
    """Validate a mapping (as read from YAML); returns the resolved config (paths absolute)."""
    check_sections(raw, _SECTIONS, ("model", "data", "train"))
    out = {"unrolled": True}
    if not isinstance(raw["model"], dict):
        raise InputError("model: expected a mapping")
    net = build_network(raw["model"])  # checks type, keys and values
    out["model"] = dict(net.config)
    for name, schema in SCHEMA.items():
        sec = raw.get(name)
        if name == "simulation" and isinstance(sec, dict):
            sec = {k: (list(v) if k == "masks" and isinstance(v, (list, tuple)) else v)
                   for k, v in sec.items()}
        out[name] = check_section(name, sec, schema)
    if out["optim"]["min_lr"] > out["optim"]["lr"]:
        raise InputError("optim.min_lr: must be <= optim.lr")
    base = Path(base_dir)
    out["data"]["path"] = resolve_path(out["data"]["path"], base)
    out["train"]["output"] = resolve_path(out["train"]["output"], base)
    return out


def load_unrolled_config(path, overrides: dict | None = None) -> dict:
    """An unrolled-network config file (``overrides``: ``{"section.key": value}``), validated."""
    return load_yaml_config(path, overrides, validate_unrolled_config)


# ----------------------------------------------------------------------------- export
def save_network(path, net: nn.Module, meta: dict) -> Path:
    """``path.safetensors`` + ``path.json`` (``{"format", "network", ...meta}``), atomically."""
    from safetensors.torch import save

    weights, sidecar = weights_and_sidecar(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(weights, save(state), fsync=True)
    meta = {"format": FORMAT, "version": 1, "network": net.config, **meta}
    atomic_write_text(sidecar, json.dumps(meta, indent=1))
    return weights


def load_network(path, device=None) -> tuple[nn.Module, dict]:
    """Rebuild a network written by :func:`save_network` (``NAME``, ``NAME.json`` or
    ``NAME.safetensors``) and load its weights strictly."""
    from safetensors.torch import load_file

    weights, sidecar = weights_and_sidecar(path)
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise InputError(f"{sidecar}: network sidecar not found") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{sidecar}: not JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{sidecar}: not an mriprior unrolled network "
                         f"(format {meta.get('format')!r})")
    net = build_network(meta["network"])
    try:
        net.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except FileNotFoundError:
        raise InputError(f"{weights}: weights not found") from None
    except RuntimeError as e:
        raise InputError(f"{weights}: weights do not match the sidecar's "
                         f"network ({str(e).splitlines()[0]})") from None
    net.eval()
    return (net.to(device) if device is not None else net), meta


def complex_batch(x: torch.Tensor) -> torch.Tensor:
    """Loader batch ``(b, 2, y, x)`` real -> ``(b, y, x)`` complex64."""
    return torch.complex(x[:, 0].float(), x[:, 1].float())


def _loss(kind, pred, ref):
    d = (pred - ref).abs()
    return (d if kind == "l1" else d.square()).mean()


# ----------------------------------------------------------------------------- the run
def train_unrolled(config, resume: bool = False, *, stop_at: int | None = None) -> dict:
    """Train (or ``resume``) from a config (path, raw mapping or resolved dict). ``stop_at``:
    stop right after that step's checkpoint, as a kill would leave it (for resume tests).
    Returns ``{"step", "loss", "output", "network", "heldout", "world_size",
    "weights_sha256"}``."""
    if isinstance(config, (str, Path)):
        cfg = load_unrolled_config(config)
    else:
        cfg = validate_unrolled_config(dict(config), ".")
    check_tensorboard(cfg["train"]["tensorboard"])
    return run_ranked(cfg["train"]["device"], cfg["train"]["output"],
                      lambda ctx: _UnrolledTrainer(cfg, ctx, resume).run(stop_at))


class _UnrolledTrainer:
    """One run: data, synthesiser, network, optimiser and the engine's hooks."""

    def __init__(self, cfg: dict, ctx: Dist, resume: bool):
        self.cfg, self.ctx, self.resume = cfg, ctx, resume
        dcfg, tcfg = cfg["data"], cfg["train"]
        self.device, self.is_main, self.seed = ctx.device, ctx.rank == 0, tcfg["seed"]
        self.output = Path(tcfg["output"])
        path, ckpt = resume_point(self.output, resume, CKPT_FORMAT, world_size=ctx.world_size,
                                  config=cfg, fixed=_FIXED)
        self.ds = open_dataset(dcfg["path"])  # checked before anything is written
        if self.ds.kind != "complex":
            raise InputError(f"data.path {dcfg['path']}: unrolled networks train on complex "
                             f"targets; this dataset is {self.ds.kind!r}")
        slices = SliceDataset(self.ds, split=dcfg["split"], crop=dcfg["crop"],
                              flips=dcfg["flips"], channels="complex", seed=self.seed)
        ctx.barrier()
        if self.is_main:
            prepare_run_dir(self.output, cfg)
        self.shape = slices.crop or tuple(self.ds.shape)
        scfg = cfg["simulation"]
        self.synth = Synthesizer(scfg, self.shape, seed=self.seed, bank=scfg["bank"])
        self.loader = training_loader(slices, ckpt, ctx, tcfg, dcfg["num_workers"])
        self._build(ckpt)
        self.heldout = self._heldout_cases()

    def _build(self, ckpt):
        torch.manual_seed(self.seed)
        self.net = build_network(self.cfg["model"]).to(self.device)
        self.opt, self.sched = make_optimizer(self.net, self.cfg["optim"],
                                              self.cfg["train"]["steps"])
        self.use_amp = self.cfg["train"]["amp"] and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if ckpt is not None:
            for name, obj in self._states().items():
                obj.load_state_dict(ckpt[name])
        self.model = self.ctx.wrap(self.net)

    def _states(self) -> dict:
        return {"model": self.net, "optimizer": self.opt, "scheduler": self.sched,
                "scaler": self.scaler}

    def _heldout_cases(self):
        x = heldout_images(self.ds, self.cfg["heldout"], self.cfg["data"]["crop"], "complex",
                           self.seed, self.ctx)
        if x is None:
            return None
        ref = complex_batch(x)
        g = torch.Generator(device=self.device).manual_seed(
            derive_seed(_STEP_TAG, self.seed, 999_999))
        return (ref, *self.synth(ref, g))

    def _meta(self) -> dict:
        dcfg = self.cfg["data"]
        manifest = Path(dcfg["path"]) / "manifest.json"
        return {"simulation": self.cfg["simulation"],
                "data": {"dataset": dcfg["path"], "split": dcfg["split"], "crop": dcfg["crop"],
                         "shape": list(self.shape)},
                "dataset_manifest_sha256": sha256_file(manifest),
                "git_revision": git_revision() if self.is_main else None, "config": self.cfg,
                "parameters": sum(p.numel() for p in self.net.parameters())}

    # -- hooks ---------------------------------------------------------------------------------
    def step(self, batch) -> dict:
        ref = complex_batch(batch.to(self.device, non_blocking=True))
        g = torch.Generator(device=self.device).manual_seed(
            derive_seed(_STEP_TAG, self.seed, self.ctx.rank, self.step_no))
        self.step_no += 1
        ksp, maps, mask = self.synth(ref, g)
        with torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext():
            loss = _loss(self.cfg["train"]["loss"], self.model(ksp, maps, mask), ref)
        lr, _ = optimiser_step(loss, self.net, self.opt, self.sched, self.scaler,
                               self.cfg["optim"]["grad_clip"])
        return {"loss": float(loss.detach()), "lr": lr}

    def save(self, step: int) -> Path:
        return save_run_checkpoint(self.ctx, self.output, step, fmt=CKPT_FORMAT, config=self.cfg,
                                   states=self._states(), loader=self.loader, export=self.export,
                                   world_size=self.ctx.world_size)

    def export(self, step: int) -> Path:
        return save_network(self.output / "net", copy.deepcopy(self.net).cpu().eval(),
                            {**self.meta, "step": step})

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        if self.heldout is None:
            return {}
        self.net.eval()
        ref, ksp, maps, mask = self.heldout
        out = torch.cat([self.net(*t) for t in zip(ksp.split(4), maps.split(4), mask.split(4))])
        self.net.train()
        return {"psnr": float(psnr(ref, out)), "ssim": float(ssim(ref, out)),
                "zero_filled_psnr": float(psnr(ref, (maps.conj() * ifft2c(ksp)).sum(1)))}

    def run(self, stop_at: int | None) -> dict:
        self.step_no = self.loader.step
        self.meta = self._meta()
        logger = Logger(self.output, self.is_main, self.step_no if self.resume else None,
                        self.cfg["train"]["tensorboard"])
        self.net.train()
        r = run_loop(self.loader, Hooks(self.step, self.save, self.evaluate), ctx=self.ctx,
                     logger=logger, output=self.output, train=self.cfg["train"],
                     eval_every=self.cfg["heldout"]["every"], stop_at=stop_at)
        return {"step": r["step"], "loss": r["log"].get("loss", float("nan")),
                "output": str(self.output),
                "network": str(self.output / "net.safetensors") if self.is_main else None,
                "heldout": r["heldout"], "world_size": self.ctx.world_size,
                "weights_sha256": state_sha256(self.net.state_dict())}
