"""One device call: build the training data on the GPU machine, train an EDM prior at the
published size for a wall budget, evaluate it against tuned L1-wavelet and the bundled CPU prior,
measure GPU rows, and leave everything in ``--out`` (``$OUT`` on the device). docs/gpu.md has
the exact call and the budget arithmetic.

Stages (each prints as it goes; stdout is what comes back if the call is cut off):

1. **data** (~30-60 s): the pack of `bench/gpu/pack.py` -> open-corpus train slices and clinical
   JPEGs decoded on all CPU cores, clinical ones fitted to the slice shape and max-normalised
   like `mriprior data import`; every magnitude gets the physics-based phase of
   `mriprior data simulate` (:func:`complex_from_magnitude`, run on the GPU; open slices with
   the seeds that dataset used); the training set lives on the GPU as ``(n, 2, y, x)`` float32.
   ``sigma_data`` of the EDM preconditioning is measured on it.
2. **train** (the rest of the budget minus ``--eval-seconds``): EDM denoiser loss
   (:func:`mriprior.diffusion.edm_loss`), AdamW, warm-up then cosine decay over the *wall*
   budget, bf16 autocast on CUDA, EMA with ramp-up, random dihedral flips / 90-degree rotations
   and a random global phase (MR images have no absolute phase) per image (NCHW layout: on the
   H200 it beat channels-last, see ``--channels-last probe``). The EMA prior is exported
   to ``--out`` every ``--export-every`` seconds, so a call cut off at its limit still returns a
   usable prior.
3. **gpu timings**: posterior sampling (4 chains x 20 NFE) on a 256 x 256 x 8 slice, l1-wavelet
   PICS (100 iterations) and ESPIRiT per slice, the median of 3 after a warm-up.
4. **evaluation** (`bench/recon.py`'s cases and protocol): held-out slices of the complex
   open corpus, Poisson-disc R 8 and 1D R 5, plus the real 8-coil slice; every parameter
   (L1 lambda, prior-PICS lambda, fast-sampler start level) tuned on the validation slices only;
   the new prior and the bundled CPU prior side by side; held-out DSM loss per sigma for both.
   Stops taking new test cases when the budget runs out (the count done is recorded).

Writes to ``--out``: ``prior-edm-gpu.safetensors`` + ``.json`` (fp16 weights, sidecar naming
this run), ``train_log.jsonl``, ``results.json`` (every number), ``samples.png``, ``run.log``.

``--prior NAME``: skip data and training and evaluate an exported prior (a second, shorter
call when the first one's evaluation failed; docs/gpu.md).

``--init NAME``: continue training an earlier call's exported prior (same network; its weights
start the network and the EMA, its ``sigma_data`` is kept, the EMA has no ramp-up; the sidecar
records the start's weights hash and steps), so that several short loans add up to one longer
run. The weights travel with the call as a carried path (13 MiB at the default size).

``--dry-run``: the same code path on the CPU with a tiny network and few steps (the test
suite runs it on a tiny pack, so the device call is never the first run of this script).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from mriprior.data.importers import fit_slice, normalize_slice
from mriprior.data.simulate import complex_from_magnitude, slice_seed
from mriprior.diffusion import EMA, ScoreModel, edm_loss, heldout_dsm_loss
from mriprior.errors import InputError
from mriprior.io.files import sha256_file
from mriprior.io.images import read_image_bytes
from mriprior.physics.espirit import espirit
from mriprior.experiments.recon_cases import (PATTERNS, real_case, score, simulated_case,
                                              uncertainty)
from mriprior.priors.export import load_prior, prior_files, save_prior, set_recon_defaults
from mriprior.priors.networks import count_parameters, network_from_config, network_from_preset
from mriprior.recon.classical import pics, sense_combine
from mriprior.recon.posterior import fast_posterior, prior_pics
from mriprior.recon.priors import flip_ensemble, load_image_prior

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "src" / "mriprior" / "assets" / "prior-edm-cpu"
PRIOR_NAME = "prior-edm-gpu"
CLINICAL_SEED_OFFSET = 1_000_000  # phase seeds of clinical images: slice_seed(seed, offset + j)
HELDOUT_SIGMAS = [0.01, 0.03, 0.1, 0.3, 1.0]


# ----------------------------------------------------------------------------- small helpers
class Run:
    """Wall clock, log (stdout + run.log) and the results record, rewritten atomically."""

    def __init__(self, out: Path, budget: float):
        self.t0 = time.perf_counter()
        self.budget = budget
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "run.log", "a")
        self.results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    def log(self, msg: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def save(self) -> None:
        path = self.out / "results.json"
        tmp = path.with_name(".results.json.tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        os.replace(tmp, path)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def _decode(blob: bytes) -> np.ndarray:
    """An image file's bytes -> float32 ``(y, x)`` scaled by its format's maximum (as
    `mriprior data import` reads PNG / JPEG: colour -> BT.601 luminance)."""
    img, meta = read_image_bytes(blob)
    return img / (meta["max_value"] or max(float(img.max()), 1e-12))


def _clinical(args) -> np.ndarray:
    blob, shape = args
    out, geom = fit_slice(_decode(blob), shape, "fit")
    out, _, _ = normalize_slice(out, geom, "max")
    return out


def _split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    return [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]


# ----------------------------------------------------------------------------- 1. data
def build_data(pack_dir: Path, device, seed: int, workers: int, run: Run,
               phase_seconds: float = math.inf) -> dict:
    info = json.loads((pack_dir / "pack.json").read_text())
    if info.get("format") != "mriprior-gpu-pack":
        raise InputError(f"{pack_dir}/pack.json: not a pack of bench/gpu/pack.py")
    z = np.load(pack_dir / "pack.npz", allow_pickle=False)
    shape = tuple(info["shape"])
    t = time.perf_counter()
    open_blobs = _split(z["open_jpeg"], z["open_offsets"])
    clin_blobs = (_split(z["clinical_jpeg"], z["clinical_offsets"])
                  if "clinical_jpeg" in z.files else [])
    with ProcessPoolExecutor(max_workers=workers) as pool:
        open_mag = list(pool.map(_decode, open_blobs, chunksize=32))
        clin_mag = list(pool.map(_clinical, [(b, shape) for b in clin_blobs], chunksize=32))
    bad = [i for i, m in enumerate(open_mag) if m.shape != shape]
    if bad:
        raise InputError(f"pack: open slice {bad[0]} has shape {open_mag[bad[0]].shape}, "
                         f"expected {shape}")
    t_decode = time.perf_counter() - t
    mags = torch.from_numpy(np.stack(open_mag + clin_mag)).clamp_min(0)
    seeds = ([slice_seed(seed, int(i)) for i in z["open_index"]]
             + [slice_seed(seed, CLINICAL_SEED_OFFSET + j) for j in range(len(clin_mag))])
    source = np.array([0] * len(open_mag) + [1] * len(clin_mag))
    # a seeded order, so that a phase stage cut short by `phase_seconds` keeps a fair mix
    order = np.random.default_rng(seed).permutation(len(mags))
    x = torch.empty((len(mags), 2) + shape, dtype=torch.float32, device=device)
    t = time.perf_counter()
    done = 0
    for s in range(0, len(mags), 64):
        if time.perf_counter() - t > phase_seconds:
            run.log(f"phase stage cut at {phase_seconds:.0f} s: {done} of {len(mags)} slices kept")
            break
        idx = order[s:s + 64]
        img, _ = complex_from_magnitude(mags[idx].to(device), seeds=[seeds[i] for i in idx])
        x[s:s + len(idx), 0], x[s:s + len(idx), 1] = img.real, img.imag
        done += len(idx)
    x = x[:done]
    kept = source[order[:done]]
    _sync(device)
    t_phase = time.perf_counter() - t
    sigma_data = float(x.float().std())
    val = torch.from_numpy(z["val"])
    test = torch.from_numpy(z["test"])
    stats = {"open_slices": int((kept == 0).sum()), "clinical_slices": int((kept == 1).sum()),
             "shape": shape,
             "decode_s": t_decode, "phase_s": t_phase, "sigma_data": sigma_data,
             "gpu_bytes": x.numel() * 4, "pack": info}
    run.log(f"data: {stats['open_slices']} open + {stats['clinical_slices']} clinical slices of "
            f"{shape}; decode "
            f"{t_decode:.1f} s, phase {t_phase:.1f} s on {device}; sigma_data {sigma_data:.4f}")
    return {"x": x, "val": val, "test": test, "val_index": z["val_index"].tolist(),
            "test_index": z["test_index"].tolist(), "stats": stats}


def augment(x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random dihedral transform (8 flips / 90-degree rotations, square images) and a random
    global phase per image; ``x0`` (b, 2, y, x) real/imaginary channels."""
    b = x0.shape[0]
    k = torch.randint(0, 8, (b,), generator=g, device=x0.device)
    ops = [(1, lambda t: t.flip(-1)), (2, lambda t: t.flip(-2))]
    if x0.shape[-1] == x0.shape[-2]:
        ops.append((4, lambda t: t.transpose(-1, -2)))
    v = x0
    for bit, op in ops:  # whole-batch selects: no per-image loop, no host sync on the hot path
        v = torch.where(((k & bit) != 0).view(b, 1, 1, 1), op(v), v)
    phi = torch.rand(b, generator=g, device=x0.device) * (2 * math.pi)
    c, s = torch.cos(phi)[:, None, None], torch.sin(phi)[:, None, None]
    re, im = v[:, 0], v[:, 1]
    return torch.stack([c * re - s * im, s * re + c * im], 1)


