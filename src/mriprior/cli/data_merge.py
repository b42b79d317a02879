"""Write the union of several datasets of one kind and shape as a new dataset.

    mriprior data merge --in data/open256-complex --in data/clinical256-smooth \\
        --out data/open-clinical256 --splits train

Slices keep their split and come source by source in the order given; --splits limits what each
source contributes (e.g. train only: the merged validation and test sets stay empty, or name
them). Each record gains "merged_from" ([source number, index in it]); the manifest's
options.merge lists the sources with their manifest hashes (mriprior.data.subset).
"""

from __future__ import annotations

from mriprior.data.dataset import SPLITS


def add_arguments(p):
    p.add_argument("--in", dest="src", action="append", required=True, metavar="DATASET",
                   help="source dataset (repeat: two or more)")
    p.add_argument("--out", required=True, metavar="DATASET", help="folder to create")
    p.add_argument("--splits", default=",".join(SPLITS), metavar="LIST",
                   help="take only these splits of each source (default train,val,test)")
    p.add_argument("--force", action="store_true", help="replace an existing --out dataset")


def run(args):
    from mriprior.data.subset import merge_datasets

    splits = tuple(s for s in args.splits.split(",") if s)
    r = merge_datasets(args.src, args.out, splits, overwrite=args.force)
    print(f"{r['out']}: {r['count']} slices (" +
          ", ".join(f"{k} {v}" for k, v in r["splits"].items()) + ")")
