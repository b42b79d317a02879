"""Give every slice of a magnitude dataset a phase: a complex dataset the priors train on.

    mriprior augment --method smooth --in data/clinical256 --out data/clinical256-smooth
    mriprior augment --method langevin --prior runs/ve-cpu/prior --samples 5 \
        --in data/clinical256 --out data/clinical256-langevin
    torchrun --nproc_per_node 4 -m mriprior.cli.main augment --method langevin ... --device cuda

Methods: langevin (posterior sampling with an unconditional complex prior and a magnitude
likelihood, the first founding study: 10 levels x 50 steps, eta 0.15), conditional (a score model
of the complex image given its magnitude, trained with `model.cond_channels: 1`; predictor-
corrector, 200 levels), gan (a pix2pix generator trained with a `gan: true` config), smooth
(low-order polynomial + low-pass random-field phase), zero. The output keeps each measured magnitude.

The job works in chunks of --chunk input slices written to OUT.parts/ as they finish; killed at
any moment, the same command resumes it (finished chunks are kept) and finally assembles OUT
(atomically) and removes OUT.parts. Under torchrun, rank r does chunks r, r + world, ...; rank
0 waits for the others and assembles. Each output slice records its method, sample number,
source slice, seed and prior hash (manifest "augment").
"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--method", required=True,
                   choices=("langevin", "conditional", "gan", "smooth", "zero"))
    p.add_argument("--prior", default=None,
                   help="langevin: a complex prior; conditional: a conditional model; gan: a "
                        "phase GAN generator")
    p.add_argument("--in", dest="src", required=True, metavar="MAG_DATASET")
    p.add_argument("--out", required=True, metavar="COMPLEX_DATASET")
    p.add_argument("--samples", type=int, default=1,
                   help="phase samples per magnitude slice (default 1; the study used 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", type=int, default=None,
                   help="noise levels (default: langevin 10, conditional 200)")
    p.add_argument("--steps", type=int, default=50, help="langevin: steps per level (default 50)")
    p.add_argument("--eta", type=float, default=0.15,
                   help="langevin: magnitude-likelihood step (default 0.15)")
    p.add_argument("--snr", type=float, default=0.16,
                   help="conditional: predictor-corrector signal-to-noise ratio (default 0.16)")
    p.add_argument("--chunk", type=int, default=16, help="input slices per chunk (default 16)")
    p.add_argument("--batch", type=int, default=None,
                   help="images per network call (default: 8 on a GPU, 2 on the CPU, near the "
                        "CPU optimum at 128 and 256 pixels: bench/score_batch.py); the "
                        "samplers' noise is drawn per batch, so a resumed job keeps its batch")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto; under torchrun "
                   "'cuda' means the rank's local GPU")
    p.add_argument("--force", action="store_true", help="replace an existing --out dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _device(name: str):
    """--device, checked; under torchrun plain ``cuda`` means this rank's GPU (LOCAL_RANK)."""
    import torch

    from mriprior.cli._common import device
    from mriprior.launch import launch_env

    dev = device(name)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", launch_env().local_rank % torch.cuda.device_count())
    return dev


def run(args) -> int:
    import sys

    from mriprior.augment.job import AugmentSettings, augment_dataset
    from mriprior.cli._common import check_at_least_one, progress_bar
    from mriprior.launch import launch_env

    settings = AugmentSettings(method=args.method, samples=args.samples, seed=args.seed,
                               chunk=args.chunk, prior=args.prior,
                               langevin={"n_levels": args.levels or 10, "steps": args.steps,
                                         "eta": args.eta},
                               conditional={"n_levels": args.levels or 200, "snr": args.snr})
    rank = launch_env().rank
    progress = progress_bar(f"augment (rank {rank})", "chunk", args.quiet, leave=True)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))  # noqa: E731
    dev = _device(args.device)
    batch = args.batch if args.batch is not None else (8 if dev.type == "cuda" else 2)
    check_at_least_one(**{"--batch": batch})
    s = augment_dataset(args.src, args.out, settings, batch=batch, device=dev,
                        overwrite=args.force, progress=progress, log=log)
    progress.close()
    if "images_per_s" in s and not args.quiet:
        print(f"rank {rank}: {s['chunks_done']} chunks, {s['images_per_s']:.2f} images/s",
              file=sys.stderr)
    return 0