# ----------------------------------------------------------------------------- 2. training
def _export(net, ema, meta: dict, step: int, out: Path) -> Path:
    """The EMA weights as fp16 parameters; buffers (the Fourier frequencies of log sigma, whose
    fp16 rounding would shift the noise embedding) stay fp32."""
    export_net = copy.deepcopy(net).float().cpu().eval()
    ema.copy_to(export_net)
    for p in export_net.parameters():
        p.data = p.data.half()
    weights, _ = save_prior(out / PRIOR_NAME, export_net, {**meta, "step": step})
    return weights


def _probe_layout(step_fn, net, device, run: Run) -> bool:
    """Channels-last or not: time a few steps of each on CUDA (the faster wins)."""
    if device.type != "cuda":
        return False
    times = {}
    for cl in (False, True):
        net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        for _ in range(2):
            step_fn(cl, probe=True)
        _sync(device)
        t = time.perf_counter()
        for _ in range(5):
            step_fn(cl, probe=True)
        _sync(device)
        times[cl] = (time.perf_counter() - t) / 5
    best = min(times, key=times.get)
    net.to(memory_format=torch.channels_last if best else torch.contiguous_format)
    run.log(f"layout probe: NCHW {times[False] * 1e3:.0f} ms/step, channels-last "
            f"{times[True] * 1e3:.0f} ms/step -> {'channels-last' if best else 'NCHW'}")
    return best


