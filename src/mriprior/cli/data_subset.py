"""Write a random subset of a dataset as a new dataset (to size an experiment to a budget).

    mriprior data subset --in data/clinical256 --out data/clinical256-n1024 --n 1024
    mriprior data subset --in data/open128-complex --out data/open128-complex-n512 --n 512 \\
        --splits train --keep val,test     # 512 training slices, the same val / test sets

Slices keep their split; the pick is a seeded permutation (the same --seed with a larger --n
gives a superset). Each record gains "subset_of" (its index in the source); the manifest's
options.subset records the source, n, splits, kept splits and seed (mriprior.data.subset).
"""

from __future__ import annotations

from mriprior.data.dataset import SPLITS


def add_arguments(p):
    p.add_argument("--in", dest="src", required=True, metavar="DATASET", help="source dataset")
    p.add_argument("--out", required=True, metavar="DATASET", help="folder to create")
    p.add_argument("--n", type=int, required=True, help="number of slices to keep")
    p.add_argument("--splits", default=",".join(SPLITS), metavar="LIST",
                   help="draw only from these splits (default train,val,test)")
    p.add_argument("--keep", default="", metavar="LIST",
                   help="splits copied whole besides the draw, e.g. val (default none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pick (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing --out dataset")


def run(args):
    from mriprior.data.subset import subset_dataset

    splits = tuple(s for s in args.splits.split(",") if s)
    keep = tuple(s for s in args.keep.split(",") if s)
    r = subset_dataset(args.src, args.out, args.n, splits, args.seed, keep=keep,
                       overwrite=args.force)
    print(f"{r['out']}: {r['count']} slices (" +
          ", ".join(f"{k} {v}" for k, v in r["splits"].items()) + ")")
