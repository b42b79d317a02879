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
import os
from contextlib import nullcontext
from pathlib import Path

import torch

from mriprior.data.dataset import open_dataset
from mriprior.data.loader import SliceDataset
from mriprior.diffusion import (EMA, ScoreModel, edm_loss, heldout_dsm_loss, ve_dsm_loss,
                                vp_eps_loss)
from mriprior.diffusion.losses import PARAMETRISATION_OF
from mriprior.seeds import derive_seed
from mriprior.engine import (Dist, Hooks, Logger, check_tensorboard, git_revision,
                             heldout_images, make_optimizer, optimiser_step, prepare_run_dir,
                             resume_point, rng_state, run_loop, run_ranked, save_run_checkpoint,
                             set_rng_state, state_sha256, training_loader)
from mriprior.errors import InputError
from mriprior.io.files import sha256_file
from mriprior.priors.config import load_config, validate_config
from mriprior.priors.export import load_prior, prior_files, read_sidecar, save_prior
from mriprior.priors.networks import network_from_config
from mriprior.priors.patches import PatchTiler, check_patches, training_patches
from mriprior.priors.pixelcnn import (bits_per_dim, discretized_logistic_mixture_nll,
                                      likelihood_meta, to_network_scale)

__all__ = ["train"]

CKPT_FORMAT = "mriprior-train-checkpoint"
CKPT_VERSION = 1
_NOISE_TAG = 0x6E6F  # stream tags for per-rank seeds
_TORCH_TAG = 0x746F
# Config entries that must not change between a checkpoint and its resumption.
_FIXED = (("model",), ("diffusion",), ("data", "path"), ("data", "split"), ("data", "crop"),
          ("data", "channels"), ("data", "flips"), ("data", "transposes"), ("data", "gain"),
          ("train", "batch_size"), ("train", "seed"))
# Their values in checkpoints written before the entry existed.
_FIXED_BEFORE = {("data", "transposes"): False, ("data", "gain"): None}


def _find_key(obj, key):
    """First value of ``key`` in nested mappings and lists (depth first; a merged dataset's
    sources are a list), or None."""
    if isinstance(obj, dict) and key in obj:
        return obj[key]
    for v in obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ():
        found = _find_key(v, key)
        if found is not None:
            return found
    return None


def _resolve(config) -> dict:
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
    check_tensorboard(tcfg["tensorboard"])
    return run_ranked(tcfg["device"], tcfg["output"],
                      lambda ctx: _PriorTrainer(cfg, ctx, resume).run(stop_at))


def _init_state(cfg: dict) -> dict:
    """The weights a fine-tuning run starts from: the (EMA) weights of the exported prior
    ``train.init_from``, which must have this run's network and diffusion."""
    path = cfg["train"]["init_from"]
    meta = read_sidecar(path)
    for key, want in (("network", cfg["model"]), ("diffusion", cfg["diffusion"])):
        if meta.get(key) != want:
            raise InputError(f"train.init_from {path}: its {key} differs from this run's "
                             f"({meta.get(key)!r} vs {want!r})")
    net, _ = load_prior(path)
    return getattr(net, "net", net).state_dict()  # a patch prior: the tiler's network


