"""``mriprior`` entry point: dispatches to one module per sub-command.

Each sub-command module ``mriprior.cli.<name>`` defines ``add_arguments(parser)`` and
``run(args)``. Commands are thin: parse -> load -> call the library -> write. A user error
(:class:`mriprior.InputError`, a bad flag, or a file-system error such as a full disk) prints one
line and exits with code 2; ``--debug`` anywhere on the line shows the traceback instead.
Ctrl-C exits with 130. Exit codes: 0 done, 1 an internal error (a bug: a traceback),
2 bad input or environment (one line naming the file / option at fault), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from mriprior import __version__
from mriprior.errors import InputError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mriprior.cli.demo", "run the built-in reconstruction demo and write a figure"),
    "phantom": ("mriprior.cli.phantom", "numerical phantom image or multi-coil k-space"),
    "fft": ("mriprior.cli.fft", "centred orthonormal FFT (bart fft -u)"),
    "poisson": ("mriprior.cli.poisson", "variable-density Poisson-disc sampling pattern"),
    "mask": ("mriprior.cli.mask", "1D variable-density / equispaced / random sampling masks"),
    "fmac": ("mriprior.cli.fmac", "multiply two cfl files, optionally summing dims (bart fmac)"),
    "transpose": ("mriprior.cli.transpose", "swap two dims of a cfl file (bart transpose)"),
    "slice": ("mriprior.cli.slice", "extract a slice of a cfl file (bart slice)"),
    "toimg": ("mriprior.cli.toimg", "magnitude of a 2D cfl image as PNG (bart toimg)"),
    "ecalib": ("mriprior.cli.ecalib", "ESPIRiT coil sensitivity calibration"),
    "cc": ("mriprior.cli.cc", "SVD coil compression"),
    "pics": ("mriprior.cli.pics", "parallel-imaging compressed-sensing reconstruction"),
    "recon": ("mriprior.cli.recon", "reconstruction with a generative prior (MMSE + uncertainty)"),
    "metrics": ("mriprior.cli.metrics", "PSNR / SSIM / NMSE of a reconstruction vs a reference"),
    "data": ("mriprior.cli.data", "datasets: import archives, build the open corpus, simulate"),
    "train": ("mriprior.cli.train", "train a score prior from a YAML config"),
    "sample": ("mriprior.cli.sample", "draw samples from a trained prior into a PNG grid"),
    "export": ("mriprior.cli.export", "export a prior as TorchScript (BART 1.0's denoiser form)"),
    "augment": ("mriprior.cli.augment", "give a magnitude dataset a phase (complex dataset)"),
    "experiment": ("mriprior.cli.experiment", "run an experiment behind the docs' tables"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep it to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(name: str) -> argparse.ArgumentParser:
    module, help_ = COMMANDS[name]
    mod = importlib.import_module(module)
    p = _Parser(prog=f"mriprior {name}", description=(mod.__doc__ or help_).strip(),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(p)
    p.set_defaults(_run=mod.run)
    return p


def _usage() -> str:
    lines = [f"mriprior {__version__}: MRI reconstruction with generative image priors",
             "", "usage: mriprior <command> [options] [--debug]   (mriprior <command> --help)",
             "",
             "commands:"]
    lines += [f"  {n:<9} {h}" for n, (_, h) in COMMANDS.items()]
    return "\n".join(lines)


def _message(e: Exception) -> str:
    """The one-line message of a user error: an InputError's text, ``PATH: reason`` for a
    file-system error (no space, is a directory, permission, ...), or out of memory."""
    if isinstance(e, MemoryError):
        return "out of memory (try a smaller --batch or input)"
    if not isinstance(e, OSError):
        return str(e)
    what = e.strerror or str(e)
    where = e.filename2 if e.filename2 is not None else e.filename  # a rename: its target
    if where is None:
        return what
    if isinstance(e, FileExistsError) and os.path.exists(where) and not os.path.isdir(where):
        what = "exists and is not a folder"
    return f"{where}: {what}"


def tune_malloc() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the OS at once.

    glibc serves blocks above a (dynamic) threshold with fresh ``mmap`` calls and trims the heap
    whenever more than twice that is free, so an iterative solver that allocates and frees the
    same few multi-megabyte tensors every iteration page-faults them in again each time: on the
    256 x 256 x 8 PICS benchmark that was 0.25-0.3 s of a 0.8 s solve (docs/benchmarks.md).
    Blocks up to 32 MB now come from the heap, which is trimmed only above 256 MB free and grows
    in 64 MB steps (address space, not resident memory). Applied by the ``mriprior`` command
    only, never on import; skipped (returns False) off glibc or when the user set any
    ``MALLOC_*`` variable or a ``glibc.malloc`` tunable, which then rule."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    return all(mallopt(opt, value) == 1 for opt, value in (
        (m_mmap_threshold, 32 << 20), (m_trim_threshold, 256 << 20), (m_top_pad, 64 << 20)))


def exit_fast_on_shutdown(status: list[int]) -> None:
    """At interpreter shutdown, end the process with exit code ``status[0]`` without the
    teardown of every loaded module.

    With torch loaded that teardown (module clean-up, then libtorch's static destructors) takes
    ~0.3 s, a fifth of a whole ``mriprior pics`` run. Python's own shutdown still runs up to
    here: non-daemon threads are joined, then the ``atexit`` handlers registered after this call
    run (this one, registered first, runs last: weakref finalizers, logging, multiprocessing
    joining its children), stdout / stderr are flushed. Every output file is closed before a
    command returns."""
    import atexit

    def _exit():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
                pass
        os._exit(status[0])

    atexit.register(_exit)


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv`` None means the process's command line: then malloc is tuned
    (:func:`tune_malloc`) and the process ends fast (:func:`exit_fast_on_shutdown`)."""
    if argv is not None:
        return _main(list(argv))
    tune_malloc()
    status = [1]  # an uncaught exception (a bug: a traceback) exits 1, as Python does
    exit_fast_on_shutdown(status)
    try:
        status[0] = _main(sys.argv[1:])
    except SystemExit as e:  # argparse: --help 0, a bad flag 2
        status[0] = e.code if isinstance(e.code, int) else int(e.code is not None)
        raise
    return status[0]


def _main(argv: list[str]) -> int:
    # the command line only writes figures to files: a non-interactive backend unless the user
    # chose one (library functions leave the backend alone)
    os.environ.setdefault("MPLBACKEND", "Agg")
    debug = "--debug" in argv  # anywhere on the line: show tracebacks instead of one line
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name = argv[0]
    label = f"{name} {argv[1]}" if name == "data" and len(argv) > 1 and argv[1].isalpha() \
        else name  # "mriprior data import: error: ..."
    if name not in COMMANDS:
        print(f"mriprior: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    parser = build_parser(name)
    args = parser.parse_args(argv[1:])

    def _note(message, category, filename, lineno, file=None, line=None):
        print(f"mriprior {label}: note: {message}", file=sys.stderr)

    try:
        warnings.showwarning = _note
        args._run(args)
    except (InputError, OSError, MemoryError) as e:  # bad input, file system, memory
        if debug:
            raise
        print(f"mriprior {label}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mriprior {label}: interrupted (finished outputs are kept; rerun to resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
