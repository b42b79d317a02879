"""Dataset tools: ``mriprior data import | open | simulate | subset | merge | dedup`` (``mriprior data <tool> --help``)."""

from __future__ import annotations

import argparse
import importlib

TOOLS = {
    "import": ("mriprior.cli.data_import", "import DICOM / NIfTI / PNG / JPEG / fastMRI / cfl "
                                           "files into a dataset"),
    "open": ("mriprior.cli.data_open", "build the open magnitude corpus from package-manager "
                                       "sources"),
    "simulate": ("mriprior.cli.data_simulate", "magnitude dataset -> complex (multi-coil) dataset "
                                               "with a physics-based phase"),
    "subset": ("mriprior.cli.data_subset", "a random subset of a dataset, as a new dataset"),
    "merge": ("mriprior.cli.data_merge", "the union of several datasets, as a new dataset"),
    "dedup": ("mriprior.cli.data_dedup", "near-duplicate slices across splits: report, or write "
                                         "the dataset without them"),
}


def add_arguments(p):
    sub = p.add_subparsers(dest="tool", required=True, metavar="{" + ",".join(TOOLS) + "}")
    for name, (module, help_) in TOOLS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # one broken tool must not take its siblings down
            sp = sub.add_parser(name, help=f"{help_} (unavailable: {e})")
            sp.set_defaults(_tool_run=_unavailable(name, e))
            continue
        sp = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_tool_run=mod.run)


def _unavailable(name, error):
    def run(args):
        from mriprior.errors import InputError
        raise InputError(f"data {name} is unavailable: {error}")
    return run


def run(args):
    args._tool_run(args)