class _PriorTrainer:
    """One run: data, network, optimiser and the engine's hooks (step, evaluate, save)."""

    def __init__(self, cfg: dict, ctx: Dist, resume: bool):
        self.cfg, self.ctx, self.resume = cfg, ctx, resume
        tcfg = cfg["train"]
        self.device, self.is_main = ctx.device, ctx.rank == 0
        self.output = Path(tcfg["output"])
        self.ckpt_path, ckpt = resume_point(self.output, resume, CKPT_FORMAT, CKPT_VERSION,
                                            world_size=ctx.world_size, config=cfg, fixed=_FIXED,
                                            missing=_FIXED_BEFORE)
        # fine-tuning: the starting weights, checked before anything is written
        self.init_state = (_init_state(cfg) if ckpt is None and tcfg["init_from"] is not None
                           else None)
        self._open_data(ckpt)
        self._build(ckpt)
        self.meta = self._prior_meta()
        self.denoising_error = None  # the last held-out losses, for the exported sidecar

    # -- set-up --------------------------------------------------------------------------------
    def _open_data(self, ckpt):
        """Data checked before anything is written; the loader at the resume point."""
        dcfg, tcfg, seed = self.cfg["data"], self.cfg["train"], self.cfg["train"]["seed"]
        self.ds = open_dataset(dcfg["path"])
        try:
            slices = SliceDataset(self.ds, split=dcfg["split"], crop=dcfg["crop"],
                                  flips=dcfg["flips"], channels=dcfg["channels"], seed=seed,
                                  transposes=dcfg["transposes"], gain=dcfg["gain"])
        except InputError as e:
            raise InputError(f"data.path {dcfg['path']}: {e}") from None
        self.patches = (check_patches(dcfg["patches"], slices.shape)
                        if dcfg["patches"] is not None else None)
        self.ctx.barrier()
        if self.is_main:
            prepare_run_dir(self.output, self.cfg)
        self.loader = training_loader(slices, ckpt, self.ctx, tcfg, dcfg["num_workers"])
        self.heldout_x = heldout_images(self.ds, self.cfg["heldout"], dcfg["crop"],
                                        dcfg["channels"], seed, self.ctx)

    def _build(self, ckpt):
        """Network, EMA, optimiser, schedule, grad scaler, noise streams; the checkpoint's
        states loaded into them."""
        cfg, tcfg, device = self.cfg, self.cfg["train"], self.device
        seed, rank = tcfg["seed"], self.ctx.rank
        torch.manual_seed(seed)  # identical initialisation on every rank
        self.net = network_from_config(cfg["model"]).to(device)
        self.ema = EMA(self.net, tcfg["ema_decay"], ramp=tcfg["ema_ramp"])
        self.opt, self.sched = make_optimizer(self.net, cfg["optim"], tcfg["steps"])
        self.use_amp = tcfg["amp"] and device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported()
                          else torch.float16)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.noise_gen = torch.Generator(device=device)
        self.noise_gen.manual_seed(derive_seed(_NOISE_TAG, seed, rank))
        torch.manual_seed(derive_seed(_TORCH_TAG, seed, rank))  # dropout etc.: per-rank streams
        if self.init_state is not None:  # fine-tuning: model and EMA start from the prior
            self.net.load_state_dict(self.init_state)
            self.ema = EMA(self.net, tcfg["ema_decay"], ramp=tcfg["ema_ramp"])
        if ckpt is not None:
            for name in ("model", "optimizer", "scheduler", "scaler", "ema"):
                self._states()[name].load_state_dict(ckpt[name])
            set_rng_state(ckpt["rng"][rank], device, noise=self.noise_gen)
            if ckpt["step"] != self.loader.step:
                raise InputError(f"{self.ckpt_path}: step {ckpt['step']} disagrees with its "
                                 "loader state")
        self.model = self.ctx.wrap(self.net)
        self.is_pixelcnn = cfg["model"]["type"] == "pixelcnn"
        # conditioned on the magnitude (a phase model); a patch prior's condition is its positions
        self.is_cond = bool(cfg["model"].get("cond_channels", 0)) and self.patches is None
        self.parametrisation = ("nll" if self.is_pixelcnn else
                                PARAMETRISATION_OF[cfg["diffusion"]["type"]])
        self.export_net = copy.deepcopy(self.net).cpu().eval() if self.is_main else None

    def _states(self) -> dict:
        return {"model": self.net, "optimizer": self.opt, "scheduler": self.sched,
                "scaler": self.scaler, "ema": self.ema}

    def _prior_meta(self) -> dict:
        cfg, dcfg, diff = self.cfg, self.cfg["data"], self.cfg["diffusion"]
        kind = (likelihood_meta(cfg["model"]["in_channels"]) if self.is_pixelcnn else
                {"prior_type": "diffusion", "diffusion": dict(diff)})
        manifest = Path(dcfg["path"]) / "manifest.json"
        return {
            **kind, "network": cfg["model"], "parametrisation": self.parametrisation,
            **({"conditioning": "magnitude"} if self.is_cond else {}),
            **({"patches": self.patches} if self.patches is not None else {}),
            "data": {"channels": dcfg["channels"],
                     "normalisation": _find_key(self.ds.manifest.get("options", {}),
                                                "normalize"),
                     "kind": self.ds.kind, "crop": dcfg["crop"], "split": dcfg["split"],
                     "dataset": dcfg["path"],
                     "slices": int(len(self.ds.indices(dcfg["split"])))},
            "dataset_manifest_sha256": sha256_file(manifest),
            "git_revision": git_revision() if self.is_main else None,
            "config": cfg, "ema": True, **self._init_meta(),
        }

    def _init_meta(self) -> dict:
        """The sidecar's record of a fine-tuned prior's start: path and weights hash."""
        path = self.cfg["train"]["init_from"]
        if path is None:
            return {}
        weights, _ = prior_files(path)
        name = f"{Path(path).parent.name}/{Path(path).name}"  # no machine layout in a sidecar
        return {"init_from": {"path": name, "weights_sha256": (
            sha256_file(weights) if weights.exists() else None)}}

    # -- the loss ------------------------------------------------------------------------------
    def _conditioned(self, x0):
        """(training images, the network as the losses call it) for one batch: a conditional
        model sees the magnitude of x0; a patch prior trains on random patches of the batch
        (one size per step) and sees their position channels."""
        if self.patches is not None:
            x0, cond = training_patches(x0, self.patches, self.noise_gen)
        elif self.is_cond:
            cond = x0.square().sum(1, keepdim=True).sqrt()  # (B, 1, H, W) from (re, im)
        else:
            return x0, self.model
        return x0, (lambda v, sigma: self.model(v, sigma, cond))

    def _loss(self, x0) -> torch.Tensor:
        """Per-sample loss of one batch."""
        diff, g = self.cfg["diffusion"], self.noise_gen
        if self.is_pixelcnn:  # NLL in bits/dim per image (mean over elements, like DSM losses)
            xn = to_network_scale(x0, self.cfg["model"]["in_channels"])
            return bits_per_dim(discretized_logistic_mixture_nll(self.model(xn), xn),
                                xn[0].numel())
        x0, net = self._conditioned(x0)
        if diff["type"] == "ve":
            loss, _ = ve_dsm_loss(net, x0, g, sigma_min=diff["sigma_min"],
                                  sigma_max=diff["sigma_max"], t_eps=diff["t_eps"])
        elif diff["type"] == "edm":
            loss, _ = edm_loss(ScoreModel(net, "edm", sigma_data=diff["sigma_data"]), x0, g,
                               p_mean=diff["p_mean"], p_std=diff["p_std"])
        else:
            loss, _ = vp_eps_loss(net, x0, g, beta_min=diff["beta_min"],
                                  beta_max=diff["beta_max"], t_eps=diff["t_eps"])
        return loss

    # -- hooks ---------------------------------------------------------------------------------
    def step(self, x0) -> dict:
        x0 = x0.to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=self.amp_dtype) if self.use_amp else nullcontext():
            loss = self._loss(x0).float().mean()
        lr, grad_norm = optimiser_step(loss, self.net, self.opt, self.sched, self.scaler,
                                       self.cfg["optim"]["grad_clip"])
        self.ema.update(self.net)
        return {"loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm}

    def export(self, step: int) -> Path:
        self.export_net.load_state_dict({k: v.cpu() for k, v in self.net.state_dict().items()})
        self.ema.copy_to(self.export_net)
        extra = {"denoising_error": self.denoising_error} if self.denoising_error else {}
        weights, _ = save_prior(self.output / "prior", self.export_net,
                                {**self.meta, **extra, "step": step})
        return weights

    def save(self, step: int) -> Path:
        rng = self.ctx.gather(rng_state(self.device, noise=self.noise_gen))  # on every rank
        return save_run_checkpoint(self.ctx, self.output, step, fmt=CKPT_FORMAT, config=self.cfg,
                                   states=self._states(), loader=self.loader, export=self.export,
                                   version=CKPT_VERSION, world_size=self.ctx.world_size, rng=rng)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        if self.heldout_x is None:
            return {}
        net, x, hcfg = self.net, self.heldout_x, self.cfg["heldout"]
        was_training = net.training
        net.eval()
        # the whole-image network (a patch prior's inner net sees patches and positions)
        whole = (PatchTiler(net, self.patches["infer"], self.patches["ref"],
                            seed=self.cfg["train"]["seed"]) if self.patches is not None else net)
        with self.ema.swap(net):
            if self.is_pixelcnn:
                bpd = []
                for chunk in x.split(self.cfg["train"]["batch_size"]):
                    xn = to_network_scale(chunk, self.cfg["model"]["in_channels"])
                    nll = discretized_logistic_mixture_nll(net(xn), xn)
                    bpd.append(bits_per_dim(nll.double(), xn[0].numel()))
                result = {"nll_bpd": float(torch.cat(bpd).mean())}
            else:
                cond = x.square().sum(1, keepdim=True).sqrt() if self.is_cond else None
                score = ScoreModel(whole, self.parametrisation, cond=cond,
                                   sigma_data=self.cfg["diffusion"].get("sigma_data"))
                losses = heldout_dsm_loss(score.scaled_score, x, hcfg["sigmas"],
                                          seed=self.cfg["train"]["seed"])
                result = {f"{s:g}": float(v) for s, v in zip(hcfg["sigmas"], losses)}
                pairs = sorted(dict(zip(hcfg["sigmas"], losses.tolist())).items())
                self.denoising_error = {"sigmas": [s for s, _ in pairs],
                                        "loss": [v for _, v in pairs],
                                        "measured_on": f"{len(x)} held-out images "
                                                       f"({hcfg['split']} split), step {step}"}
            self._sample_grid(whole, step)
        net.train(was_training)
        return result

    def _sample_grid(self, whole, step: int) -> None:
        grid = self.cfg["heldout"].get("sample_grid")
        if not grid or self.logger.tb is None or self.is_cond:
            return
        from mriprior.priors.sampling import sample_grid_images, sample_prior

        samples = sample_prior(whole, self.meta, n=grid["n"], size=tuple(grid["size"]),
                               steps=grid.get("steps", 1), seed=self.cfg["train"]["seed"],
                               device=self.device)
        self.logger.images({f"samples/{k}": v for k, v in sample_grid_images(samples).items()},
                           step)

    # -- the run -------------------------------------------------------------------------------
    def run(self, stop_at: int | None) -> dict:
        tcfg = self.cfg["train"]
        self.logger = Logger(self.output, self.is_main, self.loader.step if self.resume else None,
                             tcfg["tensorboard"])
        self.net.train()
        r = run_loop(self.loader, Hooks(self.step, self.save, self.evaluate), ctx=self.ctx,
                     logger=self.logger, output=self.output, train=tcfg,
                     eval_every=self.cfg["heldout"]["every"], stop_at=stop_at)
        if r["stopped"]:  # as a kill would leave it
            prior = self.output / "prior.safetensors" if self.is_main else None
        else:
            prior = self.export(r["step"]) if self.is_main else None
        return {"step": r["step"], "loss": r["log"].get("loss", float("nan")),
                "output": str(self.output), "prior": str(prior) if prior is not None else None,
                "checkpoint": str(r["checkpoint"]) if r["checkpoint"] is not None else None,
                "heldout": r["heldout"], "world_size": self.ctx.world_size,
                "weights_sha256": state_sha256(self.net.state_dict(),
                                               self.ema.state_dict()["shadow"])}
