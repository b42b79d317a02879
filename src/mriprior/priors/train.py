"""Training engine for priors: single process (CPU / one GPU) or DDP under ``torchrun``.

``train(config, resume=False)`` trains the network of a validated config
(:mod:`mriprior.priors.config`): a score network with the VE DSM loss (parametrisation
``"score"``), the VP eps loss (``"eps"``) or the EDM denoiser loss (``"edm"``), or a PixelCNN++ (``model.type: pixelcnn``,
parametrisation ``"nll"``) by maximum likelihood (loss: the discretised logistic mixture NLL in
bits/dim). AdamW, linear warm-up then cosine decay to ``min_lr``, global gradient-norm clipping,
EMA of the weights, mixed precision on CUDA (bf16, or fp16 with a grad scaler).

Held-out evaluation (``heldout.every``; rank 0, EMA weights, eval mode, fixed images of the
``heldout.split``): the DSM loss per ``heldout.sigmas`` for score priors, the NLL in bits/dim for
PixelCNN++ priors (the record ``{"heldout": {"nll_bpd": ..}}``). With ``heldout.sample_grid`` and
TensorBoard importable, a few EMA samples (fixed seed) are written there as magnitude / phase
image grids at the same steps; a TensorBoard failure is reported once and never stops training.

Distributed: when ``WORLD_SIZE`` > 1 (set by ``torchrun``) the process group is initialised
(``nccl`` on CUDA, ``gloo`` on CPU) and each rank reads its own shard of every epoch
(:func:`mriprior.data.loader.make_loader` ``rank`` / ``world_size``); ``train.batch_size`` is per
rank. Only rank 0 writes files; all ranks hold identical weights.

Run folder (``train.output``)::

    config.json                   the resolved config
    log.jsonl                     one JSON record per log step / held-out evaluation
    checkpoints/ckpt-00001000.pt  the last ``keep_last`` checkpoints
    prior.safetensors + .json     the EMA weights, exported at every save and at the end
    tensorboard/                  only if ``torch.utils.tensorboard`` imports

Checkpoints (``torch.save``; read back with ``torch.load(weights_only=True)``: only tensors and
plain Python types) hold the model, optimiser, LR scheduler, grad scaler and EMA states, the
step, the loader state, the resolved config, the world size, and per rank the RNG states (the
loss-noise generator, the global torch CPU RNG and, on CUDA, the device RNG). They are written to
a temporary file and renamed into place, so a kill never leaves a partial checkpoint.

Exact resume: the loader is a pure function of (seed, step) and every random draw of a step comes
from the checkpointed generators, so ``--resume`` after a kill continues bit for bit (on CPU; on
CUDA up to the nondeterminism of some kernels). The LR schedule is a function of the step and of
``train.steps``: overriding ``train.steps`` on resume reshapes the cosine tail.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tqdm import tqdm

from mriprior.data.dataset import open_dataset
from mriprior.data.loader import LoaderState, SliceDataset, make_loader
from mriprior.diffusion import (EMA, ScoreModel, edm_loss, heldout_dsm_loss, ve_dsm_loss,
                                vp_eps_loss)
from mriprior.diffusion.losses import PARAMETRISATION_OF
from mriprior.errors import InputError
from mriprior.io.files import atomic_write_text, output_lock
from mriprior.priors.checkpoints import (latest_checkpoint, list_checkpoints,  # noqa: F401
                                         newest_readable_checkpoint, read_checkpoint,
                                         write_checkpoint)
from mriprior.priors.export import save_prior
from mriprior.priors.networks import network_from_config
from mriprior.priors.patches import PatchTiler, check_patches, training_patches
from mriprior.priors.pixelcnn import (bits_per_dim, discretized_logistic_mixture_nll,
                                      likelihood_meta, to_network_scale)

__all__ = ["train", "latest_checkpoint", "newest_readable_checkpoint", "list_checkpoints",
           "read_checkpoint", "lr_factor",
           "state_sha256"]

CKPT_FORMAT = "mriprior-train-checkpoint"
CKPT_VERSION = 1
_NOISE_TAG = 0x6E6F  # stream tags for per-rank seeds
_TORCH_TAG = 0x746F
# Config keys that must not change between a checkpoint and its resumption.
_FIXED = (("model", None), ("diffusion", None), ("data", "path"), ("data", "split"),
          ("data", "crop"), ("data", "channels"), ("data", "flips"), ("train", "batch_size"),
          ("train", "seed"))


# ----------------------------------------------------------------------------- helpers
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


def _seed(*ints: int) -> int:
    return int(np.random.SeedSequence(list(ints)).generate_state(1, np.uint64)[0] >> 1)


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


def _git_revision() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = r.stdout.strip()
    return rev if r.returncode == 0 and rev else None


def _find_key(obj, key):
    """First value of ``key`` in a nested mapping (depth first), or None."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


