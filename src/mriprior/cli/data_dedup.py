"""Find near-duplicate slices of a dataset (copies of one image across splits leak the test set
into training) and optionally write the dataset without them.

    mriprior data dedup --in data/clinical256                       # report only
    mriprior data dedup --in data/clinical256 --out data/clinical256-dedup

Slices are near-duplicates when their magnitudes, area-averaged to --size x --size, mean removed,
correlate at least --threshold (default 0.99: the same image re-encoded, rescaled or resampled;
neighbouring slices of one volume correlate less). One slice is kept per group: the first of its
most protected split (test, then val, then train), so the held-out sets keep their slices and the
training set loses their copies. Each kept record gains "subset_of"; the manifest's
options.dedup records the settings and counts (mriprior.data.dedup).
"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--in", dest="src", required=True, metavar="DATASET", help="source dataset")
    p.add_argument("--out", metavar="DATASET",
                   help="write the deduplicated dataset here (default: report only)")
    p.add_argument("--threshold", type=float, default=0.99,
                   help="fingerprint correlation that makes two slices duplicates (default 0.99)")
    p.add_argument("--size", type=int, default=64,
                   help="fingerprint size in pixels per side (default 64)")
    p.add_argument("--force", action="store_true", help="replace an existing --out dataset")


def run(args):
    from mriprior.data.dataset import open_dataset
    from mriprior.data.dedup import dedup_dataset, leakage, near_duplicate_groups

    if args.out:
        r = dedup_dataset(args.src, args.out, args.threshold, args.size, overwrite=args.force)
        groups, leak = r["groups"], r["leakage"]
    else:
        ds = open_dataset(args.src)
        g = near_duplicate_groups(ds, args.threshold, args.size)
        groups, leak = len(g), leakage(ds, g)
    print(f"{args.src}: {groups} groups of near-duplicate slices (correlation >= "
          f"{args.threshold} at {args.size} x {args.size})")
    for s, v in leak.items():
        pct = 100.0 * v["with_train_duplicate"] / max(v["slices"], 1)
        print(f"  {s}: {v['with_train_duplicate']} of {v['slices']} slices ({pct:.1f} %) have a "
              "near-duplicate in train")
    if args.out:
        print(f"{r['out']}: {r['count']} slices (" +
              ", ".join(f"{k} {v}" for k, v in r["splits"].items()) + "); dropped " +
              ", ".join(f"{k} {v}" for k, v in r["dropped"].items()))