def _sidecar(net, diffusion: dict, cfg, data: dict, device, use_amp: bool) -> dict:
    """The exported prior's sidecar (what the run trained, on what, how)."""
    return {
        "prior_type": "diffusion", "network": net.config, "parametrisation": "edm",
        "diffusion": diffusion,
        "data": {"channels": "complex", "normalisation": "max", "kind": "complex",
                 "crop": None, "split": "train",
                 "dataset": "bench/gpu pack: open corpus train split (JPEG q95) + clinical "
                            "archive subset, physics-based simulated phase",
                 "augmentation": "dihedral flips / rotations, random global phase"},
        "training": {"run": "bench/gpu/run.py (one device call)",
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or "cpu",
                     "torch": torch.__version__, "batch_size": cfg.batch, "lr": cfg.lr,
                     "ema_decay": cfg.ema_decay, "amp": "bf16" if use_amp else None,
                     "pack": data["stats"]["pack"].get("open", {}).get("manifest_sha256")},
        "ema": True, "weights_dtype": "float16",
    }


def _loop(loss_step, opt, net, ema, meta, cfg, train_budget: float, channels_last: bool,
          run: Run) -> tuple[int, float]:
    """Steps until ``cfg.steps`` or the wall budget; LR: linear warm-up, then cosine from lr to
    lr / 10 over the (wall) budget; log every ``log_every`` s, export every ``export_every`` s.
    Returns ``(steps, seconds)``."""
    log_f = open(run.out / "train_log.jsonl", "w")
    t_start = time.perf_counter()
    step, acc, acc_n, last_export, last_log = 0, 0.0, 0, t_start, t_start
    while True:
        spent = time.perf_counter() - t_start
        if (cfg.steps is not None and step >= cfg.steps) or spent >= train_budget:
            break
        progress = step / cfg.steps if cfg.steps else spent / train_budget
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(
            math.pi * min(1.0, progress))))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = loss_step(channels_last)
        step += 1
        acc += float(loss)  # one sync per step keeps the log honest; cheap next to the step
        acc_n += 1
        now = time.perf_counter()
        if now - last_log >= cfg.log_every or step == cfg.steps:
            rec = {"step": step, "seconds": now - t_start, "loss": acc / acc_n, "lr": lr,
                   "images": step * cfg.batch,
                   "images_per_s": acc_n * cfg.batch / max(now - last_log, 1e-9)}
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()
            run.log(f"  step {step} loss {rec['loss']:.4f} lr {lr:.2e} "
                    f"{rec['images_per_s']:.0f} img/s")
            acc, acc_n, last_log = 0.0, 0, now
        if now - last_export >= cfg.export_every:
            _export(net, ema, meta, step, run.out)
            last_export = now
    log_f.close()
    return step, time.perf_counter() - t_start


def network_config(cfg) -> dict:
    """The network this call trains: the published preset, ``--base-channels``, ``--net``."""
    net_cfg = dict(network_from_preset("published").config)
    net_cfg.update(base_channels=cfg.base_channels, dropout=0.0)
    net_cfg.update(json.loads(cfg.net) if cfg.net else {})
    return net_cfg


def init_from(path: str, net_cfg: dict) -> dict:
    """``--init``: an earlier call's exported EDM prior, to continue training it in this call
    (device loans are short: a longer run is several calls). Its (EMA) weights start the network
    and the EMA; its ``sigma_data`` is kept (the preconditioning the weights learnt). Checked
    before any data are built: its network must be this call's. Returns ``state``,
    ``sigma_data`` and ``record`` (the sidecar's ``training.init_from``)."""
    net, meta = load_prior(path)  # fp32 parameters, whatever the file's dtype
    mine = json.loads(json.dumps(network_from_config(net_cfg).config))
    if meta.get("network") != mine:
        raise InputError(f"--init {path}: its network differs from this call's "
                         f"({meta.get('network')!r} vs {mine!r}); give the same "
                         "--base-channels / --net")
    sd = (meta.get("diffusion") or {}).get("sigma_data")
    if meta.get("parametrisation") != "edm" or sd is None:
        raise InputError(f"--init {path}: not an EDM prior (parametrisation "
                         f"{meta.get('parametrisation')!r})")
    weights, _ = prior_files(path)
    return {"state": getattr(net, "net", net).state_dict(), "sigma_data": sd, "record": {
        "path": Path(path).name, "weights_sha256": sha256_file(weights),
        "steps": (meta.get("training") or {}).get("steps")}}


