"""Parallel-imaging compressed-sensing reconstruction of BART cfl files (BART ``pics``).

    mriprior pics -l1 -r 0.005 -i 100 KSP SENS OUT       # l1-wavelet (FISTA)
    mriprior pics -l2 -r 0.01 KSP SENS OUT               # Tikhonov (CG)
    mriprior pics --tv -r 0.005 KSP SENS OUT             # isotropic TV (ADMM)
    mriprior pics -R W:7:0:0.005 KSP SENS OUT            # BART's generalised syntax

Flags mean what BART 0.8's mean, including its automatic data scaling (the output stays in the
scaled units unless -S) and its random wavelet cycle spinning (same shift sequence as BART).
KSP: BART dims x y z coils (one 2D slice: two of x, y, z > 1); SENS: x y z coils maps.
OUT: x y z 1 maps. For even matrix sizes the result equals BART's within float rounding; for odd
sizes BART's pics uses a slightly different FFT centring phase, so images differ by a phase.
"""

from __future__ import annotations

import argparse
import math
import sys

from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl, write_cfl


def add_arguments(p):
    p.add_argument("-l", dest="l", choices=["1", "2"], help="-l1: l1-wavelet, -l2: l2 (Tikhonov)")
    p.add_argument("--l1", dest="reg", action="store_const", const="l1", help="l1-wavelet")
    p.add_argument("--l2", dest="reg", action="store_const", const="l2", help="l2 (Tikhonov)")
    p.add_argument("--tv", dest="reg", action="store_const", const="tv", help="total variation")
    p.add_argument("-R", dest="R", metavar="T:A:B:C",
                   help="generalised regulariser: W:7:0:lambda (wavelet), Q:lambda (l2), "
                        "T:7:0:lambda (TV)")
    p.add_argument("-r", dest="lam", type=float, default=0.0, help="regularisation lambda")
    p.add_argument("-i", dest="iters", type=int, default=30, help="iterations (default 30)")
    p.add_argument("-s", dest="step", type=float, default=0.95, help="FISTA step size")
    p.add_argument("-e", dest="eigen", action="store_true",
                   help="scale the step by the maximum eigenvalue of A^H A")
    p.add_argument("-n", dest="no_shift", action="store_true",
                   help="disable random wavelet cycle spinning")
    p.add_argument("-w", dest="scaling", type=float, default=None,
                   help="inverse scaling of the data (default: automatic, as BART)")
    p.add_argument("-S", dest="rescale", action="store_true",
                   help="re-scale the image to the data's units after reconstruction")
    p.add_argument("-p", dest="pattern", help="sampling pattern / weights file")
    p.add_argument("-W", dest="warm", help="warm start image file")
    p.add_argument("-u", dest="rho", type=float, default=0.5, help="ADMM rho (TV)")
    p.add_argument("-C", dest="cg_iter", type=int, default=10, help="ADMM inner CG iterations")
    p.add_argument("--tol", type=float, default=0.0,
                   help="stop early when the relative change falls below this (0: never)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("-g", dest="gpu", action="store_true", help="use the GPU (= --device cuda)")
    p.add_argument("-d", dest="debug_level", type=int, default=None, metavar="LEVEL",
                   help="BART's debug level (accepted; mriprior prints its notes always)")
    p.add_argument("-m", dest="admm", action="store_true",
                   help="ADMM (BART): what --tv uses; refused for l1 / l2")
    for flag, (takes_value, _) in UNSUPPORTED.items():  # accepted, then refused by name
        p.add_argument(flag, dest="unsupported_" + flag.strip("-"), help=argparse.SUPPRESS,
                       **({} if takes_value else {"action": "store_true"}))
    p.add_argument("files", nargs="+", metavar="KSP SENS OUT | VOLUME.h5 OUT",
                   help="BART k-space, maps and output; or a fastMRI HDF5 volume and an output "
                        "(.h5: fastMRI-style 'reconstruction'; else cfl, slices in dim 13)")


# BART pics flags mriprior does not implement: flag -> (takes a value, what to do instead)
UNSUPPORTED = {
    "-L": (True, "batch mode is not supported: extract slices with `mriprior slice DIM POS` "
                 "and reconstruct each"),
    "-t": (True, "non-Cartesian trajectories are not supported: grid the data first"),
    "-c": (False, "the real-value constraint is not supported"),
    "-b": (True, "locally low-rank regularisation is not supported: use -l1 or --tv"),
    "-N": (False, "locally low-rank regularisation is not supported: use -l1 or --tv"),
    "-B": (True, "subspace (basis) reconstruction is not supported"),
    "-P": (True, "the basis-pursuit form is not supported: use -r lambda"),
    "-M": (False, "simultaneous multi-slice is not supported"),
    "-I": (False, "IST is not offered: FISTA (the default) converges to the same image"),
    "-a": (False, "the primal-dual solver is not offered: use the default solver"),
    "-f": (True, "restricting the FOV is not supported"),
    "-U": (False, "the low-memory nuFFT is not needed for Cartesian data: drop -U"),
}


def _check_bart_flags(args, reg):
    for flag, (_, instead) in UNSUPPORTED.items():
        if getattr(args, "unsupported_" + flag.strip("-")):
            raise InputError(f"{flag} (BART pics): {instead}")
    if args.admm and reg in ("l1", "l2"):
        raise InputError("-m (ADMM): mriprior uses ADMM for TV only; for l1 / l2 drop -m "
                         "(FISTA / CG, BART's defaults, reach the same minimiser)")
    if args.debug_level is not None and not 0 <= args.debug_level <= 9:
        raise InputError(f"-d {args.debug_level}: debug level must be 0..9")
    if args.gpu:
        if args.device not in ("cpu", "cuda", "auto"):
            raise InputError(f"-g with --device {args.device}: give one of them")
        args.device = "cuda"


def _regulariser(args):
    reg, lam = args.reg, args.lam
    if args.l is not None:
        reg = "l1" if args.l == "1" else "l2"
    if args.R is not None:
        parts = args.R.split(":")
        try:
            kind = parts[0]
            if kind == "Q" and len(parts) == 2:
                return "l2", float(parts[1])
            if kind in ("W", "T") and len(parts) == 4:
                if int(parts[2]) != 0:
                    raise InputError(f"-R {args.R}: joint thresholding flags are not supported")
                return ("l1" if kind == "W" else "tv"), float(parts[3])
        except ValueError:
            pass
        raise InputError(f"-R {args.R}: supported forms are W:A:0:lambda, T:A:0:lambda, Q:lambda")
    if reg is None:
        reg = "l2" if lam > 0 else None  # BART: no regulariser -> plain CG (lambda unused)
    return reg, lam


def run(args):
    import torch
    from mriprior.cli._common import (check_output, device, load_problem, progress_bar,
                                      run_slices, split_files)
    from mriprior.recon.classical import bart_pics_phase, pics

    kind = split_files(args, "pics")
    if kind == "slices":  # slices in BART dim 13: one at a time
        return run_slices(args, run, "pics", ("kspace", "sens", "pattern", "warm"),
                          ("output",))
    if args.iters < 0:
        raise InputError(f"-i {args.iters}: the number of iterations must be >= 0")
    for flag, value, ok in (("-r", args.lam, args.lam >= 0), ("-s", args.step, args.step > 0),
                            ("-w", args.scaling, args.scaling is None or args.scaling > 0),
                            ("-u", args.rho, args.rho > 0)):
        if not (ok and math.isfinite(value if value is not None else 0.0)):
            raise InputError(f"{flag} {value}: must be a finite number "
                             f"{'>= 0' if flag == '-r' else '> 0'}")
    reg, lam = _regulariser(args)
    _check_bart_flags(args, reg)
    dev = device(args.device)
    if kind == "volume":
        from mriprior.recon.volume import reconstruct_volume

        if reg != "l1" or any([args.pattern, args.warm, args.scaling]):
            raise InputError(f"{args.kspace}: a volume is reconstructed with l1-wavelet only "
                             "(-l1 -r LAMBDA -i ITERS), its own pattern and BART's scaling")
        reconstruct_volume(args.kspace, args.output, "pics",
                           options={"lam": lam, "max_iter": args.iters},
                           device=dev, progress=progress_bar("volume", "slice"),
                           log=lambda m: print(m, file=sys.stderr))
        return
    ksp, maps, mask, layout = load_problem(args, dev)
    x0 = None
    if args.warm:
        w = torch.from_numpy(layout.to_torch(read_cfl(args.warm), name=args.warm))
        x0 = w.reshape(1, maps.shape[1], *w.shape[-2:]).to(dev)
    x, scale = pics(ksp, maps, reg=reg, lam=lam, max_iter=args.iters, mask=mask, step=args.step,
                    eigen=args.eigen, scaling="bart" if args.scaling is None else args.scaling,
                    x_is_read=(layout.x_dim == 0), rescale=args.rescale,
                    wavelet_shift="none" if args.no_shift else "bart", x0=x0, tol=args.tol,
                    admm_rho=args.rho, admm_cg_iter=args.cg_iter)
    phase, exact = bart_pics_phase(x.shape[-2:])
    if not exact:
        print("mriprior pics: note: odd matrix size; BART's pics applies a different FFT centring "
              "phase there, so its image differs from this one by a phase", file=sys.stderr)
    x = x * phase
    check_output(x, "image")
    out = x[0].cpu().numpy()  # (maps, y, x)
    bart = layout.to_bart(out[:, None])  # (x, y, 1 coil, maps) with the third spatial dim
    write_cfl(args.output, bart, command="mriprior pics " + " ".join(sys.argv[2:]))
    print(f"Inverse scaling of the data: {float(scale[0]):g}", file=sys.stderr)
