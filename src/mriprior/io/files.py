"""Safe output: atomic writes, replacing only our own folders, one job per output.

* :func:`atomic_write` (and ``_text`` / ``_json``): the file appears complete under its name or
  not at all: written to a temporary name in the same folder, then renamed; the temporary file
  is removed if writing fails (a full disk leaves nothing behind).
* :func:`check_replaceable`: ``--force`` may replace an output folder only when it is empty or
  is one of ours (a predicate, e.g. "has an mriprior dataset manifest"); anything else is
  refused, naming what is in it, so a mistyped ``--out`` never deletes a user's files.
* :func:`output_lock`: an advisory lock (``flock``) on a hidden sibling ``.NAME.lock`` of an
  output, holding the owner's PID. A second job on the same output fails at once with an
  :class:`~mriprior.errors.InputError` naming that PID. The lock is released (and its file
  removed) when the job ends, and by the kernel when the process dies, so a killed job never
  leaves a stale lock. It is re-entrant within one process. Ranks of one distributed job take it
  on rank 0 only (the callers do that); the other ranks follow rank 0.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import json
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from mriprior.errors import InputError
from mriprior.launch import launch_env

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "check_replaceable", "work_folder", "named_oserror",
           "make_parent", "output_lock", "locks_output", "lock_path", "weights_and_sidecar",
           "sha256_file"]


def make_parent(path) -> list[Path]:
    """Create the folders above ``path``; returns those it made (outermost first). An existing
    file where a folder must be is one InputError naming it (not mkdir's "File exists")."""
    path = Path(path)
    made = [d for d in reversed(path.parents) if not d.exists()]
    for d in path.parents:
        if d.exists() or d.is_symlink():
            if not d.is_dir():
                raise InputError(f"{d}: is a file, not a folder (output {path})")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() / mkdir() give; mkstemp / mkdtemp give 0600 / 0700
DIR_MODE = 0o777 & ~_umask()


def atomic_write(path, write: Callable[[Path], object], *, fsync: bool = False) -> Path:
    """``write(tmp)`` writes the content to the path it is given; it is then renamed to ``path``.

    The temporary file keeps ``path``'s suffix (writers such as ``np.save`` look at it).
    ``fsync``: flush it to the disk before the rename (checkpoints).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-", suffix=path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; give what open() would
        write(Path(tmp))
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is not None:
            raise
        raise named_oserror(e, path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def named_oserror(e: OSError, path) -> OSError:
    """``e`` with the file name it lacked; a short write without errno (numpy's) is a full disk."""
    if e.errno is None:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({e})", str(path))
    return OSError(e.errno, e.strerror or str(e), str(path))


def atomic_write_bytes(path, data: bytes, *, fsync: bool = False) -> Path:
    """Serialise in memory first, then write with plain file I/O: a full disk is then an
    ``OSError`` (ENOSPC) naming the file, whatever library produced the bytes (``torch.save``
    and safetensors report it as their own RuntimeError / SafetensorError otherwise)."""
    return atomic_write(path, lambda t: t.write_bytes(data), fsync=fsync)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda t: t.write_text(text))


def atomic_write_json(path, obj, *, indent: int | None = 1, allow_nan: bool = False) -> Path:
    """Strict JSON by default (a NaN is an error here, not a file other tools reject);
    ``allow_nan=True`` for result files where a metric may legitimately be undefined."""
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan)
    return atomic_write_text(path, text + "\n")


def check_replaceable(path, is_ours: Callable[[Path], bool], what: str) -> None:
    """Raise unless ``path`` is missing, an empty folder, or a folder ``is_ours`` accepts."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise InputError(f"{path}: exists and is not a folder; refusing to replace it "
                         "(choose another output)")
    entries = sorted(p.name for p in path.iterdir())
    if not entries or is_ours(path):
        return
    shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5
                                      else "")
    raise InputError(f"{path}: not {what} (it holds {shown}); --force replaces only {what} or "
                     "an empty folder")


def work_folder(folder, job: dict, describe=None) -> bool:
    """Create or reuse the work folder of a resumable job (its finished pieces, ``job.json``).

    A folder left by a different job (another ``job.json``) is refused, naming the folder;
    ``describe(old, new)`` may say how the two differ. Returns True when the folder is new.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.json"
    if not path.exists():  # every rank of a job may write it: same content, atomic
        atomic_write_json(path, job, allow_nan=True)
        return created
    try:
        old = json.loads(path.read_text())
    except ValueError:
        old = None
    if old != job:
        how = describe(old, job) if describe is not None and isinstance(old, dict) else ""
        raise InputError(f"{folder}: holds the work of a different job{': ' + how if how else ''}"
                         "; rerun with the same settings, or delete it")
    return created


def lock_path(path) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.lock"


_HELD: dict[str, list] = {}  # lock file -> [fd, depth] (re-entrancy within this process)


def _owner(lp: Path) -> str:
    try:
        pid = lp.read_text().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid else "another process"


@contextlib.contextmanager
def output_lock(path, job: str = "job"):
    """Hold the advisory lock of output ``path`` for the ``with`` block (see the module doc).

    The parent folder is created if needed. Raises :class:`InputError` naming the running job's
    PID when another process holds the lock.
    """
    path = Path(path)
    lp = lock_path(path)
    key = str(lp.resolve() if lp.parent.exists() else lp.absolute())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield lp
        finally:
            _HELD[key][1] -= 1
        return
    made = make_parent(lp)
    while True:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise InputError(f"{path}: another {job} is writing this output ({_owner(lp)}, "
                                 f"lock {lp.name}); wait for it or choose another output"
                                 ) from None
            _remove_empty(made)
            raise
        try:  # the file we locked may have been unlinked by its previous owner meanwhile
            same = os.fstat(fd).st_ino == os.stat(lp).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = [fd, 1]
    try:
        yield lp
    finally:
        del _HELD[key]
        try:
            os.unlink(lp)  # while still locked: a waiting opener then sees a new inode
        except FileNotFoundError:
            pass
        os.close(fd)
        _remove_empty(made)


def _remove_empty(dirs) -> None:
    """Remove the folders the lock created, deepest first, while they are still empty."""
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            return


def locks_output(arg: str, job: str):
    """Decorator: hold :func:`output_lock` on the function's argument ``arg`` while it runs.

    Distributed jobs lock on rank 0 only: the function's ``rank`` argument when it has one and it
    is given, else the ``RANK`` environment variable (torchrun), else 0.
    """
    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            if launch_env(bound.arguments.get("rank")).rank != 0:
                return fn(*args, **kwargs)
            with output_lock(bound.arguments[arg], job):
                return fn(*args, **kwargs)
        return wrapper
    return deco


def weights_and_sidecar(path) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` of a model named by ``NAME`` or either file; a NAME with
    a dot keeps it (``out/prior-v1.5`` -> ``out/prior-v1.5.safetensors``)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json") and not p.is_dir():
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def sha256_file(path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