def train_prior(data: dict, cfg, device, run: Run, init: dict | None = None) -> dict:
    """Train the EDM prior for the wall budget (or ``cfg.steps``); ``init``: :func:`init_from`'s
    start (EMA without its ramp-up then: it starts from trained weights)."""
    x = data["x"]
    n = len(x)
    torch.manual_seed(cfg.seed)
    net = network_from_config(network_config(cfg)).to(device)
    sd = round(data["stats"]["sigma_data"], 4)
    if init is not None:
        net.load_state_dict(init["state"])
        sd = init["sigma_data"]
    diffusion = {"type": "edm", "sigma_data": sd, "p_mean": cfg.p_mean, "p_std": cfg.p_std,
                 "sigma_min": 0.01, "sigma_max": 1.0}
    model = ScoreModel(net, "edm", sigma_data=sd)
    ema = EMA(net, cfg.ema_decay, ramp=init is None)
    decay = [p for p in net.parameters() if p.ndim > 1]
    other = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.0},
                             {"params": other, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)
    use_amp = device.type == "cuda"
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    train_budget = max(1.0, run.left() - cfg.eval_seconds) if cfg.steps is None else math.inf
    run.log(f"train: {count_parameters(net) / 1e6:.2f} M parameters, batch {cfg.batch}, "
            f"lr {cfg.lr}, EDM sigma_data {sd}, ln sigma ~ N({cfg.p_mean}, {cfg.p_std}^2); "
            + (f"{cfg.steps} steps" if cfg.steps else f"wall budget {train_budget:.0f} s"))
    if init is not None:
        run.log(f"  continuing {init['record']['path']} ({init['record']['steps']} steps before)")

    def loss_step(channels_last: bool, probe: bool = False) -> float:
        idx = torch.randint(0, n, (cfg.batch,), generator=g, device=device)
        x0 = augment(x[idx], g)
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with (torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()):
            loss = edm_loss(model, x0, g, p_mean=cfg.p_mean, p_std=cfg.p_std)[0].float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not probe:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(net)
        return loss.detach()

    meta = _sidecar(net, diffusion, cfg, data, device, use_amp)
    if init is not None:
        meta["training"]["init_from"] = init["record"]
    if cfg.channels_last == "probe":
        channels_last = _probe_layout(loss_step, net, device, run)
    else:
        channels_last = cfg.channels_last == "on" and device.type == "cuda"
        net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    step, seconds = _loop(loss_step, opt, net, ema, meta, cfg, train_budget, channels_last, run)
    _sync(device)
    meta["training"].update(steps=step, seconds=round(seconds, 1), images=step * cfg.batch,
                            channels_last=channels_last)
    weights = _export(net, ema, meta, step, run.out)
    stats = {"steps": step, "seconds": seconds, "images": step * cfg.batch,
             "images_per_s": step * cfg.batch / max(seconds, 1e-9),
             "parameters": count_parameters(net), "channels_last": channels_last,
             "weights_bytes": weights.stat().st_size, "diffusion": diffusion,
             **({"init_from": init["record"]} if init is not None else {})}
    run.log(f"train done: {step} steps, {stats['images']} images in {seconds:.0f} s "
            f"({stats['images_per_s']:.0f} img/s); exported {weights.name} "
            f"({stats['weights_bytes'] / 2**20:.1f} MiB)")
    return {"net": net, "ema": ema, "meta": meta, "stats": stats}


# ----------------------------------------------------------------------------- 3. timings
def gpu_timings(prior, case, device, cfg, run: Run) -> dict:
    ksp, maps = case["ksp"], case["maps"]
    rows = {}
    jobs = {
        f"posterior {cfg.chains} chains x {cfg.nfe} NFE": lambda: fast_posterior(
            ksp, maps, prior, chains=cfg.chains, nfe=cfg.nfe, sigma_start=0.3, seed=0),
        "l1-wavelet PICS, 100 iterations": lambda: pics(ksp, maps, "l1", 0.005, 100,
                                                        rescale=True),
        "ESPIRiT (1 map, calib 20)": lambda: espirit(ksp, calib=20, maps=1),
    }
    for name, fn in jobs.items():
        fn()  # warm-up (cuDNN / cuFFT plans)
        times = sorted(timed(fn, device)[1] for _ in range(3))
        rows[name] = times[1]
        run.log(f"  timing {name}: {times[1]:.3f} s per slice {tuple(ksp.shape[1:])}")
    return rows


# ----------------------------------------------------------------------------- 4. evaluation
def _mean(rows, key):
    return float(np.mean([r[key] for r in rows]))


def _anneal(cfg) -> dict:
    """prior PICS' annealing keywords of ``--pics-anneal`` (``cfg``: the parsed options or the
    results' ``env.config``); none without it."""
    a = cfg.get("pics_anneal") if isinstance(cfg, dict) else cfg.pics_anneal
    return {} if not a else {"anneal_sigma": float(a[0]), "anneal_iters": int(a[1])}


