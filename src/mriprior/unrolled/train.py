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
import hashlib
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from mriprior.data.dataset import open_dataset
from mriprior.data.loader import LoaderState, SliceDataset, make_loader
from mriprior.errors import InputError
from mriprior.io.files import atomic_write_bytes, atomic_write_text
from mriprior.priors.config import SCHEMA as PRIOR_SCHEMA
from mriprior.priors.config import Field, _at_least, _positive, _resolve_path, _section
from mriprior.priors.checkpoints import (latest_checkpoint, list_checkpoints,
                                         newest_readable_checkpoint, write_checkpoint)
from mriprior.priors.train import (_Dist, _git_revision, _Logger, _seed, lr_factor, rank0_lock,
                                   state_sha256)
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
        "coils": Field(int, 8, check=_at_least(1)),
        "snr": Field(float, 40.0, nullable=True, check=_positive,
                     doc="RMS k-space / noise sigma; null: noiseless"),
        "masks": Field("strings", ["equispaced", "random"], check=_kinds),
        "accels": Field("floats", [4.0, 8.0], check=_accels),
        "acs_fraction": Field(float, 0.08, check=_fraction, doc="1D ACS rows at R = 4"),
        "calib_fraction": Field(float, 0.08, check=_fraction, doc="Poisson-disc calibration"),
        "rotate_coils": Field(bool, True),
        "bank": Field(int, 16, check=_at_least(1), doc="masks per (kind, R)"),
    },
    "optim": PRIOR_SCHEMA["optim"],
    "train": {**{k: f for k, f in PRIOR_SCHEMA["train"].items() if k != "ema_decay"},
              "loss": Field(("l1", "l2"), "l1")},
    "heldout": {"every": Field(int, 0, check=_at_least(0)),
                "n_images": Field(int, 8, check=_at_least(1)),
                "split": Field(("train", "val", "test"), "val")},
}
_SECTIONS = ("unrolled", "model") + tuple(SCHEMA)
_FIXED = ("model", "data", "simulation")


