"""Export a trained prior for use outside mriprior.

``--format folder`` writes a publishable prior folder (``model.safetensors``, ``config.json``
without absolute paths, ``README.md`` model card), loadable by path, or by name once it sits in
the user prior directory (``$MRIPRIOR_PRIORS``, else ``~/.local/share/mriprior/priors``).
``--format torchscript`` writes a TorchScript denoiser in BART 1.0's convention:
``forward(x, sigma)`` with ``x`` complex64 ``(batch, y, x)`` and ``sigma`` complex64 ``(batch,)``,
returning ``D(x, sigma)`` (any batch, any size that is a multiple of the network's size multiple;
checked at export on a second shape). See mriprior.priors.deploy for the noise and intensity
conventions.

Examples:
  mriprior export bundled prior.pt
  mriprior export out/ve-cpu/prior ~/.local/share/mriprior/priors/my-prior --format folder
  mriprior export out/ve-cpu/prior prior.pt --device cuda       # for bart sample -g
  bart sample -r --external-graph prior.pt --dims 256:256:1:1:1:1:1:1:1:1:1:1:1:1:1:1 \\
      -N 50 -S 4 --posterior k=ksp,s=sens samples mmse      (BART 1.0 built with PyTorch)
"""

from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("prior", help="exported prior: NAME (NAME.safetensors + NAME.json), a path, "
                   "or 'bundled'")
    p.add_argument("output", help="output file (e.g. prior.pt)")
    p.add_argument("--format", choices=("torchscript", "folder"), default="torchscript",
                   help="torchscript (default: BART 1.0's denoiser) or folder (weights, "
                        "config.json, model card)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("Y", "X"),
                   help="image size used for tracing (default 64 64; any multiple of the "
                   "network's size multiple works afterwards)")
    p.add_argument("--device", default="cpu",
                   help="device to trace on = the device it will run on (default cpu)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the second-shape check against the Python model")


def run(args):
    from mriprior.cli._common import device
    from mriprior.priors.deploy import export_torchscript
    from mriprior.priors.export import export_folder

    if args.format == "folder":
        print(f"wrote {export_folder(args.prior, args.output)}")
        return

    info = export_torchscript(args.prior, args.output, size=args.size,
                              device=device(args.device), check=not args.no_check)
    print(json.dumps(info, indent=1))
