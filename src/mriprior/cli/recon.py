"""Reconstruction of BART cfl files with a trained generative prior.

    mriprior recon --prior PRIOR KSP SENS OUT                    # fast sampler, 8 chains, 30 NFE
    mriprior recon --prior PRIOR --method langevin --chains 10 --std STD KSP SENS OUT
    mriprior recon --prior PRIOR --method pics --lam 0.5 -i 50 KSP SENS OUT

Methods: ``fast`` (DDS-style posterior sampler, --nfe network evaluations per chain),
``langevin`` (the founding paper's annealed-Langevin Algorithm 1: --levels, --skip, --steps,
--lam; with --noise-var the exact-likelihood variant), ``pics`` (FISTA with the prior as
regulariser, --lam, -i, --wavelet, --flips; --anneal-sigma / --anneal-iters: the denoiser level
lowered to --reg-sigma over the first iterations). See :mod:`mriprior.recon.posterior`.

KSP: BART dims x y z coils (one 2D slice); SENS: x y z coils maps (e.g. ``bart ecalib -m1``).
OUT: the MMSE image (``pics``: the regularised image), BART dims x y z 1 maps, in the data's
units (scaling KSP by c scales OUT by c). --std / --var write the pixelwise standard deviation /
complex variance over chains, --samples all chains (chains along BART dim 5), --flag the
credibility map (1 where the 90 % interval radius exceeds --rel x |MMSE| inside the object;
the radius of the chains' mean, widened for the number of chains: interval_radius). Where the
prior's sidecar holds an uncertainty calibration measured with the run's sampler settings
(mriprior.recon.calibration: the std pooled locally and scaled to cover its level on
validation slices), --std / --var / --flag are the calibrated ones (the MMSE's error std);
--raw-std keeps the chains' own.
PRIOR is NAME.safetensors + NAME.json (``mriprior train``), given as either file or NAME.

Defaults: an option not given takes the value the prior's sidecar records under
``recon_defaults`` (tuned on validation slices, e.g. by ``bench/gpu/run.py``; for line (1D)
sampling patterns those tuned on 1D sampling where the sidecar has them), else the built-in
default shown in ``--help``; the values used and the pattern kind are printed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl

METHODS = ("fast", "langevin", "pics")


# per method: the command-line options it takes -> the keyword of its library function
def add_arguments(p):
    p.add_argument("--prior", required=True, help="exported prior (NAME.safetensors + NAME.json)")
    p.add_argument("--method", choices=METHODS, default="fast",
                   help="default: fast. Options left out take the prior's tuned recon_defaults, "
                        "else the library function's defaults (mriprior.recon.posterior."
                        "method_defaults); the values used are printed")
    p.add_argument("--chains", type=int, help="posterior chains per slice")
    p.add_argument("--nfe", type=int, help="fast: network evaluations per chain")
    p.add_argument("--sigma-start", type=float,
                   help="fast: noise level of the start (default: the prior's sigma_max)")
    p.add_argument("--eta", type=float, help="fast: share of fresh noise per step")
    p.add_argument("--cg", type=int, help="fast: CG iterations per level")
    p.add_argument("--draws", action="store_true", default=None,
                   help="fast: every step draws from its data step's posterior (calibrated "
                        "--std / --flag; the MMSE of few chains is a little noisier)")
    p.add_argument("--flips", action=argparse.BooleanOptionalAction, default=None,
                   help="fast, pics: average the prior's score over the four image-axis flips "
                        "(4 x the network evaluations; the prior's recon_defaults say whether "
                        "it paid off on validation)")
    p.add_argument("--levels", type=int, help="langevin: noise levels N")
    p.add_argument("--skip", type=int, help="langevin: first levels skipped")
    p.add_argument("--steps", type=int, help="langevin: steps per level")
    p.add_argument("--lam", type=float,
                   help="langevin: data-consistency weight; pics: regularisation weight")
    p.add_argument("--wavelet", type=float,
                   help="pics: weight of an l1-wavelet term beside the prior (BART's second "
                        "-R W:7:0:W; in prior PICS's data scaling)")
    p.add_argument("--noise-var", metavar="V|auto|none",
                   help="k-space noise variance per component, in KSP's units, or 'auto' "
                        "(estimated from the outermost sampled k-space) or 'none'. fast: the "
                        "data step weighs the data against the denoised image by it (none = "
                        "plain CG; the default for fast is auto); langevin: the exact-likelihood "
                        "variant")
    p.add_argument("-i", dest="iters", type=int, help="pics: iterations")
    p.add_argument("--anneal-sigma", type=float,
                   help="pics: start the regulariser's denoiser level here and lower it "
                        "geometrically to --reg-sigma over --anneal-iters iterations")
    p.add_argument("--anneal-iters", type=int, help="pics: iterations of that annealing")
    p.add_argument("--reg-sigma", type=float, default=None,
                   help="pics: noise level of the denoiser in the regulariser (diffusion priors)")
    p.add_argument("--scaling", default="cg",
                   help="cg (default), adjoint, or a number the data are divided by")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-support", dest="support", action="store_false",
                   help="do not zero the image where every coil map is 0 (default: zero it)")
    p.add_argument("-p", dest="pattern", help="sampling pattern file (default: nonzero k-space)")
    p.add_argument("--std", help="write the standard deviation map here")
    p.add_argument("--var", help="write the complex variance map here")
    p.add_argument("--samples", help="write every chain's sample here")
    p.add_argument("--flag", help="write the credibility (hallucination) map here")
    p.add_argument("--rel", type=float, default=0.2, help="--flag threshold (default 0.2)")
    p.add_argument("--raw-std", action="store_true",
                   help="write the chains' own std / var / flag even where the prior's sidecar "
                        "holds an uncertainty calibration for these settings")
    p.add_argument("--batch", type=int, default=None,
                   help="max images per network call (memory); default: all chains at once")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("files", nargs="+", metavar="KSP SENS OUT | VOLUME.h5 OUT",
                   help="BART k-space, maps and output; or a fastMRI HDF5 volume and an output "
                        "(.h5: fastMRI-style 'reconstruction'; else cfl, slices in dim 13)")


def resolve(args, prior) -> dict:
    """The settings of ``args.method`` as library keywords: command line, else the prior's
    ``recon_defaults`` (those for ``args.pattern_kind``, "1d" or "2d"), else the library's
    (:func:`mriprior.recon.posterior.method_defaults`); every number checked."""
    from mriprior.recon.posterior import OPTIONS, tuned_options

    out = tuned_options(args.method, prior, getattr(args, "pattern_kind", "2d"))
    others = {o for m in OPTIONS for o in OPTIONS[m]} - set(OPTIONS[args.method])
    given = sorted(o for o in others if getattr(args, o, None) is not None)
    if given:  # e.g. --flips with langevin: refused rather than silently ignored
        raise InputError(f"{_flag(given[0])}: not an option of --method {args.method} (its "
                         f"options: {', '.join(map(_flag, OPTIONS[args.method]))})")
    for option, key in OPTIONS[args.method].items():
        if getattr(args, option) is not None:
            out[key] = getattr(args, option)
    if "noise_var" in out:  # a property of the data, never of the prior: not in sidecars
        v = out["noise_var"]
        out["noise_var"] = None if v in (None, "none") else _word_or_positive("--noise-var", v,
                                                                               "auto", "none")
    flag = {key: _flag(option) for option, key in OPTIONS[args.method].items()}
    for key in ("chains", "nfe", "max_iter", "n_levels", "steps", "anneal_iters"):
        if key in out and not (isinstance(out[key], int) and out[key] >= 1):
            raise InputError(f"{flag[key]} must be an integer >= 1, got {out[key]!r}")
    for key in ("lam", "wavelet"):
        if out.get(key) is not None and not out[key] >= 0:
            raise InputError(f"--{key} must be >= 0, got {out[key]!r}")
    for key in ("sigma_start", "anneal_sigma"):
        if out.get(key) is not None and not out[key] > 0:
            raise InputError(f"{flag[key]} must be > 0, got {out[key]!r}")
    if getattr(args, "anneal_iters", None) is not None and out.get("anneal_sigma") is None:
        raise InputError("--anneal-iters needs --anneal-sigma (the prior's recon_defaults set "
                         "none for this pattern kind)")
    if getattr(args, "flag", None) and out.get("chains", 2) < 2:
        raise InputError(f"--flag needs an interval from at least 2 chains, got --chains "
                         f"{out['chains']}")
    return out


def _flag(option: str) -> str:
    """The command-line spelling of an option's ``args`` name: ``sigma_start`` ->
    ``--sigma-start``, ``iters`` -> ``-i``."""
    return "-i" if option == "iters" else "--" + option.replace("_", "-")


def _word_or_positive(flag: str, value, *words):
    """``value`` if it is one of ``words``, else a finite number > 0 (InputError naming
    ``flag`` otherwise): --scaling, --noise-var."""
    if value in words:
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = np.nan
    if not (v > 0 and np.isfinite(v)):
        raise InputError(f"{flag} {value!r}: use {', '.join(words)} or a positive number")
    return v


def _reconstruct(args, opts, ksp, maps, mask, prior, scaling, progress):
    """The chosen method with the resolved settings: ``(x, std, var, samples, scale)`` (the
    last four but ``scale`` are None for pics)."""
    from mriprior.recon.posterior import METHODS as FUNCTIONS

    common = dict(mask=mask, scaling=scaling, callback=progress, support=args.support)
    if args.method == "pics":
        x, scale = FUNCTIONS["pics"](ksp, maps, prior, **opts, **common)
        return x, None, None, None, scale
    r = FUNCTIONS[args.method](ksp, maps, prior, **opts, **common, seed=args.seed,
                               keep_samples=args.samples is not None)
    return r.mmse, r.std, r.var, r.samples, r.scale


def _calibrated(args, prior, opts, std, var):
    """``(std, var, chains)`` for the outputs: the calibrated error std (and ``chains`` None:
    a known-variance interval) where the sidecar has a calibration for these settings."""
    from mriprior.recon.calibration import calibrated_std, calibration_for

    cal = None if args.raw_std else calibration_for(prior, args.method, opts, args.pattern_kind)
    if cal is None:
        if (prior.recon_defaults.get(args.method) or {}).get("calibration") and not args.raw_std:
            print("mriprior recon: note: the prior's uncertainty calibration was measured with "
                  "other sampler settings; --std / --flag are the chains' own", file=sys.stderr)
        return std, var, opts["chains"]
    std = calibrated_std(std, cal)
    if any([args.std, args.var, args.flag]):
        print(f"mriprior recon: --std / --var / --flag calibrated (pool {cal.get('pool', 1)}, "
              f"scale {cal['scale']:.3g}; {cal.get('measured_on', '?')})", file=sys.stderr)
    return std, std.square(), None


def _run_volume(args, dev):
    """Every slice of a fastMRI volume (mriprior.recon.volume): fast or langevin."""
    from mriprior.cli._common import progress_bar
    from mriprior.recon.priors import load_image_prior
    from mriprior.recon.volume import reconstruct_volume

    if args.method == "pics":
        raise InputError(f"{args.kspace}: volumes are reconstructed with --method fast or "
                         "langevin (prior PICS works on cfl slices)")
    if any([args.std, args.var, args.samples, args.flag, args.pattern]):
        raise InputError("--std/--var/--samples/--flag/-p apply to cfl slices; a volume's .h5 "
                         "output holds 'std' itself (cfl output: OUT_std)")
    reconstruct_volume(args.kspace, args.output, args.method, prior=args.prior,
                       options=resolve(args, load_image_prior(args.prior)), seed=args.seed,
                       device=dev,
                       progress=progress_bar("volume", "slice", args.quiet),
                       log=lambda m: print(m, file=sys.stderr))


def run(args):
    from mriprior.cli._common import (check_output, device, load_problem, progress_bar,
                                      run_slices, split_files)

    import torch

    from mriprior.physics.masks import pattern_kind
    from mriprior.recon.classical import estimate_pattern
    from mriprior.recon.posterior import credibility_map
    from mriprior.recon.priors import load_image_prior

    kind = split_files(args, "recon")
    if kind == "slices":  # slices in BART dim 13: one at a time
        return run_slices(args, run, "recon", ("kspace", "sens", "pattern"),
                          ("output", "std", "var", "samples", "flag"))
    dev = device(args.device)
    scaling = _word_or_positive("--scaling", args.scaling, "cg", "adjoint")
    if kind == "volume":
        return _run_volume(args, dev)
    ksp, maps, mask, layout = load_problem(args, dev)
    if not maps.shape[1] > 1:
        maps = maps[:, 0]  # one set of maps: image (1, y, x)
    prior = load_image_prior(args.prior, device=dev, reg_sigma=args.reg_sigma,
                             max_batch=args.batch)
    if args.method != "pics" and prior.sigma_max is None:
        raise InputError(f"{args.prior}: --method {args.method} needs a diffusion prior; use "
                         "--method pics for explicit-likelihood priors")
    if args.batch is not None and args.batch < 1:
        raise InputError(f"--batch must be >= 1, got {args.batch}")
    args.pattern_kind = pattern_kind(mask if mask is not None else estimate_pattern(ksp))
    opts = resolve(args, prior)
    progress = progress_bar(f"recon ({args.method})", "step", args.quiet, leave=True)
    with torch.no_grad():
        x, std, var, samples, scale = _reconstruct(args, opts, ksp, maps, mask, prior, scaling,
                                                   progress)
    progress.close()
    shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in opts.items() if v is not None
                      and not (k == "anneal_iters" and opts.get("anneal_sigma") is None))
    print(f"mriprior recon: {args.method} ({shown}), {args.pattern_kind.upper()} pattern, "
          f"data scale {float(scale[0]):g}, "
          f"{prior.nfe} network evaluations", file=sys.stderr)
    if args.method == "pics" and any([args.std, args.var, args.samples, args.flag]):
        print("mriprior recon: note: --std/--var/--samples/--flag need a sampling method; not "
              "written", file=sys.stderr)
    cmd = "mriprior recon " + " ".join(sys.argv[2:])

    multi = maps.ndim == 5

    def write(path, img):  # img (1, [chains,] [maps,] y, x) -> BART x y z 1 maps [chains]
        a = img[0].cpu().numpy().astype(np.complex64)
        if not multi:
            a = a[..., None, :, :]  # maps dim of size 1
        a = a[..., None, :, :]  # coil dim of size 1
        write_cfl(path, layout.to_bart(np.ascontiguousarray(a)), command=cmd)

    check_output(x, "reconstruction")
    if std is not None:
        check_output(std, "standard deviation")
    write(args.output, x)
    if std is not None:
        std, var, chains = _calibrated(args, prior, opts, std, var)
        flagged = credibility_map(x, std, rel=args.rel, chains=chains)[1] \
            if args.flag else None
        for path, img in ((args.std, std), (args.var, var), (args.samples, samples),
                          (args.flag, flagged)):
            if path:
                write(path, img.to(x.dtype))