def tune(vals, priors, cfg, run: Run) -> dict:
    """Every parameter chosen on the validation cases (mean PSNR), never on test cases."""
    out = {}
    res = {}
    for lam in cfg.l1_grid:
        res[lam] = _mean([score(v, pics(v["ksp"], v["maps"], "l1", lam, 100, rescale=True)[0])
                          for v in vals], "psnr")
    out["l1"] = max(res, key=res.get)
    out["l1_val_psnr"] = res
    for name, prior in priors.items():
        res = {}  # PICS lambda (and, with a wavelet grid, "lambda,wavelet") -> mean PSNR
        for lam in cfg.pics_grid:
            for w in cfg.wavelet_grid:
                key = lam if cfg.wavelet_grid == [0.0] else f"{lam:g},{w:g}"
                res[key] = _mean([score(v, prior_pics(v["ksp"], v["maps"], prior, lam=lam,
                                                      max_iter=cfg.pics_iters, wavelet=w,
                                                      flips=cfg.flips != "off",
                                                      **_anneal(cfg))[0])
                                  for v in vals], "psnr")
        best = max(res, key=res.get)
        best_pics, best_w = ((best, 0.0) if cfg.wavelet_grid == [0.0] else
                             tuple(float(x) for x in best.split(",")))
        res_f = {}
        for s0 in cfg.start_grid:
            res_f[s0] = _mean([score(v, fast_posterior(v["ksp"], v["maps"], prior, chains=2,
                                                       nfe=cfg.nfe, sigma_start=s0, seed=0,
                                                       flips=cfg.flips == "all").mmse)
                                 for v in vals], "psnr")
        best_start = max(res_f, key=res_f.get)
        out[name] = {"pics_lambda": best_pics, "pics_wavelet": best_w, "pics_val_psnr": res,
                     "sigma_start": best_start, "fast_val_psnr": res_f}
    run.log(f"  tuned on {len(vals)} validation slice(s): L1 {out['l1']}, "
            + ", ".join(f"{k}: PICS {v['pics_lambda']}"
                        + (f" + wavelet {v['pics_wavelet']}" if v["pics_wavelet"] else "")
                        + f" start {v['sigma_start']}"
                        for k, v in out.items() if isinstance(v, dict) and "pics_lambda" in v))
    return out


def run_case(name, case, priors, tuning, cfg, run: Run) -> dict:
    ksp, maps = case["ksp"], case["maps"]
    m = {}
    m["zero-filled"] = score(case, sense_combine(ksp, maps))
    m["L1-wavelet"] = {**score(case, pics(ksp, maps, "l1", tuning["l1"], 100, rescale=True)[0]),
                       "lambda": tuning["l1"]}
    for pname, prior in priors.items():
        t = tuning[pname]
        w = t.get("pics_wavelet", 0.0)
        m[f"{pname} PICS"] = {**score(case, prior_pics(ksp, maps, prior, lam=t["pics_lambda"],
                                                       max_iter=cfg.pics_iters, wavelet=w,
                                                       flips=cfg.flips != "off",
                                                       **_anneal(cfg))[0]),
                              "lambda": t["pics_lambda"], **({"wavelet": w} if w else {})}
        r = fast_posterior(ksp, maps, prior, chains=cfg.chains, nfe=cfg.nfe,
                           sigma_start=t["sigma_start"], seed=0, keep_samples=True,
                           flips=cfg.flips == "all")
        m[f"{pname} fast MMSE"] = {**score(case, r.mmse), "nfe": r.nfe,
                                   "sigma_start": t["sigma_start"], **uncertainty(case, r)}
        # the same sampler with the noise-model data step (`mriprior recon`'s default since
        # bench/noise_dc.py); same start level, nothing else tuned
        r = fast_posterior(ksp, maps, prior, chains=cfg.chains, nfe=cfg.nfe,
                           sigma_start=t["sigma_start"], seed=0, keep_samples=True,
                           noise_var="auto", flips=cfg.flips == "all")
        m[f"{pname} fast MMSE, noise model"] = {**score(case, r.mmse), "nfe": r.nfe,
                                                "sigma_start": t["sigma_start"],
                                                **uncertainty(case, r)}
    best = max((k for k in m if k not in ("zero-filled", "L1-wavelet")),
               key=lambda k: m[k]["psnr"])
    run.log(f"  {name}: L1 {m['L1-wavelet']['psnr']:.2f} dB, best prior method {best} "
            f"{m[best]['psnr']:.2f} dB (" + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in m.items()
                                                   if k != "L1-wavelet") + ")")
    return {"case": name, "accel": case["accel"], "methods": m}


def summarise(cases: list[dict]) -> dict:
    """Per pattern (and the real slice): mean +- std of PSNR / SSIM per method."""
    groups: dict = {}
    for c in cases:
        key = c["case"].split(", ")[-1] if c["case"].startswith("simulated") else "real"
        for meth, v in c["methods"].items():
            groups.setdefault(key, {}).setdefault(meth, []).append(v)
    out = {}
    for key, meths in groups.items():
        out[key] = {}
        for meth, rows in meths.items():
            ps = [r["psnr"] for r in rows]
            row = {"n": len(rows), "psnr": float(np.mean(ps)), "psnr_std": float(np.std(ps)),
                   "ssim": float(np.mean([r["ssim"] for r in rows]))}
            if "coverage90" in rows[0]:
                row["spearman"] = float(np.mean([r["spearman_std_err"] for r in rows]))
                row["coverage90"] = float(np.mean([r["coverage90"] for r in rows]))
                if "coverage90_ref_noise" in rows[0]:
                    row["coverage90_ref_noise"] = float(np.mean([r["coverage90_ref_noise"]
                                                                 for r in rows]))
            out[key][meth] = row
    return out


