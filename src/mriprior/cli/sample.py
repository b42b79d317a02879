"""Draw samples from a trained prior and write a grid (magnitude; and phase for complex priors).

    mriprior sample --prior runs/ve-cpu/prior --n 16 --size 128 --out grid.png
    mriprior sample --prior P --sampler pc --steps 200 --save samples.npy --out grid.png

Samplers: ancestral (VE: SMLD / the anchors' Algorithm 1 with one step per level; VP: DDPM),
pc (predictor-corrector), langevin (annealed Langevin, 3 steps per level).

PixelCNN++ priors (sidecar "prior_type": "pixelcnn") are sampled ancestrally, pixel by pixel
(real then imaginary given real): H * W network calls, so keep --size small (default 32 for
them); --steps does not apply; --temperature T scales the logistic scales and divides the
mixture logits (1: the model itself).

    mriprior sample --prior runs/pixelcnn-cpu/prior --n 4 --size 32 --out grid.png
"""

from __future__ import annotations


import numpy as np

from mriprior.errors import InputError
from mriprior.io.files import atomic_write


def add_arguments(p):
    p.add_argument("--prior", required=True, help="PRIOR.safetensors (+ PRIOR.json sidecar)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--size", type=int, nargs="+", default=None,
                   help="H [W] (default 128; 32 for pixelcnn priors)")
    p.add_argument("--sampler", default="ancestral", choices=["ancestral", "pc", "langevin"])
    p.add_argument("--steps", type=int, default=100, help="noise levels (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0,
                   help="pixelcnn priors only: sampling temperature (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--save", help="also save the samples (n, C, H, W) as .npy")
    p.add_argument("--out", required=True, help="PNG grid")


def run(args):
    from tqdm import tqdm

    from mriprior.cli._common import check_at_least_one, check_output, device

    from mriprior.priors.export import load_prior, prior_kind
    from mriprior.priors.sampling import sample_prior

    check_at_least_one(**{"--n": args.n, "--steps": args.steps})
    if args.size is not None and min(args.size) < 1:
        raise InputError(f"--size {' '.join(map(str, args.size))}: sizes must be >= 1")
    if not args.temperature > 0:
        raise InputError(f"--temperature {args.temperature}: must be > 0")
    dev = device(args.device)
    net, meta = load_prior(args.prior, device=dev)
    pixelcnn = prior_kind(meta) == "pixelcnn"
    size_arg = args.size if args.size is not None else [32 if pixelcnn else 128]
    if len(size_arg) not in (1, 2):
        raise InputError("--size takes H or H W")
    size = (size_arg[0], size_arg[-1])
    bar = tqdm(desc="sampling", unit="row" if pixelcnn else "step", leave=False, disable=None,
               total=size[0] if pixelcnn else None)
    x = sample_prior(net, meta, n=args.n, size=size, sampler=args.sampler, steps=args.steps,
                     seed=args.seed, device=dev, callback=lambda _: bar.update(),
                     temperature=args.temperature)
    bar.close()
    check_output(x, "sample")
    x = x.cpu().numpy()
    if args.save:
        save = args.save if args.save.endswith(".npy") else args.save + ".npy"  # as np.save
        atomic_write(save, lambda t: np.save(t, x))
    _grid(args.out, x)
    how = (f"pixelcnn ancestral, temperature {args.temperature:g}" if pixelcnn else
           f"{args.sampler}, {args.steps} levels")
    print(f"wrote {args.out} ({args.n} samples, {size[0]} x {size[1]}, {how})")


def _grid(path, x):
    from mriprior.experiments.report import save_figure
    import matplotlib.pyplot as plt

    n = x.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    complex_ = x.shape[1] == 2
    mag = np.hypot(x[:, 0], x[:, 1]) if complex_ else np.abs(x[:, 0])
    panels = [("magnitude", mag, "gray")] + ([("phase", np.arctan2(x[:, 1], x[:, 0]), "twilight")]
                                              if complex_ else [])
    fig, axes = plt.subplots(rows, cols * len(panels), figsize=(1.6 * cols * len(panels),
                                                                1.6 * rows), squeeze=False)
    for a in axes.ravel():
        a.axis("off")
    for k in range(n):
        r, c = divmod(k, cols)
        for j, (_, img, cmap) in enumerate(panels):
            kw = {"vmin": -np.pi, "vmax": np.pi} if cmap == "twilight" else \
                {"vmin": 0, "vmax": float(np.percentile(mag, 99.5)) or 1.0}
            axes[r, j * cols + c].imshow(img[k], cmap=cmap, **kw)
    fig.suptitle(" | ".join(t for t, _, _ in panels), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