# ----------------------------------------------------------------------------- distributed
class _Dist:
    def __init__(self, device_pref: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise InputError("train.device: 'cuda' requested but CUDA is not available")
        if want_cuda:
            self.device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.owns_group = False
        import torch.distributed as dist
        self.dist = dist
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
            self.owns_group = True

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def gather(self, obj):
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.enabled:
            self.dist.barrier()

    def close(self):
        if self.owns_group:
            self.dist.destroy_process_group()


# ----------------------------------------------------------------------------- the run
TB_MISSING = ("train.tensorboard: true, but TensorBoard is not installed (pip install "
              "'mriprior[tensorboard]', or set it to false)")


def _check_tensorboard(wanted) -> None:
    """Fail before anything is written when TensorBoard is required but missing."""
    if wanted is True:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise InputError(TB_MISSING) from None


class _Logger:
    def __init__(self, output: Path, active: bool, resume_step: int | None,
                 tensorboard="auto"):
        self.active = active
        self.path = output / "log.jsonl"
        self.tb = None
        if not active:
            return
        if resume_step is not None and self.path.exists():
            # Drop records written after the checkpoint we resume from (a killed run's tail,
            # whose last line may be partial).
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line) if line.strip() else None
                except ValueError:
                    warnings.warn(f"{self.path}: dropped an unreadable line (a killed run's "
                                  "partial record)")
                    continue
                if isinstance(rec, dict) and rec.get("step", 0) <= resume_step:
                    kept.append(line)
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard is False:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if tensorboard is True:
                raise InputError(TB_MISSING) from None
            warnings.warn("TensorBoard is not installed: logging to log.jsonl only (pip install "
                          "'mriprior[tensorboard]' for TensorBoard logs)")
            return
        self.tb = SummaryWriter(str(output / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, step)
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        self.tb.add_scalar(f"{k}/{kk}", vv, step)

    def images(self, images: dict, step: int) -> None:
        """``{"tag": (1, H, W) in [0, 1]}`` to TensorBoard; a failure disables it with a warning."""
        if self.tb is None:
            return
        try:
            for tag, img in images.items():
                self.tb.add_image(tag, img, step)
        except Exception as e:  # never let TensorBoard stop training
            warnings.warn(f"TensorBoard image logging failed ({e}); sample grids disabled")
            self.tb = None

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _rng_state(noise_gen: torch.Generator, device: torch.device) -> dict:
    state = {"noise": noise_gen.get_state(), "torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, noise_gen: torch.Generator, device: torch.device) -> None:
    noise_gen.set_state(state["noise"])
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)


def _check_compatible(saved: dict, config: dict, path: Path) -> None:
    for section, key in _FIXED:
        a = saved.get(section) if key is None else saved.get(section, {}).get(key)
        b = config.get(section) if key is None else config.get(section, {}).get(key)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            name = section if key is None else f"{section}.{key}"
            raise InputError(f"{path}: {name} differs from the checkpoint's "
                             f"({a!r} vs {b!r}); resume needs the same setting")


def _resolve(config) -> dict:
    from mriprior.priors.config import load_config, validate_config

    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    return validate_config(config, base_dir=".")


def train(config, resume: bool = False, *, stop_at: int | None = None) -> dict:
    """Train a prior from ``config`` (a resolved config dict, a raw mapping or a YAML path).

    ``resume``: continue from the latest checkpoint of ``train.output`` (a fresh start if there is
    none). Without it an output folder that already holds checkpoints is an error.
    ``stop_at``: stop right after the checkpoint of this step, without any final checkpoint or
    export -- the state a kill at that moment leaves (for tests of resumption).

    Returns ``{"step", "loss", "output", "prior", "checkpoint", "heldout", "world_size",
    "weights_sha256"}`` (the hash covers the model and EMA weights; equal on every rank).
    """
    cfg = _resolve(config)
    tcfg = cfg["train"]
    if stop_at is not None and stop_at % tcfg["save_every"] and stop_at != tcfg["steps"]:
        raise InputError(f"stop_at {stop_at} is not a checkpoint step (train.save_every "
                         f"{tcfg['save_every']})")
    _check_tensorboard(tcfg["tensorboard"])
    ctx = _Dist(tcfg["device"])
    try:
        with rank0_lock(ctx, tcfg["output"]):
            return _train(cfg, ctx, resume, stop_at)
    finally:
        ctx.close()


def rank0_lock(ctx: _Dist, output):
    """The output lock of a training run, taken by rank 0 (mriprior.io.files.output_lock)."""
    return output_lock(output, "training") if ctx.rank == 0 else nullcontext()


def _train(cfg: dict, ctx: _Dist, resume: bool, stop_at: int | None) -> dict:
    dcfg, tcfg, ocfg, hcfg, diff = (cfg["data"], cfg["train"], cfg["optim"], cfg["heldout"],
                                    cfg["diffusion"])
    device, rank, world = ctx.device, ctx.rank, ctx.world_size
    is_main = rank == 0
    output = Path(tcfg["output"])
    ckpt_dir = output / "checkpoints"
    seed = tcfg["seed"]

    # -- resume point (every rank reads the same file) -----------------------------------------
    ckpt_path = latest_checkpoint(output)
    if ckpt_path is not None and not resume:
        raise InputError(f"{output}: already holds checkpoints ({ckpt_path.name}); use --resume "
                         "to continue, or choose a new train.output")
    ckpt = None
    if resume and ckpt_path is not None:
        ckpt_path, ckpt = newest_readable_checkpoint(output, CKPT_FORMAT, CKPT_VERSION)
        _check_compatible(ckpt["config"], cfg, ckpt_path)
        if ckpt["world_size"] != world:
            raise InputError(f"{ckpt_path}: written by {ckpt['world_size']} rank(s), resumed "
                             f"with {world}; exact resume needs the same world size")
    # -- data (checked before anything is written) ---------------------------------------------
    ds = open_dataset(dcfg["path"])
    manifest_sha = hashlib.sha256((Path(dcfg["path"]) / "manifest.json").read_bytes()).hexdigest()
    try:
        slices = SliceDataset(ds, split=dcfg["split"], crop=dcfg["crop"], flips=dcfg["flips"],
                              channels=dcfg["channels"], seed=seed)
    except InputError as e:
        raise InputError(f"data.path {dcfg['path']}: {e}") from None
    patches = (check_patches(dcfg["patches"], slices.shape) if dcfg["patches"] is not None
               else None)
    ctx.barrier()
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(exist_ok=True)
        atomic_write_text(output / "config.json", json.dumps(cfg, indent=1))
    start = LoaderState.from_dict(ckpt["loader"]) if ckpt is not None else 0
    loader = make_loader(slices, tcfg["batch_size"], num_workers=dcfg["num_workers"], seed=seed,
                         start_step=start, rank=rank, world_size=world,
                         total_steps=tcfg["steps"])
    start_step = loader.step
    heldout_x = None
    if hcfg["every"] and is_main:
        hs = SliceDataset(ds, split=hcfg["split"], crop=dcfg["crop"], flips=False,
                          channels=dcfg["channels"], seed=seed)
        n = min(hcfg["n_images"], len(hs))
        heldout_x = torch.stack([hs[i] for i in range(n)]).to(device)

    # -- model, EMA, optimiser -------------------------------------------------------------------
    torch.manual_seed(seed)  # identical initialisation on every rank
    net = network_from_config(cfg["model"]).to(device)
    ema = EMA(net, tcfg["ema_decay"], ramp=tcfg["ema_ramp"])
    decay_params = [p for n, p in net.named_parameters() if p.ndim > 1]
    other_params = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": ocfg["weight_decay"]},
         {"params": other_params, "weight_decay": 0.0}],
        lr=ocfg["lr"], betas=tuple(ocfg["betas"]), eps=ocfg["eps"])
    total, warmup, min_ratio = tcfg["steps"], ocfg["warmup_steps"], ocfg["min_lr"] / ocfg["lr"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, ocfg["schedule"], min_ratio))
    use_amp = tcfg["amp"] and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported()
                 else torch.float16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    noise_gen = torch.Generator(device=device)
    noise_gen.manual_seed(_seed(_NOISE_TAG, seed, rank))
    torch.manual_seed(_seed(_TORCH_TAG, seed, rank))  # dropout etc.: per-rank streams
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        ema.load_state_dict(ckpt["ema"])
        _set_rng_state(ckpt["rng"][rank], noise_gen, device)
        if ckpt["step"] != start_step:
            raise InputError(f"{ckpt_path}: step {ckpt['step']} disagrees with its loader state")
    ckpt = None  # free memory

    model = net
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    is_pixelcnn = cfg["model"]["type"] == "pixelcnn"
    in_channels = cfg["model"]["in_channels"]
    # conditioned on the magnitude (a phase model); a patch prior's condition is its positions
    is_cond = bool(cfg["model"].get("cond_channels", 0)) and patches is None

    def conditioned(x0):
        """(training images, the network as the losses call it) for one batch: a conditional
        model sees the magnitude of x0; a patch prior trains on random patches of the batch
        (one size per step) and sees their position channels."""
        if patches is not None:
            x0, cond = training_patches(x0, patches, noise_gen)
        elif is_cond:
            cond = x0.square().sum(1, keepdim=True).sqrt()  # (B, 1, H, W) from (re, im)
        else:
            return x0, model
        return x0, (lambda v, sigma: model(v, sigma, cond))

    parametrisation = ("nll" if is_pixelcnn else
                       PARAMETRISATION_OF[diff["type"]])
    sigma_data = diff.get("sigma_data")
    if is_pixelcnn:
        def loss_fn(x0):  # NLL in bits/dim per image (mean over elements, like the DSM losses)
            xn = to_network_scale(x0, in_channels)
            nll = discretized_logistic_mixture_nll(model(xn), xn)
            return bits_per_dim(nll, xn[0].numel()), None
    elif diff["type"] == "ve":
        def loss_fn(x0):
            x0, net_ = conditioned(x0)
            return ve_dsm_loss(net_, x0, noise_gen, sigma_min=diff["sigma_min"],
                               sigma_max=diff["sigma_max"], t_eps=diff["t_eps"])
    elif diff["type"] == "edm":
        def loss_fn(x0):
            x0, net_ = conditioned(x0)
            denoiser = ScoreModel(net_, "edm", sigma_data=sigma_data)
            return edm_loss(denoiser, x0, noise_gen, p_mean=diff["p_mean"], p_std=diff["p_std"])
    else:
        def loss_fn(x0):
            x0, net_ = conditioned(x0)
            return vp_eps_loss(net_, x0, noise_gen, beta_min=diff["beta_min"],
                               beta_max=diff["beta_max"], t_eps=diff["t_eps"])

    kind_meta = (likelihood_meta(in_channels) if is_pixelcnn else
                 {"prior_type": "diffusion", "diffusion": dict(diff)})
    prior_meta = {
        **kind_meta,
        "network": cfg["model"],
        "parametrisation": parametrisation,
        **({"conditioning": "magnitude"} if is_cond else {}),
        **({"patches": patches} if patches is not None else {}),
        "data": {"channels": dcfg["channels"],
                 "normalisation": _find_key(ds.manifest.get("options", {}), "normalize"),
                 "kind": ds.kind, "crop": dcfg["crop"], "split": dcfg["split"],
                 "dataset": dcfg["path"], "slices": int(len(ds.indices(dcfg["split"])))},
        "dataset_manifest_sha256": manifest_sha,
        "git_revision": _git_revision() if is_main else None,
        "config": cfg,
        "ema": True,
    }
    export_net = copy.deepcopy(net).cpu().eval() if is_main else None
    logger = _Logger(output, is_main, start_step if resume else None, tcfg["tensorboard"])

    def export(step: int) -> Path:
        export_net.load_state_dict({k: v.cpu() for k, v in net.state_dict().items()})
        ema.copy_to(export_net)
        weights, _ = save_prior(output / "prior", export_net, {**prior_meta, "step": step})
        return weights

    def save(step: int) -> Path:
        rng = ctx.gather(_rng_state(noise_gen, device))
        path = ckpt_dir / f"ckpt-{step:08d}.pt"
        if is_main:
            state = {
                "format": CKPT_FORMAT, "version": CKPT_VERSION, "step": step,
                "world_size": world, "config": cfg,
                "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "ema": ema.state_dict(),
                "loader": loader.state().as_dict(), "rng": rng,
            }
            write_checkpoint(path, state)
            for old in list_checkpoints(output)[:-tcfg["keep_last"]]:
                old.unlink(missing_ok=True)
            export(step)
        ctx.barrier()
        return path

    grid_cfg = hcfg.get("sample_grid")

    @torch.no_grad()
    def evaluate(step: int) -> dict:
        if heldout_x is None:
            return {}
        was_training = net.training
        net.eval()
        # the whole-image network (a patch prior's inner net sees patches and positions)
        whole = (PatchTiler(net, patches["infer"], patches["ref"], seed=seed)
                 if patches is not None else net)
        with ema.swap(net):
            if is_pixelcnn:
                bpd = []
                for chunk in heldout_x.split(tcfg["batch_size"]):
                    xn = to_network_scale(chunk, in_channels)
                    nll = discretized_logistic_mixture_nll(net(xn), xn)
                    bpd.append(bits_per_dim(nll.double(), xn[0].numel()))
                result = {"nll_bpd": float(torch.cat(bpd).mean())}
            else:
                cond = (heldout_x.square().sum(1, keepdim=True).sqrt() if is_cond else None)
                score = ScoreModel(whole, parametrisation, cond=cond, sigma_data=sigma_data)
                losses = heldout_dsm_loss(score.scaled_score, heldout_x, hcfg["sigmas"],
                                          seed=seed)
                result = {f"{s:g}": float(v) for s, v in zip(hcfg["sigmas"], losses)}
            if grid_cfg and logger.tb is not None and not is_cond:
                from mriprior.priors.sampling import sample_grid_images, sample_prior

                samples = sample_prior(whole, prior_meta, n=grid_cfg["n"],
                                       size=tuple(grid_cfg["size"]),
                                       steps=grid_cfg.get("steps", 1), seed=seed, device=device)
                logger.images({f"samples/{k}": v
                               for k, v in sample_grid_images(samples).items()}, step)
        net.train(was_training)
        logger.write({"step": step, "heldout": result})
        return result

    # -- loop ------------------------------------------------------------------------------------
    bar = tqdm(total=tcfg["steps"], initial=start_step, disable=not (is_main and
               sys.stderr.isatty()), dynamic_ncols=True, desc="train")
    net.train()
    step = start_step
    last_loss, heldout, last_ckpt = float("nan"), {}, None
    acc_loss, acc_n, t_last = 0.0, 0, time.perf_counter()
    images_per_step = tcfg["batch_size"] * world
    try:
        for x0 in loader:
            x0 = x0.to(device, non_blocking=True)
            autocast = (torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext())
            with autocast:
                per_sample, _ = loss_fn(x0)
                loss = per_sample.float().mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if ocfg["grad_clip"] is not None:
                grad_norm = float(nn.utils.clip_grad_norm_(net.parameters(), ocfg["grad_clip"]))
            else:
                grad_norm = float("nan")
            lr = opt.param_groups[0]["lr"]
            scaler.step(opt)
            scaler.update()
            sched.step()
            ema.update(net)
            step += 1
            acc_loss += float(loss.detach())
            acc_n += 1
            if step % tcfg["log_every"] == 0 or step == tcfg["steps"]:
                now = time.perf_counter()
                ips = acc_n * images_per_step / max(now - t_last, 1e-9)
                last_loss = ctx.mean(acc_loss / acc_n)
                logger.write({"step": step, "loss": last_loss, "lr": lr, "grad_norm": grad_norm,
                              "images_per_s": ips})
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.1f}")
                acc_loss, acc_n, t_last = 0.0, 0, time.perf_counter()
            bar.update(1)
            if hcfg["every"] and step % hcfg["every"] == 0:
                heldout = evaluate(step)
            if step % tcfg["save_every"] == 0 or step == tcfg["steps"]:
                last_ckpt = save(step)
                if stop_at is not None and step >= stop_at:
                    break
    finally:
        bar.close()
        logger.close()

    if stop_at is not None and step >= stop_at:
        prior = output / "prior.safetensors" if is_main else None  # as a kill would leave it
    else:
        if last_ckpt is None:  # nothing left to train (resumed a finished run)
            last_ckpt = latest_checkpoint(output) if step else save(step)
        prior = export(step) if is_main else None
    return {"step": step, "loss": last_loss, "output": str(output),
            "prior": str(prior) if prior is not None else None,
            "checkpoint": str(last_ckpt) if last_ckpt is not None else None,
            "heldout": heldout, "world_size": world,
            "weights_sha256": state_sha256(net.state_dict(), ema.state_dict()["shadow"])}
