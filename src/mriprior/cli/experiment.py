"""Experiments behind the documentation's tables and figures.

    mriprior experiment phase --data data/open256-complex --real ../shared/data/brain-8coil-slice \
        --prior src/mriprior/assets/prior-ve-cpu [--cond-prior out/cond-phase-cpu/prior] \
        --out docs/figures [--slices 4] [--samples 2] [--docs docs/experiments.md]

phase: each phase-augmentation method (zero, smooth, langevin with --prior, gan with --gan,
conditional with --cond-prior) gives the held-out magnitudes a phase; the magnitude-weighted circular phase error
(raw and with the global offset removed) and the phase-spectrum distance to the known phase are
tabulated (mriprior.experiments.phase_eval), with a figure.

    mriprior experiment downstream --config configs/varnet-cpu.yaml \
        --source truth=data/open128-complex --source zero=data/open128-zero ... \
        --test data/open128-complex --real ../shared/data/brain-8coil-slice \
        --out out/downstream [--seeds 0,1] [--accels 4,8] [--slices 16] [--prior P] \
        [--docs docs/experiments.md]

downstream: trains one unrolled network per phase source and seed (identical budgets; finished
networks are reused, unfinished ones resumed) and tests all on the same held-out k-space with
known / real phase, against zero-filled, L1-wavelet and (--prior) the fast posterior sampler
(mriprior.experiments.downstream). With --docs the table goes into that file and the figure
into figures/downstream.png next to it.

    mriprior experiment priors --prior small-complex=src/mriprior/assets/prior-ve-cpu \
        --prior small-mag=out/ve-small-mag-cpu/prior ... --data data/open256-complex \
        --real ../shared/data/brain-8coil-slice --out out/priors [--slices 2] \
        [--docs docs/experiments.md]

priors: reconstructs the held-out cases of bench/recon.py (simulated test slices, Poisson-disc
R ~ 8 and 1D R = 5; the real slice) with each named prior (prior PICS and the fast sampler's
MMSE, each tuned on a validation slice) against zero-filled and L1-wavelet
(mriprior.experiments.prior_compare); finished entries are cached in OUT, so a rerun resumes
and a prior added later costs only its own reconstructions.
"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("name", choices=("phase", "downstream", "priors"))
    p.add_argument("--config", default=None, help="downstream: unrolled-network YAML config")
    p.add_argument("--source", action="append", default=[], metavar="NAME=DATASET",
                   help="downstream: a phase source's complex training set (repeatable)")
    p.add_argument("--test", default=None, help="downstream: complex dataset (test split)")
    p.add_argument("--seeds", default="0,1", help="downstream: training seeds (default 0,1)")
    p.add_argument("--accels", default="4,8", help="downstream: test accelerations (4,8)")
    p.add_argument("--train-steps", type=int, default=None,
                   help="downstream: override train.steps of the config")
    p.add_argument("--data", default=None, help="complex dataset (its test split is used)")
    p.add_argument("--real", default=None, help="folder with a real slice's img.cfl")
    p.add_argument("--prior", action="append", default=[], metavar="[NAME=]PRIOR",
                   help="phase: complex prior for the langevin method; downstream: prior for "
                        "the fast-sampler baseline; priors: NAME=PRIOR (repeatable)")
    p.add_argument("--patterns", default="poisson,1d",
                   help="priors: sampling patterns of the simulated cases (poisson,1d)")
    p.add_argument("--chains", type=int, default=3, help="priors: fast-sampler chains (3)")
    p.add_argument("--nfe", type=int, default=30, help="priors: fast-sampler NFE (30)")
    p.add_argument("--cond-prior", default=None, help="conditional model")
    p.add_argument("--gan", default=None, help="phase GAN generator")
    p.add_argument("--slices", type=int, default=None,
                   help="test slices (default: phase 4, downstream 16, priors 2)")
    p.add_argument("--samples", type=int, default=1, help="draws per method and case")
    p.add_argument("--levels", type=int, default=10, help="langevin levels (default 10)")
    p.add_argument("--steps", type=int, default=50, help="langevin steps per level (50)")
    p.add_argument("--cond-levels", type=int, default=200, help="conditional PC levels (200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="folder for the figure and JSON")
    p.add_argument("--docs", default=None, help="markdown file to put the table in")


def _table(res: dict, command: str) -> str:
    head = "## Phase of magnitude images: error against a known phase (`mriprior experiment phase`)"
    lines = [head, "", "Magnitude-weighted mean circular phase error inside the brain (rad; "
             "pi/2 = unrelated), raw / with the global offset removed, and the distance of the "
             "phase spectra (mean |log10 P - log10 P_ref| over radial bins). "
             f"{res['samples']} draw(s) per method and case.", "",
             "| case | " + " | ".join(res["methods"]) + " |",
             "|---|" + "---|" * len(res["methods"])]
    for row in res["per_case"] + [dict(res["mean"], case="**mean**")]:
        cells = [f"{row[m]['phase_error']:.3f} / {row[m]['phase_error_offset_removed']:.3f} / "
                 f"{row[m]['spectrum_distance']:.2f}" for m in res["methods"]]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    lines += ["", "![phase evaluation](figures/phase_eval.png)", "", f"Command: `{command}`",
              ""]
    return head, "\n".join(lines)


def _downstream(args) -> int:
    import os
    import sys

    from mriprior.errors import InputError
    from mriprior.experiments.downstream import run_downstream, table

    if not args.config or not args.test or not args.source:
        raise InputError("experiment downstream needs --config, --test and --source NAME=DATASET")
    sources = {}
    for item in args.source:
        name, eq, path = item.partition("=")
        if not eq or not name or not path or "|" in name:
            raise InputError(f"--source {item!r}: expected NAME=DATASET")
        sources[name] = path
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v]
        accels = [float(v) for v in args.accels.split(",") if v]
    except ValueError:
        raise InputError(f"--seeds {args.seeds!r} / --accels {args.accels!r}: comma-separated "
                         "numbers expected") from None
    res = run_downstream(args.config, sources, args.test, args.out, seeds=seeds, accels=accels,
                         n_slices=args.slices or 16, real=args.real, prior=_one_prior(args),
                         steps=args.train_steps, log=_progress_log())
    if args.docs:
        _write_docs(args.docs, *table(res, "mriprior experiment " + " ".join(sys.argv[2:])),
                    os.path.join(args.out, "downstream.png"))
    return 0


def _progress_log():
    """The experiments' log: each line on stderr, stamped with the time since the start (the
    experiments also count their cases, e.g. "case 3/9"), so a long run shows where it is."""
    import sys
    import time

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        m, sec = divmod(int(time.perf_counter() - t0), 60)
        print(f"[{m // 60:d}:{m % 60:02d}:{sec:02d}] {msg}", file=sys.stderr, flush=True)

    return log


def _write_docs(docs, head, section, figure=None):
    """Put ``section`` into the markdown file ``docs`` (created with a title if missing) and
    copy ``figure`` (if it exists) to ``figures/`` next to it."""
    import os
    import shutil

    from mriprior.experiments.report import replace_section

    if figure is not None and os.path.exists(figure):
        figs = os.path.join(os.path.dirname(os.path.abspath(docs)), "figures")
        os.makedirs(figs, exist_ok=True)
        shutil.copyfile(figure, os.path.join(figs, os.path.basename(figure)))
    if not os.path.exists(docs):
        replace_section(docs, "# Experiments", "# Experiments\n")
    replace_section(docs, head, section)


def _one_prior(args):
    from mriprior.errors import InputError

    if len(args.prior) > 1 or any("=" in p for p in args.prior):
        raise InputError(f"experiment {args.name} takes one --prior PATH, got {args.prior}")
    return args.prior[0] if args.prior else None


def _priors(args) -> int:
    import os
    import sys

    from mriprior.errors import InputError
    from mriprior.experiments.prior_compare import run_prior_comparison, table

    if not args.data or not args.prior:
        raise InputError("experiment priors needs --data and --prior NAME=PRIOR (repeatable)")
    priors = {}
    for item in args.prior:
        name, eq, path = item.partition("=")
        if not eq or not name or not path or name in priors:
            raise InputError(f"--prior {item!r}: expected NAME=PRIOR with distinct names")
        priors[name] = path
    res = run_prior_comparison(priors, args.data, args.out, real=args.real,
                               n_slices=args.slices or 2,
                               patterns=tuple(k for k in args.patterns.split(",") if k),
                               chains=args.chains, nfe=args.nfe, device=args.device,
                               log=_progress_log())
    if args.docs:
        _write_docs(args.docs, *table(res, "mriprior experiment " + " ".join(sys.argv[2:])),
                    os.path.join(args.out, "prior_compare.png"))
    return 0


def run(args) -> int:
    import sys

    from mriprior.experiments.phase_eval import run_phase_eval

    if args.name == "downstream":
        return _downstream(args)
    if args.name == "priors":
        return _priors(args)
    args.slices = args.slices or 4

    res = run_phase_eval(args.out, data=args.data, real=args.real, prior=_one_prior(args),
                         cond_prior=args.cond_prior, gan=args.gan, n_slices=args.slices,
                         samples=args.samples, seed=args.seed,
                         langevin_kw={"n_levels": args.levels, "steps": args.steps},
                         cond_kw={"n_levels": args.cond_levels}, device=args.device,
                         log=_progress_log())
    if args.docs:
        head, section = _table(res, "mriprior experiment " + " ".join(sys.argv[2:]))
        _write_docs(args.docs, head, section)
    return 0