def validate_unrolled_config(raw, base_dir=".") -> dict:
    """Validate a mapping (as read from YAML); returns the resolved config (paths absolute)."""
    if not isinstance(raw, dict):
        raise InputError(f"config: expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in _SECTIONS:
            raise InputError(f"{key}: unknown section (known: {', '.join(_SECTIONS)})")
    for key in ("model", "data", "train"):
        if key not in raw:
            raise InputError(f"{key}: required section missing")
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
        out[name] = _section(name, sec, schema)
    if out["optim"]["min_lr"] > out["optim"]["lr"]:
        raise InputError("optim.min_lr: must be <= optim.lr")
    base = Path(base_dir)
    out["data"]["path"] = _resolve_path(out["data"]["path"], base)
    out["train"]["output"] = _resolve_path(out["train"]["output"], base)
    return out


def load_unrolled_config(path, overrides: dict | None = None) -> dict:
    from mriprior.priors.config import apply_overrides, read_yaml

    p = Path(path)
    raw = read_yaml(p)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        return validate_unrolled_config(raw, p.resolve().parent)
    except InputError as e:
        raise InputError(f"{p}: {e}") from None


# ----------------------------------------------------------------------------- export
def save_network(path, net: nn.Module, meta: dict) -> Path:
    """``path.safetensors`` + ``path.json`` (``{"format", "network", ...meta}``), atomically."""
    from safetensors.torch import save

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    weights = p.with_suffix(".safetensors")
    atomic_write_bytes(weights, save(state), fsync=True)
    sidecar = {"format": FORMAT, "version": 1, "network": net.config, **meta}
    atomic_write_text(p.with_suffix(".json"), json.dumps(sidecar, indent=1))
    return weights


def load_network(path, device=None) -> tuple[nn.Module, dict]:
    """Rebuild a network written by :func:`save_network` (``NAME``, ``NAME.json`` or
    ``NAME.safetensors``) and load its weights strictly."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    try:
        meta = json.loads(p.with_suffix(".json").read_text())
    except FileNotFoundError:
        raise InputError(f"{p.with_suffix('.json')}: network sidecar not found") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{p.with_suffix('.json')}: not JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{p.with_suffix('.json')}: not an mriprior unrolled network "
                         f"(format {meta.get('format')!r})")
    net = build_network(meta["network"])
    try:
        state = load_file(str(p.with_suffix(".safetensors")), device="cpu")
        net.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise InputError(f"{p.with_suffix('.safetensors')}: weights not found") from None
    except RuntimeError as e:
        raise InputError(f"{p.with_suffix('.safetensors')}: weights do not match the sidecar's "
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
    ctx = _Dist(cfg["train"]["device"])
    try:
        with rank0_lock(ctx, cfg["train"]["output"]):
            return _train(cfg, ctx, resume, stop_at)
    finally:
        ctx.close()


def _train(cfg, ctx, resume, stop_at):
    dcfg, scfg, ocfg, tcfg, hcfg = (cfg[k] for k in ("data", "simulation", "optim", "train",
                                                      "heldout"))
    device, rank, world = ctx.device, ctx.rank, ctx.world_size
    is_main = rank == 0
    output = Path(tcfg["output"])
    seed = tcfg["seed"]
    ckpt_path = latest_checkpoint(output)
    if ckpt_path is not None and not resume:
        raise InputError(f"{output}: already holds checkpoints ({ckpt_path.name}); use --resume "
                         "or choose a new train.output")
    ckpt = None
    if resume and ckpt_path is not None:
        ckpt_path, ckpt = newest_readable_checkpoint(output, CKPT_FORMAT)
        for key in _FIXED:
            if json.dumps(ckpt["config"][key], sort_keys=True) != json.dumps(cfg[key],
                                                                              sort_keys=True):
                raise InputError(f"{ckpt_path}: {key} differs from the checkpoint's; resume "
                                 "needs the same setting")
        if ckpt["world_size"] != world:
            raise InputError(f"{ckpt_path}: written by {ckpt['world_size']} rank(s), resumed "
                             f"with {world}")
    ds = open_dataset(dcfg["path"])  # checked before anything is written
    if ds.kind != "complex":
        raise InputError(f"data.path {dcfg['path']}: unrolled networks train on complex "
                         f"targets; this dataset is {ds.kind!r}")
    slices = SliceDataset(ds, split=dcfg["split"], crop=dcfg["crop"], flips=dcfg["flips"],
                          channels="complex", seed=seed)
    ctx.barrier()
    if is_main:
        (output / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "config.json", json.dumps(cfg, indent=1))
    shape = slices.crop or tuple(ds.shape)
    synth = Synthesizer(scfg, shape, seed=seed, bank=scfg["bank"])
    start = LoaderState.from_dict(ckpt["loader"]) if ckpt is not None else 0
    loader = make_loader(slices, tcfg["batch_size"], num_workers=dcfg["num_workers"], seed=seed,
                         start_step=start, rank=rank, world_size=world,
                         total_steps=tcfg["steps"])
    start_step = loader.step

    torch.manual_seed(seed)
    net = build_network(cfg["model"]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=ocfg["lr"], betas=tuple(ocfg["betas"]),
                            eps=ocfg["eps"], weight_decay=ocfg["weight_decay"])
    total, warm, min_ratio = tcfg["steps"], ocfg["warmup_steps"], ocfg["min_lr"] / ocfg["lr"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warm, ocfg["schedule"], min_ratio))
    use_amp = tcfg["amp"] and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
    ckpt = None
    model = net
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    heldout = None
    if hcfg["every"] and is_main:
        hs = SliceDataset(ds, split=hcfg["split"], crop=dcfg["crop"], flips=False,
                          channels="complex", seed=seed)
        n = min(hcfg["n_images"], len(hs))
        ref = complex_batch(torch.stack([hs[i] for i in range(n)])).to(device)
        g = torch.Generator(device=device).manual_seed(_seed(_STEP_TAG, seed, 999_999))
        heldout = (ref, *synth(ref, g))

    manifest_sha = hashlib.sha256((Path(dcfg["path"]) / "manifest.json").read_bytes()).hexdigest()
    meta = {"simulation": scfg, "data": {"dataset": dcfg["path"], "split": dcfg["split"],
                                         "crop": dcfg["crop"], "shape": list(shape)},
            "dataset_manifest_sha256": manifest_sha,
            "git_revision": _git_revision() if is_main else None, "config": cfg,
            "parameters": sum(p.numel() for p in net.parameters())}
    logger = _Logger(output, is_main, start_step if resume else None)

    def save(step):
        path = output / "checkpoints" / f"ckpt-{step:08d}.pt"
        if is_main:
            state = {"format": CKPT_FORMAT, "step": step, "world_size": world, "config": cfg,
                     "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "scaler": scaler.state_dict(), "loader": loader.state().as_dict()}
            write_checkpoint(path, state)
            for old in list_checkpoints(output)[:-tcfg["keep_last"]]:
                old.unlink(missing_ok=True)
            save_network(output / "net", copy.deepcopy(net).cpu().eval(), {**meta, "step": step})
        ctx.barrier()
        return path

    @torch.no_grad()
    def evaluate(step):
        from mriprior.metrics import psnr, ssim

        net.eval()
        ref, ksp, maps, mask = heldout
        out = torch.cat([net(*t) for t in zip(ksp.split(4), maps.split(4), mask.split(4))])
        net.train()
        rec = {"psnr": float(psnr(ref, out)), "ssim": float(ssim(ref, out)),
               "zero_filled_psnr": float(psnr(ref, (maps.conj() * _ifft(ksp)).sum(1)))}
        logger.write({"step": step, "heldout": rec})
        return rec

    bar = tqdm(total=total, initial=start_step, disable=not (is_main and sys.stderr.isatty()),
               dynamic_ncols=True, desc="train")
    net.train()
    step, last_loss, last_held, last_ckpt = start_step, float("nan"), {}, None
    acc, n_acc, t_last = 0.0, 0, time.perf_counter()
    try:
        for batch in loader:
            ref = complex_batch(batch.to(device, non_blocking=True))
            g = torch.Generator(device=device).manual_seed(_seed(_STEP_TAG, seed, rank, step))
            ksp, maps, mask = synth(ref, g)
            with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
                loss = _loss(tcfg["loss"], model(ksp, maps, mask), ref)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if ocfg["grad_clip"] is not None:
                nn.utils.clip_grad_norm_(net.parameters(), ocfg["grad_clip"])
            lr = opt.param_groups[0]["lr"]
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            acc += float(loss.detach())
            n_acc += 1
            if step % tcfg["log_every"] == 0 or step == total:
                now = time.perf_counter()
                last_loss = ctx.mean(acc / n_acc)
                ips = n_acc * tcfg["batch_size"] * world / max(now - t_last, 1e-9)
                logger.write({"step": step, "loss": last_loss, "lr": lr, "images_per_s": ips})
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.1f}")
                acc, n_acc, t_last = 0.0, 0, time.perf_counter()
            bar.update(1)
            if heldout is not None and hcfg["every"] and step % hcfg["every"] == 0:
                last_held = evaluate(step)
            if step % tcfg["save_every"] == 0 or step == total:
                last_ckpt = save(step)
                if stop_at is not None and step >= stop_at:
                    break
    finally:
        bar.close()
        logger.close()
    if last_ckpt is None and step and (stop_at is None or step < stop_at):
        last_ckpt = latest_checkpoint(output)
    return {"step": step, "loss": last_loss, "output": str(output),
            "network": str(output / "net.safetensors") if is_main else None,
            "heldout": last_held, "world_size": world,
            "weights_sha256": state_sha256(net.state_dict())}


def _ifft(k):
    from mriprior.physics.fft import ifft2c
    return ifft2c(k)
