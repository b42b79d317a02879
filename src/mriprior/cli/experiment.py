"""Experiments behind the docs' tables and figures (``mriprior experiment <name> --help``).

    mriprior experiment phase --data data/open256-complex --real ../shared/data/brain-8coil-slice \
        --prior src/mriprior/assets/prior-ve-cpu [--cond-prior out/cond-phase-cpu/prior] \
        --out docs/figures [--slices 4] [--samples 2] [--docs docs/experiments.md]

phase: each phase-augmentation method (zero, smooth, langevin with --prior, gan with --gan,
conditional with --cond-prior) gives the held-out magnitudes a phase; the magnitude-weighted
circular phase error (raw and with the global offset removed) and the phase-spectrum distance to
the known phase are tabulated (mriprior.experiments.phase_eval), with a figure.

    mriprior experiment downstream --config configs/varnet-cpu.yaml \
        --source truth=data/open128-complex --source zero=data/open128-zero ... \
        --test data/open128-complex --real ../shared/data/brain-8coil-slice \
        --out out/downstream [--seeds 0,1] [--accels 4,8] [--slices 16] [--prior P] \
        [--docs docs/experiments.md]

downstream: trains one unrolled network per phase source and seed (identical budgets; finished
networks are reused, unfinished ones resumed) and tests all on the same held-out k-space with
known / real phase, against zero-filled, L1-wavelet and (--prior) the fast posterior sampler
(mriprior.experiments.downstream).

    mriprior experiment priors --prior small-complex=src/mriprior/assets/prior-ve-cpu \
        --prior small-mag=out/ve-small-mag-cpu/prior ... --data data/open256-complex \
        --real ../shared/data/brain-8coil-slice --out out/priors [--slices 2] \
        [--docs docs/experiments.md]

priors: reconstructs the held-out cases of bench/recon.py (simulated test slices, Poisson-disc
R ~ 8 and 1D R = 5; the real slice) with each named prior (prior PICS and the fast sampler's
MMSE, each tuned on a validation slice) against zero-filled and L1-wavelet
(mriprior.experiments.prior_compare); finished entries are cached in OUT, so a rerun resumes
and a prior added later costs only its own reconstructions.

    mriprior experiment phase-stats --data ../shared/data/brain-8coil-slice --out docs/figures

phase-stats: real vs simulated phase statistics (mriprior.experiments.phase_stats).

    mriprior experiment train-report out/ve-cpu --out docs/figures/ve-cpu-curve.png

train-report: training curve and held-out losses of a run (mriprior.experiments.train_report).

The experiments return their results; this command prints them and, with ``--docs FILE``, puts
the table into that markdown file and the figure into ``figures/`` next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from mriprior.errors import InputError

def add_arguments(p):
    sub = p.add_subparsers(dest="name", required=True, metavar="{" + ",".join(_SUB) + "}")
    for name, (help_, add, experiment) in _SUB.items():
        sp = sub.add_parser(name, help=help_, description=help_,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add(sp)
        sp.set_defaults(_experiment=experiment)


def _common(p):
    p.add_argument("--out", required=True, help="folder for the figure and JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--docs", default=None, help="markdown file to put the table in")


def _args_phase(p):
    p.add_argument("--data", required=True, help="complex dataset (its test split is used)")
    p.add_argument("--real", default=None, help="folder with a real slice's img.cfl")
    p.add_argument("--prior", default=None, help="complex prior for the langevin method")
    p.add_argument("--cond-prior", default=None, help="conditional model")
    p.add_argument("--gan", default=None, help="phase GAN generator")
    p.add_argument("--slices", type=int, default=4, help="test slices (default 4)")
    p.add_argument("--samples", type=int, default=1, help="draws per method and case")
    p.add_argument("--levels", type=int, default=10, help="langevin levels (default 10)")
    p.add_argument("--steps", type=int, default=50, help="langevin steps per level (50)")
    p.add_argument("--cond-levels", type=int, default=200, help="conditional PC levels (200)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)


def _args_downstream(p):
    p.add_argument("--config", required=True, help="unrolled-network YAML config")
    p.add_argument("--source", action="append", required=True, metavar="NAME=DATASET",
                   help="a phase source's complex training set (repeatable)")
    p.add_argument("--test", required=True, help="complex dataset (test split)")
    p.add_argument("--real", default=None, help="folder with a real slice's ksp / img")
    p.add_argument("--prior", default=None, help="prior for the fast-sampler baseline")
    p.add_argument("--seeds", default="0,1", help="training seeds (default 0,1)")
    p.add_argument("--accels", default="4,8", help="test accelerations (default 4,8)")
    p.add_argument("--train-steps", type=int, default=None, help="override train.steps")
    p.add_argument("--slices", type=int, default=16, help="test slices (default 16)")
    _common(p)


def _args_priors(p):
    p.add_argument("--prior", action="append", required=True, metavar="NAME=PRIOR",
                   help="a prior to compare (repeatable)")
    p.add_argument("--data", required=True, help="complex dataset with val and test splits")
    p.add_argument("--real", default=None, help="folder with a real slice's ksp / img")
    p.add_argument("--patterns", default="poisson,1d",
                   help="sampling patterns of the simulated cases (default poisson,1d)")
    p.add_argument("--chains", type=int, default=3, help="fast-sampler chains (default 3)")
    p.add_argument("--nfe", type=int, default=30, help="fast-sampler NFE (default 30)")
    p.add_argument("--slices", type=int, default=2, help="test slices (default 2)")
    _common(p)


def _args_phase_stats(p):
    p.add_argument("--data", required=True, help="folder with img.cfl/.hdr (BART complex image)")
    p.add_argument("--out", required=True, help="output folder for the figure and JSON")
    p.add_argument("--seeds", type=int, default=16, help="number of simulated phases")
    p.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a PhaseModel field, e.g. grf_std=0.05:0.3 or b0=3 "
                        "(ranges LO:HI, lists A,B); repeatable")
    p.add_argument("--noise-sigma", type=float, default=None,
                   help="noise added to the simulated images (default: the real image's "
                        "background estimate)")


def _args_train_report(p):
    p.add_argument("run_dir", help="a training run's output folder (holds log.jsonl)")
    p.add_argument("--out", required=True, help="PNG file for the figure")


# ----------------------------------------------------------------------------- running
def _progress_log():
    """The experiments' log: each line on stderr, stamped with the time since the start (the
    experiments also count their cases, e.g. "case 3/9"), so a long run shows where it is."""
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        m, sec = divmod(int(time.perf_counter() - t0), 60)
        print(f"[{m // 60:d}:{m % 60:02d}:{sec:02d}] {msg}", file=sys.stderr, flush=True)

    return log


def _write_docs(args, table, res, figure=None):
    """With ``--docs``: put the experiment's table (``table(res, command line)`` -> ``(head,
    section)``) into that markdown file (created with a title if missing) and copy ``figure``
    (if it exists) to ``figures/`` next to it."""
    from mriprior.experiments.report import replace_section

    if not args.docs:
        return
    head, section = table(res, "mriprior experiment " + " ".join(sys.argv[2:]))
    if figure is not None and os.path.exists(figure):
        figs = os.path.join(os.path.dirname(os.path.abspath(args.docs)), "figures")
        os.makedirs(figs, exist_ok=True)
        shutil.copyfile(figure, os.path.join(figs, os.path.basename(figure)))
    if not os.path.exists(args.docs):
        replace_section(args.docs, "# Experiments", "# Experiments\n")
    replace_section(args.docs, head, section)


def _named(items, flag: str, value: str) -> dict:
    """``NAME=VALUE`` items -> ``{name: value}`` (distinct names, no ``|`` in them)."""
    out = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path or "|" in name or name in out:
            raise InputError(f"{flag} {item!r}: expected NAME={value} with distinct names")
        out[name] = path
    return out


def _phase(args) -> None:
    from mriprior.experiments.phase_eval import run_phase_eval, table

    res = run_phase_eval(args.out, data=args.data, real=args.real, prior=args.prior,
                         cond_prior=args.cond_prior, gan=args.gan, n_slices=args.slices,
                         samples=args.samples, seed=args.seed,
                         langevin_kw={"n_levels": args.levels, "steps": args.steps},
                         cond_kw={"n_levels": args.cond_levels}, device=args.device,
                         log=_progress_log())
    _write_docs(args, table, res)


def _downstream(args) -> None:
    from mriprior.experiments.downstream import run_downstream, table

    try:
        seeds = [int(v) for v in args.seeds.split(",") if v]
        accels = [float(v) for v in args.accels.split(",") if v]
    except ValueError:
        raise InputError(f"--seeds {args.seeds!r} / --accels {args.accels!r}: comma-separated "
                         "numbers expected") from None
    res = run_downstream(args.config, _named(args.source, "--source", "DATASET"), args.test,
                         args.out, seeds=seeds, accels=accels, n_slices=args.slices,
                         real=args.real, prior=args.prior, steps=args.train_steps,
                         log=_progress_log())
    _write_docs(args, table, res, os.path.join(args.out, "downstream.png"))


def _priors(args) -> None:
    from mriprior.experiments.prior_compare import run_prior_comparison, table

    res = run_prior_comparison(_named(args.prior, "--prior", "PRIOR"), args.data, args.out,
                               real=args.real, n_slices=args.slices,
                               patterns=tuple(k for k in args.patterns.split(",") if k),
                               chains=args.chains, nfe=args.nfe, device=args.device,
                               log=_progress_log())
    _write_docs(args, table, res, os.path.join(args.out, "prior_compare.png"))


def _phase_stats(args) -> None:
    from mriprior.experiments.phase_stats import model_with, run, summary_lines

    res = run(args.data, args.out, args.seeds, model=model_with(args.set), json_path=args.json,
              noise=args.noise_sigma)
    print("\n".join(summary_lines(res)))


def _train_report(args) -> None:
    from mriprior.experiments.train_report import plot, read_log, summarise

    records = read_log(args.run_dir)
    plot(records, args.out)
    print(json.dumps(summarise(records), indent=1))


def run(args) -> int:
    args._experiment(args)
    return 0


_SUB = {  # name: (help, its arguments, the experiment)
    "phase": ("phase sources against a known phase", _args_phase, _phase),
    "downstream": ("unrolled networks trained on each phase source", _args_downstream,
                   _downstream),
    "priors": ("priors trained on different data, in reconstruction", _args_priors, _priors),
    "phase-stats": ("real vs simulated phase statistics", _args_phase_stats, _phase_stats),
    "train-report": ("training curve and held-out losses of a run", _args_train_report,
                     _train_report),
}
