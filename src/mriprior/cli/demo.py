"""Run the built-in demo on the embedded default (no files needed, nothing downloaded).

Default: a bundled undersampled 8-coil case (a held-out open-corpus slice with simulated phase,
Poisson-disc R ~ 8) reconstructed zero-filled, with l1-wavelet PICS and with the bundled
diffusion prior (fast posterior sampler: MMSE and standard deviation over --chains chains,
--nfe network evaluations each, starting level and NFE as the prior's tuned recon_defaults;
the std calibrated where the prior has a calibration for these settings; and prior PICS with
its tuned lambda and l1-wavelet term). Writes demo.png (reference | zero-filled | l1-wavelet |
prior MMSE | prior PICS | std, PSNR / SSIM on each), results.json and BART cfl files (ksp,
sens, reference, zero_filled, l1_wavelet, mmse, prior_pics, std, flag) to --out.

--classical runs the classical demo instead (analytic Shepp-Logan k-space, zero-filled,
CG-SENSE, l1-wavelet, TV; --size, --accel, --iterations apply to it).
--case / --prior reconstruct another case (.npz, see mriprior.experiments.prior_demo) or
prior (NAME.safetensors + NAME.json).
"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--chains", type=int, default=4, help="posterior chains (default 4)")
    p.add_argument("--nfe", type=int, default=None,
                   help="network evaluations per chain (default: the prior's tuned value, else 30)")
    p.add_argument("--case", default=None, help="demo case .npz (default: the bundled one)")
    p.add_argument("--prior", default=None, help="prior (default: the bundled one)")
    p.add_argument("--classical", action="store_true", help="run the classical demo instead")
    p.add_argument("--size", type=int, default=256, help="classical: matrix size (default 256)")
    p.add_argument("--accel", type=float, default=6.0,
                   help="classical: target acceleration (default 6)")
    p.add_argument("--iterations", type=int, default=100,
                   help="classical: PICS iterations (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")


def run(args):
    from mriprior.cli._common import check_at_least_one, device
    from mriprior.errors import InputError

    if args.classical:
        from mriprior.experiments.classical_demo import DemoConfig, run_demo
        if args.size < 32 or args.size > 2048:
            raise InputError(f"--size {args.size}: use 32..2048")
        check_at_least_one(**{"--iterations": args.iterations})
        cfg = DemoConfig(size=args.size, accel=args.accel, iterations=args.iterations,
                         seed=args.seed)
        run_demo(args.out, cfg, device=device(args.device))
        return
    from mriprior.experiments.prior_demo import DEFAULT_CASE, DEFAULT_PRIOR, run_prior_demo
    check_at_least_one(**{"--chains": args.chains, "--nfe": args.nfe})
    run_prior_demo(args.out, case=args.case or DEFAULT_CASE, prior=args.prior or DEFAULT_PRIOR,
                   chains=args.chains, nfe=args.nfe, seed=args.seed, device=device(args.device))