def write_defaults(path, tuning: dict, name: str, n_val: int, cfg: dict) -> None:
    """Write the settings tuned for prior ``name`` on the Poisson-disc validation slices
    (``tuning``: ``results["tuning"]``), and L1-wavelet's lambda tuned on the same slices (the
    baseline to compare with), into the sidecar of ``path`` (recon_defaults); those tuned on the
    1D validation slices, where tuned, under each method's ``"1d"``."""
    flips = cfg.get("flips", "off")

    def methods(kind):
        t = tuning[kind][name]
        return {"fast": {"sigma_start": t["sigma_start"], "nfe": cfg["nfe"],
                         **({"flips": True} if flips == "all" else {})},
                "pics": {"lam": t["pics_lambda"], "iters": cfg["pics_iters"],
                         **({"wavelet": t["pics_wavelet"]} if t.get("pics_wavelet") else {}),
                         **({"flips": True} if flips != "off" else {}),
                         **_anneal(cfg)},
                "l1": {"lam": tuning[kind]["l1"], "iters": 100}}

    rd = methods("poisson")
    if name in tuning.get("1d", {}):
        rd = {m: {**v, "1d": methods("1d")[m]} for m, v in rd.items()}
    set_recon_defaults(path, {**rd, "tuned_on": (
        f"{n_val} validation slice(s) of {Path(cfg['pack']).name}, {PATTERNS['poisson']}"
        + (f"; 1D: {PATTERNS['1d']}" if "1d" in rd["fast"] else "")
        + ", 8 coils (bench/gpu/run.py)")})


def defaults_from(results: str, name: str, prior: str) -> None:
    """``--defaults-from``: what an earlier run tuned for ``name`` into ``prior``'s sidecar."""
    res = json.loads(Path(results).read_text())
    tuning = res.get("tuning", {})
    poisson = tuning.get("poisson", {})
    if name not in poisson:
        raise SystemExit(f"{results}: no Poisson-disc tuning for {name!r} (tuned: "
                         f"{', '.join(k for k, v in poisson.items() if isinstance(v, dict))})")
    cfg = res["env"]["config"]
    n_val = res["data"].get("val_slices")
    if n_val is None:  # results written before val_slices was recorded: count them in the pack
        with np.load(Path(cfg["pack"]) / "pack.npz", allow_pickle=False) as z:
            n_val = len(z["val_index"])
    write_defaults(prior, tuning, name, n_val, cfg)
    print(f"{prior}.json: recon_defaults of {name} from {results}")


def evaluate_priors(data, trained, cfg, device, run: Run) -> None:
    res = run.results
    if trained.get("ema") is not None:
        with torch.no_grad():
            trained["ema"].copy_to(trained["net"])  # sample the EMA weights
    # evaluate the file we ship
    new = load_image_prior(trained.get("path", run.out / PRIOR_NAME), device=device)
    priors = {cfg.name: new}
    for item in cfg.compare:  # NAME=PRIOR, side by side with the same slices and tuning
        name, _, path = item.partition("=")
        priors[name] = load_image_prior(path, device=device)
    if not cfg.no_bundled and BUNDLED.with_suffix(".json").is_file():
        priors["cpu (bundled)"] = load_image_prior(BUNDLED, device=device)
    # held-out denoising loss per sigma (VE DSM form, comparable across parametrisations)
    val_x = torch.stack([data["val"].real, data["val"].imag], 1).to(device)
    held = {}
    for name, prior in priors.items():
        fn = (prior.model.scaled_score if cfg.flips == "off" else
              flip_ensemble(prior.model.scaled_score))
        losses = heldout_dsm_loss(fn, val_x, HELDOUT_SIGMAS, seed=0)
        held[name] = {f"{s:g}": float(v) for s, v in zip(HELDOUT_SIGMAS, losses)}
    res["heldout_dsm"] = held
    run.log("held-out DSM loss per sigma: " + "; ".join(
        f"{k}: " + " ".join(f"{s} {v:.4f}" for s, v in h.items()) for k, h in held.items()))
    run.save()
    first = None
    res["tuning"], res["cases"], res["skipped_cases"] = {}, [], 0
    per_case = None
    for kind in cfg.patterns:
        if run.left() < 20:
            run.log(f"out of time before pattern {kind}")
            break
        run.log(f"pattern {kind}: {PATTERNS[kind]}")
        vals = [simulated_case(data["val"][j], kind, seed=100 + j, device=device)
                for j in range(len(data["val"]))]
        res["tuning"][kind] = tune(vals, priors, cfg, run)
        run.save()
        if "poisson" in res["tuning"] and (cfg.write_defaults or not cfg.prior):
            path = trained.get("path", run.out / PRIOR_NAME)
            write_defaults(path, res["tuning"], cfg.name, len(vals), vars(cfg))
            run.log(f"  tuned settings written to {Path(path).name}.json (recon_defaults)")
        if first is None:
            first = vals[0]
            res["gpu_timings"] = gpu_timings(new, first, device, cfg, run)
            run.save()
        for j in range(len(data["test"])):
            t = time.perf_counter()
            if per_case is not None and run.left() < 1.2 * per_case + 5:
                res["skipped_cases"] += len(data["test"]) - j
                run.log(f"  out of time: {len(data['test']) - j} {kind} test case(s) skipped")
                break
            case = simulated_case(data["test"][j], kind, seed=j, device=device)
            name = f"simulated test slice {data['test_index'][j]}, {kind}"
            res["cases"].append(run_case(name, case, priors, res["tuning"][kind], cfg, run))
            per_case = time.perf_counter() - t
            res["summary"] = summarise(res["cases"])
            run.save()
        if kind == "poisson" and cfg.real is not None and run.left() > 15:
            case = real_case(cfg.real, device=device)
            name = "real brain slice {}x{}".format(*case["ksp"].shape[-2:])
            res["cases"].append(run_case(name, case, priors, res["tuning"][kind], cfg, run))
            res["summary"] = summarise(res["cases"])
            run.save()


