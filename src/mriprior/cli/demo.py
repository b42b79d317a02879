"""Run the built-in demo: a simulated undersampled 8-coil acquisition (made on the fly, no files
needed) reconstructed by zero-filling, CG-SENSE, l1-wavelet and TV; writes demo.png, results.json
and BART cfl files (ksp, sens, reference, reconstructions) to --out.
"""

from __future__ import annotations

from mriprior.cli._common import device


def add_arguments(p):
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--size", type=int, default=256, help="matrix size (default 256)")
    p.add_argument("--accel", type=float, default=6.0, help="target acceleration (default 6)")
    p.add_argument("--iterations", type=int, default=100, help="PICS iterations (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")


def run(args):
    from mriprior.errors import InputError
    from mriprior.experiments.classical_demo import DemoConfig, run_demo
    if args.size < 32 or args.size > 2048:
        raise InputError(f"--size {args.size}: use 32..2048")
    if args.iterations < 1:
        raise InputError(f"--iterations {args.iterations}: must be >= 1")
    cfg = DemoConfig(size=args.size, accel=args.accel, iterations=args.iterations, seed=args.seed)
    run_demo(args.out, cfg, device=device(args.device))