def save_samples(trained, device, run: Run, n: int, steps: int) -> None:
    from mriprior.experiments.report import save_figure
    from mriprior.priors.sampling import sample_grid_images, sample_prior
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = tuple(run.results["data"]["shape"])
    with torch.no_grad():
        x = sample_prior(trained["net"], trained["meta"], n=n, size=size, steps=steps, seed=0,
                         device=device)
    grids = sample_grid_images(x)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, (k, v) in zip(axes, grids.items()):
        ax.imshow(v[0].numpy(), cmap="gray" if k == "magnitude" else "twilight")
        ax.set_title(f"EMA samples, {k} ({steps} ancestral steps)")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, run.out / "samples.png", dpi=80)


# ----------------------------------------------------------------------------- main
def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pack", default=".gpu", help="folder written by bench/gpu/pack.py")
    p.add_argument("--out", default=os.environ.get("OUT", "out/gpu"))
    p.add_argument("--budget", type=float, default=540.0, help="wall seconds for everything")
    p.add_argument("--eval-seconds", type=float, default=170.0,
                   help="kept for timings, evaluation and samples after training")
    p.add_argument("--steps", type=int, default=None, help="train a fixed number of steps "
                   "instead of the wall budget (dry runs)")
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--p-mean", type=float, default=-2.0)
    p.add_argument("--p-std", type=float, default=1.4)
    p.add_argument("--base-channels", type=int, default=56,
                   help="56: 6.9 M parameters, fp16 weights 13 MiB (< the 16 MiB a file "
                        "may have to come back)")
    p.add_argument("--net", default=None, help="JSON overrides of the network config")
    p.add_argument("--channels-last", choices=["off", "on", "probe"], default="off",
                   help="memory layout on CUDA; probe: time both (costs ~30 s of cuDNN "
                        "autotuning; on the H200 NCHW won, 269 vs 351 ms/step)")
    p.add_argument("--phase-seconds", type=float, default=90.0,
                   help="cap on the phase simulation; slices not reached by then are left out")
    p.add_argument("--export-every", type=float, default=60.0)
    p.add_argument("--log-every", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--real", default=None, help="real slice folder (default: PACK/real)")
    p.add_argument("--patterns", default="poisson,1d")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--nfe", type=int, default=20)
    p.add_argument("--pics-iters", type=int, default=50)
    p.add_argument("--l1-grid", default="0.001,0.002,0.005,0.01,0.02")
    p.add_argument("--pics-grid", default="0.05,0.2,0.5,1.0")
    p.add_argument("--wavelet-grid", default="0",
                   help="weights of an l1-wavelet term beside the prior in prior PICS, tuned "
                        "jointly with --pics-grid (default 0: the prior alone)")
    p.add_argument("--start-grid", default="0.1,0.3,1.0")
    p.add_argument("--samples", type=int, default=8,
                   help="prior samples drawn for samples.png (0: none)")
    p.add_argument("--sample-steps", type=int, default=200)
    p.add_argument("--prior", default=None, help="skip data and training: evaluate this "
                   "exported prior (NAME of NAME.safetensors + NAME.json)")
    p.add_argument("--init", default=None, metavar="PRIOR", help="continue training this "
                   "exported prior (an earlier call's prior-edm-gpu; same --base-channels / "
                   "--net): its weights start the network and the EMA")
    p.add_argument("--name", default="gpu-edm", help="label of the evaluated prior in results")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=PRIOR",
                   help="also evaluate this prior, side by side on the same slices with its "
                        "own tuning (repeatable; the bundled prior always is)")
    p.add_argument("--no-bundled", action="store_true",
                   help="do not add the bundled prior to the comparison (name it with --compare "
                        "when the bundled file changed since a run being repeated)")
    p.add_argument("--write-defaults", action="store_true",
                   help="with --prior: write the settings tuned on the Poisson-disc validation "
                        "slices into its sidecar (always done for a prior this run trained)")
    p.add_argument("--defaults-from", metavar="RESULTS", default=None,
                   help="with --prior and --name: only write the settings that the run which "
                        "wrote RESULTS (its results.json) tuned for --name into --prior's sidecar")
    p.add_argument("--flips", choices=["off", "pics", "all"], default="off",
                   help="prior PICS (pics) or every prior method (all) averages the score over "
                        "the four image-axis flips (mriprior.recon.priors.FlipAveraged; 4 x the "
                        "network compute)")
    p.add_argument("--pics-anneal", metavar="SIGMA:ITERS", default=None,
                   help="prior PICS anneals its denoiser level from SIGMA to the prior's "
                        "reg_sigma over the first ITERS iterations (prior_pics' anneal_sigma / "
                        "anneal_iters; default: none)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny network, 3 steps, small grids: the same code path")
    cfg = p.parse_args(argv)
    if cfg.defaults_from and not cfg.prior:
        p.error("--defaults-from needs --prior (the sidecar to write) and --name")
    if cfg.init and cfg.prior:
        p.error("--init continues training a prior, --prior only evaluates one: give one of them")
    if cfg.dry_run:
        cfg.device = "cpu"
        cfg.net = cfg.net or json.dumps({"base_channels": 8, "channel_mults": [1, 2, 2],
                                         "num_res_blocks": 1, "attention_levels": [2]})
        cfg.steps = cfg.steps or 3
        cfg.batch, cfg.warmup, cfg.workers = 2, 1, min(cfg.workers, 2)
        cfg.chains, cfg.nfe, cfg.pics_iters = 2, 2, 2
        cfg.l1_grid, cfg.pics_grid, cfg.start_grid = "0.005", "0.2", "0.3"
        cfg.samples, cfg.sample_steps = 2, 2
    floats = lambda s: [float(v) for v in s.split(",") if v]  # noqa: E731
    cfg.l1_grid, cfg.pics_grid = floats(cfg.l1_grid), floats(cfg.pics_grid)
    cfg.wavelet_grid = floats(cfg.wavelet_grid)
    cfg.start_grid = floats(cfg.start_grid)
    if cfg.pics_anneal is not None:
        sigma, _, iters = cfg.pics_anneal.partition(":")
        try:
            cfg.pics_anneal = [float(sigma), int(iters)]
        except ValueError:
            p.error(f"--pics-anneal: expected SIGMA:ITERS (e.g. 0.1:25), "
                    f"got {cfg.pics_anneal!r}")
    cfg.patterns = [k for k in cfg.patterns.split(",") if k]
    for k in cfg.patterns:
        if k not in PATTERNS:
            p.error(f"--patterns: unknown pattern {k!r} (known: {', '.join(PATTERNS)})")
    for item in cfg.compare:
        if not all(item.partition("=")[::2]):
            p.error(f"--compare: expected NAME=PRIOR, got {item!r}")
    return cfg


def main(argv=None) -> int:
    cfg = parse(argv)
    if cfg.defaults_from:
        defaults_from(cfg.defaults_from, cfg.name, cfg.prior)
        return 0
    out = Path(cfg.out)
    run = Run(out, cfg.budget)
    pack_dir = Path(cfg.pack)
    if cfg.real is None and (pack_dir / "real" / "ksp.cfl").is_file():
        cfg.real = str(pack_dir / "real")
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if want_cuda else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    # (no CUDA context before build_data's worker processes are forked)
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "device": str(device),
           "cpu_cores": os.cpu_count(), "config": {k: v for k, v in vars(cfg).items()}}
    run.results["env"] = env
    run.log(f"bench/gpu/run.py on {device} (torch {env['torch']}, {env['cpu_cores']} cores), "
            f"budget {cfg.budget:.0f} s -> {out}")
    status = 0
    if cfg.prior:  # evaluation of an exported prior only (a second, shorter call)
        env["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        z = np.load(pack_dir / "pack.npz", allow_pickle=False)
        data = {"val": torch.from_numpy(z["val"]), "test": torch.from_numpy(z["test"]),
                "val_index": z["val_index"].tolist(), "test_index": z["test_index"].tolist()}
        net, meta = load_prior(cfg.prior, device=device)
        trained = {"net": net.float(), "meta": meta, "ema": None, "path": cfg.prior}
        run.results["data"] = {"shape": list(data["val"].shape[-2:]),
                               "val_slices": len(data["val"])}
        run.results["prior"] = {"path": cfg.prior, "training": meta.get("training")}
    else:
      init = init_from(cfg.init, network_config(cfg)) if cfg.init else None  # before the data
      try:
        data = build_data(pack_dir, device, cfg.seed, cfg.workers, run, cfg.phase_seconds)
        env["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        run.log(f"device: {env['gpu'] or 'CPU'}")
        run.results["data"] = data["stats"]
        run.save()
        trained = train_prior(data, cfg, device, run, init)
        run.results["training"] = trained["stats"]
        run.save()
        del data["x"]
        if device.type == "cuda":
            torch.cuda.empty_cache()
      except Exception:  # nothing to evaluate without a prior
        run.log("FAILED before a prior existed:\n" + traceback.format_exc())
        run.results["error"] = traceback.format_exc()
        run.save()
        return 1
    for stage, fn in (("evaluation", lambda: _no_grad(evaluate_priors, data, trained, cfg,
                                                      device, run)),
                      ("samples", lambda: save_samples(trained, device, run, cfg.samples,
                                                       cfg.sample_steps))):
        if stage == "samples" and cfg.samples < 1:
            continue
        if run.left() < 5 and stage == "samples":
            run.log("no time left for samples")
            continue
        try:
            fn()
        except Exception:  # a later stage failing must not cost the prior or earlier numbers
            run.log(f"{stage} FAILED:\n" + traceback.format_exc())
            run.results.setdefault("errors", {})[stage] = traceback.format_exc()
            status = 1
        run.save()
    run.results["finished_s"] = run.elapsed()
    run.save()
    summ = run.results.get("summary", {})
    for key, meths in summ.items():
        run.log(f"summary {key}: " + "; ".join(
            f"{m} {v['psnr']:.2f}+-{v['psnr_std']:.2f} dB (n={v['n']})" for m, v in meths.items()))
    run.log(f"done in {run.elapsed():.0f} s; files in {out}: "
            + ", ".join(sorted(p.name for p in out.iterdir())))
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:  # a bad prior, pack or --init: one line, no traceback
        sys.exit(f"bench/gpu/run.py: {e}")
