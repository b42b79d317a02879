"""``mriprior data import`` (mriprior.data.importers): every format, geometry, intensity records,
subjects and splits, privacy, determinism, atomicity and the CLI.

All inputs are written here (pydicom, nibabel, Pillow, h5py, mriprior.io.cfl).
"""

from __future__ import annotations

import json
import os
import stat

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

import mriprior.io.images
from mriprior.cli import data_import
from mriprior.cli.main import _Parser
from mriprior.data.dataset import open_dataset
from mriprior.data.importers import (fit_slice, import_dataset, is_empty, load_salt,
                                     salt_file, split_of, subject_hash)
from mriprior.data.importers.geometry import _resample
from mriprior.errors import InputError
from mriprior.io.cfl import write_cfl
from mriprior.io.images import read_image

from fastmri_synth import RECON_HEADER, oversampled_volume  # tests/fastmri_synth.py

RNG = np.random.default_rng(11)
SALT = "test-salt"


@pytest.fixture(autouse=True)
def _salt_file(tmp_path, monkeypatch):
    """Never touch the real ~/.config: the per-user salt lives in the test's folder."""
    monkeypatch.setenv("MRIPRIOR_SALT_FILE", str(tmp_path / "cfg" / "salt"))


def _import(src, out, **kw):
    kw.setdefault("salt", SALT)
    return import_dataset(src if isinstance(src, list) else [src], out, **kw)


def _manifest(out):
    with open(out / "manifest.json") as f:
        return json.load(f)


def _stored(out):
    ds = open_dataset(out)
    return ds, [np.asarray(ds[i]) for i in range(len(ds))]


def _region(rec):
    oy, ox = rec["resize"]["offset"]
    h, w = rec["resize"]["resized_shape"]
    return slice(max(oy, 0), oy + h), slice(max(ox, 0), ox + w)


# =============================================================================================
# DICOM

PHI = {"PatientName": "Doe^Jane", "PatientID": "12345", "PatientBirthDate": "19700101",
       "StudyDate": "20240229", "SeriesDate": "20240228", "AcquisitionDate": "20240227",
       "InstitutionName": "St Example Hospital", "InstitutionAddress": "1 Hospital Road",
       "ReferringPhysicianName": "House^Gregory", "AccessionNumber": "ACC-2468",
       "StudyDescription": "Knee of Jane Doe", "StationName": "MRSTATION7",
       "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.555.1"}


def _dicom(path, pixels, *, series_uid, instance=1, z=None, **extra):
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[None]
    n, rows, cols = pixels.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, uid
    for k, v in {**PHI, **extra}.items():
        setattr(ds, k, v)
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = series_uid, "MR", 1
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if z is not None:
        ds.ImagePositionPatient = [0, 0, z]
    ds.Rows, ds.Columns = rows, cols
    if n > 1:
        ds.NumberOfFrames = n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _dicom_archive(root):
    """DOE_JANE/ with a 3-file series (files not in slice order) and a 4-frame file."""
    s1, s2 = generate_uid(), generate_uid()
    slices = {z: RNG.integers(100, 4000, (16, 16)).astype(np.uint16) for z in (0.0, 1.0, 2.0)}
    for name, z, inst in (("a.dcm", 2.0, 3), ("b.dcm", 0.0, 1), ("c.dcm", 1.0, 2)):
        _dicom(root / "DOE_JANE" / "series1" / name, slices[z], series_uid=s1, instance=inst,
               z=z)
    frames = RNG.integers(100, 4000, (4, 16, 16)).astype(np.uint16)
    _dicom(root / "DOE_JANE" / "series2" / "IM0001", frames, series_uid=s2)  # no extension
    return [slices[0.0], slices[1.0], slices[2.0]], frames


def test_dicom_series_and_multiframe(tmp_path):
    series, frames = _dicom_archive(tmp_path / "src")
    out = tmp_path / "ds"
    s = _import(tmp_path / "src", out, shape=(16, 16), normalize="none")
    assert s["count"] == 7 and s["kind"] == "magnitude" and not s["skipped"]
    ds, imgs = _stored(out)
    recs = ds.records
    assert [r["format"] for r in recs] == ["dicom"] * 7
    # series sorted by ImagePositionPatient, then the multi-frame file frame by frame
    for i, ref in enumerate(series + list(frames)):
        np.testing.assert_array_equal(imgs[i], ref.astype(np.float32))
        assert recs[i]["scale"] == 1.0 and recs[i]["original_shape"] == [16, 16]
    assert [r["index"] for r in recs] == [0, 1, 2, 0, 1, 2, 3]
    assert [r["frame"] for r in recs[3:]] == [0, 1, 2, 3]
    assert len({r["series"] for r in recs[:3]}) == 1 and recs[0]["series"] != recs[3]["series"]
    assert all(r["source"].startswith("dicom:") for r in recs)
    # one PatientID -> one subject -> one split
    assert len({r["subject"] for r in recs}) == 1 and len({r["split"] for r in recs}) == 1
    assert recs[0]["subject"] == subject_hash(SALT, "patient:12345")


def test_dicom_subject_falls_back_to_study_then_folder(tmp_path):
    img = RNG.integers(1, 100, (8, 8)).astype(np.uint16)
    _dicom(tmp_path / "src" / "p" / "x.dcm", img, series_uid=generate_uid(), PatientID="")
    _dicom(tmp_path / "src" / "q" / "y.dcm", img, series_uid=generate_uid(), PatientID="",
           StudyInstanceUID="")
    _import(tmp_path / "src", tmp_path / "ds", shape=(8, 8))
    recs = open_dataset(tmp_path / "ds").records
    assert recs[0]["subject"] == subject_hash(SALT, "study:" + PHI["StudyInstanceUID"])
    assert recs[1]["subject"] == subject_hash(SALT, "dir:src/q")


def test_privacy_no_identifiers_in_manifest(tmp_path):
    _dicom_archive(tmp_path / "src")
    broken = tmp_path / "src" / "DOE_JANE" / "series1" / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"garbage Doe^Jane 12345")
    (tmp_path / "src" / "DOE_JANE" / "notes.txt").write_text("Jane Doe 12345")
    nopix = _dicom(tmp_path / "src" / "DOE_JANE" / "sr.dcm", np.zeros((4, 4)),
                   series_uid=generate_uid())
    ds = pydicom.dcmread(nopix)
    del ds.PixelData
    ds.save_as(nopix)
    out = tmp_path / "ds"
    s = _import(tmp_path / "src", out, shape=(16, 16))
    assert s["count"] == 7 and len(s["skipped"]) == 3
    assert all("DOE_JANE" in e["path"] for e in s["skipped"])  # the caller sees real paths
    reasons = {os.path.basename(e["path"]): e["reason"] for e in s["skipped"]}
    assert reasons["sr.dcm"] == "DICOM file without pixel data (not an image)"
    assert reasons["broken.dcm"] in ("unreadable or unsupported DICOM file",
                                     "DICOM file without pixel data (not an image)")
    text = (out / "manifest.json").read_text()
    for value in list(PHI.values()) + ["Doe", "Jane", "DOE_JANE", "JANE", "series1", "notes",
                                       "broken", "IM0001", "1970", "2024", SALT, str(tmp_path)]:
        assert value not in text, f"{value!r} leaked into the manifest"
    m = json.loads(text)
    assert all(e["source"].startswith("skipped:") for e in m["summary"]["skipped"])
    assert all(set(e) == {"source", "reason"} for e in m["summary"]["skipped"])


# =============================================================================================
# NIfTI

def _nifti_volume():
    """(X, Y, Z) = (12, 10, 8): slices z=0, 1 zero, z=7 almost empty, the rest structured."""
    vol = np.zeros((12, 10, 8), np.float32)
    vol[:, :, 2:7] = RNG.uniform(50, 100, (12, 10, 5))
    vol[3, 4, 7] = 100.0  # a single bright pixel: below 1 % of the pixels
    vol[:, :, 6] = RNG.uniform(0, 1, (12, 10))  # faint everywhere: below 5 % of the max
    vol[:, :, 6][:4, :4] = 80.0  # ... but 16 pixels (13 %) bright: kept
    return vol


def test_nifti_slices_empty_skipped_and_orientation(tmp_path):
    vol = _nifti_volume()
    src = tmp_path / "src"
    src.mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), src / "sub1.nii.gz")
    out = tmp_path / "ds"
    s = _import(src, out, shape=(10, 12), resize="none")
    assert s["count"] == 5 and s["empty_slices"] == 3
    ds, imgs = _stored(out)
    assert [r["index"] for r in ds.records] == [2, 3, 4, 5, 6]
    for img, r in zip(imgs, ds.records):
        ref = vol[:, :, r["index"]].T[::-1]  # rows: anterior at the top, columns: towards R
        np.testing.assert_allclose(img * r["scale"], ref, rtol=1e-6)
        assert r["axis"] == "z" and r["source"] == "sub1.nii.gz" and img.max() == 1.0
    assert is_empty(vol[:, :, 7], vol.max(), 0.05) and not is_empty(vol[:, :, 6], vol.max(), 0.05)


def test_nifti_axes_4d_and_reorientation(tmp_path):
    vol = RNG.uniform(1, 2, (6, 5, 4, 2)).astype(np.float32)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS on disk: read_nifti flips x to RAS+
    nib.save(nib.Nifti1Image(vol, flip), tmp_path / "v.nii")
    out = tmp_path / "ds"
    s = _import(tmp_path / "v.nii", out, shape=(8, 8), resize="crop", axes=("x", "z"),
                normalize="none")
    assert s["count"] == 2 * (6 + 4)
    ds, imgs = _stored(out)
    r = ds.records[0]
    assert (r["axis"], r["volume"], r["index"]) == ("x", 0, 0)
    assert r["original_shape"] == [4, 5]  # (z, y) plane of an x slice
    ras = vol[::-1]
    ref = ras[0, :, :, 0].T[::-1]
    np.testing.assert_allclose(imgs[0][_region(r)], ref)
    assert [x["axis"] for x in ds.records[:10]] == ["x"] * 6 + ["z"] * 4


# =============================================================================================
# PNG / JPEG, geometry and intensity records

def test_png_8_16_bit_and_jpeg(tmp_path):
    src = tmp_path / "src" / "subj"
    src.mkdir(parents=True)
    a8 = RNG.integers(1, 255, (20, 24)).astype(np.uint8)
    a16 = RNG.integers(1000, 65535, (20, 24)).astype(np.uint16)
    rgb = RNG.integers(0, 255, (20, 24, 3)).astype(np.uint8)
    Image.fromarray(a8).save(src / "a.png")
    Image.fromarray(a16).save(src / "b.png")
    Image.fromarray(rgb).save(src / "c.jpg", quality=95)
    out = tmp_path / "ds"
    s = _import(tmp_path / "src", out, shape=(32, 32), resize="crop")
    assert s["count"] == 3 and s["by_format"] == {"image": {"files": 3, "slices": 3}}
    ds, imgs = _stored(out)
    refs = [a8.astype(np.float32), a16.astype(np.float32), read_image(src / "c.jpg")[0]]
    for img, r, ref in zip(imgs, ds.records, refs):
        assert r["resize"] == {"mode": "crop", "resized_shape": [20, 24], "zoom": [1.0, 1.0],
                               "offset": [6, 4]}
        np.testing.assert_allclose(img[_region(r)] * r["scale"], ref, rtol=1e-6)
        assert img.max() == pytest.approx(1.0) and np.count_nonzero(img) == ref.size
    assert [r["bit_depth"] for r in ds.records] == [8, 16, 8]
    assert ds.records[2]["converted"] == "rgb_to_luminance"
    assert ds.records[0]["source"] == "subj/a.png"
    assert len({r["subject"] for r in ds.records}) == 1  # PNG/JPEG: the folder is the subject


def test_fit_resize_records_recover_intensities(tmp_path):
    y, x = np.mgrid[0:40, 0:80]
    smooth = (1000 + 500 * np.sin(x / 13) * np.cos(y / 9)).astype(np.float32)
    Image.fromarray(smooth.astype(np.uint16)).save(tmp_path / "wide.png")
    out = tmp_path / "ds"
    _import(tmp_path / "wide.png", out, shape=(64, 64))  # shrinks 80 -> 64 (antialiased)
    ds, (img,) = _stored(out)
    r = ds.records[0]
    assert r["original_shape"] == [40, 80] and r["resize"]["resized_shape"] == [32, 64]
    assert r["resize"]["offset"] == [16, 0] and r["resize"]["zoom"] == [0.8, 0.8]
    assert img.max() == 1.0 and not img[:16].any() and not img[48:].any()
    back = _resample(img[_region(r)] * r["scale"], (40, 80))
    ref = smooth.astype(np.uint16).astype(np.float32)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(back - ref)[inner].max() / ref.max() < 0.03
    # complex data: real and imaginary parts resampled alike (a linear filter)
    z = (smooth + 1j * smooth[::-1]).astype(np.complex64)
    zr, _ = fit_slice(z, (64, 64), "fit")
    rr, _ = fit_slice(smooth, (64, 64), "fit")
    np.testing.assert_allclose(zr.real, rr, rtol=1e-6)


def test_p99_and_none_normalisation(tmp_path):
    a = RNG.integers(1, 200, (16, 16)).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    for mode, scale in (("p99", np.percentile(a.astype(np.float32), 99)), ("none", 1.0)):
        out = tmp_path / mode
        _import(tmp_path / "a.png", out, shape=(16, 16), resize="none", normalize=mode)
        ds, (img,) = _stored(out)
        assert ds.records[0]["normalize"] == mode
        assert ds.records[0]["scale"] == pytest.approx(scale, rel=1e-6)
        np.testing.assert_allclose(img * ds.records[0]["scale"], a, rtol=1e-6)
    assert img.max() > 1 and _stored(tmp_path / "p99")[1][0].max() > 1


def test_resize_none_skips_other_shapes(tmp_path):
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.full((16, 20), 9, np.uint8)).save(tmp_path / "wide.png")
    s = _import(tmp_path, tmp_path / "ds", shape=(16, 16), resize="none")
    assert s["count"] == 1
    (entry,) = s["skipped"]
    assert entry["path"].endswith("wide.png") and "resize='none'" in entry["reason"]


# =============================================================================================
# fastMRI and cfl

def _fastmri(path, n_slices=2, coils=6):
    """Oversampled (64 x 32) multi-coil k-space of a known complex image in the central 32 rows
    (tests/fastmri_synth.py); returns the images' central 32 rows."""
    images, k = oversampled_volume(n_slices, coils)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("ismrmrd_header", data=np.bytes_(RECON_HEADER.encode()))
        f.attrs["patient_id"] = "fake-patient-777"
    return [im[16:48] for im in images]


def test_fastmri_espirit_complex_and_rss(tmp_path):
    truth = _fastmri(tmp_path / "knee.h5")
    out = tmp_path / "esp"
    s = _import(tmp_path / "knee.h5", out, shape=(32, 32), resize="none")
    assert s["kind"] == "complex" and s["count"] == 2
    ds, imgs = _stored(out)
    assert ds.kind == "complex"
    inside = np.abs(truth[0]) > 0
    for img, r, ref in zip(imgs, ds.records, truth):
        assert r["original_shape"] == [32, 32] and r["recon_crop"] == [32, 32]
        assert r["combine"] == "espirit" and r["coils"] == 6
        mag = np.abs(img) * r["scale"]
        np.testing.assert_allclose(mag[inside], np.abs(ref)[inside], rtol=0.05)
        assert np.abs(img).max() == pytest.approx(1.0)
    assert "fake-patient-777" not in (out / "manifest.json").read_text()
    out = tmp_path / "rss"
    s = _import(tmp_path / "knee.h5", out, shape=(32, 32), resize="none", combine="rss")
    ds, imgs = _stored(out)
    assert s["kind"] == "magnitude" and ds.kind == "magnitude"
    for img, r, ref in zip(imgs, ds.records, truth):
        np.testing.assert_allclose(img * r["scale"], np.abs(ref), atol=1e-4)


def test_fastmri_undersampled_skipped(tmp_path):
    _fastmri(tmp_path / "test.h5", n_slices=1)
    with h5py.File(tmp_path / "test.h5", "a") as f:
        f.create_dataset("mask", data=np.ones(32, bool))
    Image.fromarray(np.full((8, 8), 3, np.uint8)).save(tmp_path / "x.png")
    s = _import(tmp_path, tmp_path / "ds", shape=(8, 8))
    assert s["count"] == 1 and "undersampled" in s["skipped"][0]["reason"]


def test_cfl_2d_and_stack(tmp_path):
    img = (RNG.standard_normal((16, 12)) + 1j * RNG.standard_normal((16, 12))).astype(np.complex64)
    write_cfl(tmp_path / "one", img)  # BART dims (x=16, y=12)
    stack = (RNG.standard_normal((16, 12, 1, 1, 1, 3))
             + 1j * RNG.standard_normal((16, 12, 1, 1, 1, 3))).astype(np.complex64)
    write_cfl(tmp_path / "stack", stack)
    write_cfl(tmp_path / "vol3d", np.ones((4, 5, 6), np.complex64))
    out = tmp_path / "ds"
    s = _import(tmp_path, out, shape=(12, 16), resize="none")
    assert s["kind"] == "complex" and s["count"] == 4
    assert [e["path"].endswith("vol3d.cfl") for e in s["skipped"]] == [True]
    ds, imgs = _stored(out)
    refs = [img.T] + [stack[..., i].reshape(16, 12).T for i in range(3)]
    for got, r, ref in zip(imgs, ds.records, refs):
        np.testing.assert_allclose(got * r["scale"], ref, rtol=1e-5, atol=1e-6)
    assert [r["source"] for r in ds.records] == ["one.cfl"] + ["stack.cfl"] * 3


def test_kind_auto_mixed_and_forced(tmp_path):
    img = (RNG.uniform(1, 2, (8, 8)) * np.exp(1j * RNG.uniform(0, 6, (8, 8)))).astype(np.complex64)
    write_cfl(tmp_path / "a", img)
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "b.png")
    s = _import(tmp_path, tmp_path / "mixed", shape=(8, 8))
    assert s["kind"] == "magnitude" and s["count"] == 2
    ds, imgs = _stored(tmp_path / "mixed")
    assert ds.records[0]["magnitude_of_complex"] is True
    np.testing.assert_allclose(imgs[0] * ds.records[0]["scale"], np.abs(img.T), rtol=1e-5)
    s = _import(tmp_path, tmp_path / "cplx", shape=(8, 8), kind="complex")
    assert s["kind"] == "complex" and s["count"] == 1
    assert "kind='complex'" in s["skipped"][0]["reason"]


# =============================================================================================
# subjects, salt, splits

def test_split_by_subject(tmp_path):
    for d in range(24):
        folder = tmp_path / "src" / f"s{d:02d}"
        folder.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((8, 8), 10 + d + k, np.uint8)).save(folder / f"{k}.png")
    s = _import(tmp_path / "src", tmp_path / "ds", shape=(8, 8), split=(0.5, 0.25, 0.25))
    recs = open_dataset(tmp_path / "ds").records
    by_subject = {}
    for r in recs:
        by_subject.setdefault(r["subject"], set()).add(r["split"])
        assert r["split"] == split_of(r["subject"], (0.5, 0.25, 0.25))
    assert len(by_subject) == 24 and all(len(v) == 1 for v in by_subject.values())
    assert s["subjects"] == 24 and sum(v["subjects"] for v in s["splits"].values()) == 24
    assert all(v["slices"] > 0 for v in s["splits"].values())
    s = _import(tmp_path / "src", tmp_path / "ds2", shape=(8, 8), subject_from="file")
    assert s["subjects"] == 72
    assert split_of("0" * 16, (0.8, 0.1, 0.1)) == "train"
    assert split_of("f" * 16, (0.8, 0.1, 0.1)) == "test"
    assert split_of("f" * 16, (0.9, 0.1, 0.0)) == "val"


def test_salt_file_created_once_private_and_xdg(tmp_path, monkeypatch):
    Image.fromarray(np.full((8, 8), 5, np.uint8)).save(tmp_path / "a.png")
    s1 = import_dataset([tmp_path / "a.png"], tmp_path / "d1", shape=(8, 8))
    p = salt_file()
    assert p == tmp_path / "cfg" / "salt" and stat.S_IMODE(os.stat(p).st_mode) == 0o600
    salt = load_salt()
    s2 = import_dataset([tmp_path / "a.png"], tmp_path / "d2", shape=(8, 8))
    assert (tmp_path / "d1" / "manifest.json").read_bytes() == \
        (tmp_path / "d2" / "manifest.json").read_bytes()
    rec = open_dataset(tmp_path / "d1").records[0]
    assert rec["subject"] == subject_hash(salt, "dir:" + tmp_path.name)
    assert salt not in (tmp_path / "d1" / "manifest.json").read_text()
    assert s1["count"] == s2["count"] == 1
    monkeypatch.delenv("MRIPRIOR_SALT_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert salt_file() == tmp_path / "xdg" / "mriprior" / "salt"
    assert load_salt() != salt and load_salt() == load_salt()


# =============================================================================================
# determinism, broken files, atomicity

def _mixed_archive(root):
    _dicom_archive(root)
    (root / "img" / "p1").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(RNG.integers(1, 255, (20 + i, 30)).astype(np.uint8)).save(
            root / "img" / "p1" / f"{i}.png")
    nib.save(nib.Nifti1Image(_nifti_volume(), np.eye(4)), root / "vol.nii.gz")


def test_deterministic_and_workers_identical(tmp_path):
    _mixed_archive(tmp_path / "src")
    outs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    sums = [_import(tmp_path / "src", outs[0], shape=(24, 24)),
            _import(tmp_path / "src", outs[1], shape=(24, 24)),
            _import(tmp_path / "src", outs[2], shape=(24, 24), workers=2)]
    assert sums[0]["count"] == 15
    for o in outs[1:]:
        for rel in ("manifest.json", "shards/shard-00000.npy"):
            assert (outs[0] / rel).read_bytes() == (o / rel).read_bytes(), rel
    assert sorted(p.name for p in outs[0].iterdir()) == ["manifest.json", "shards"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no spool / temp left
    assert "seconds" not in json.loads((outs[0] / "manifest.json").read_text())["summary"]


def test_broken_files_skipped_with_reasons(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.full((8, 8), 5, np.uint8)).save(src / "good.png")
    (src / "trunc.png").write_bytes((src / "good.png").read_bytes()[:30])
    (src / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (src / "readme.txt").write_text("hello")
    (src / "bad.dcm").write_bytes(b"not a dicom file at all")
    with h5py.File(src / "nokspace.h5", "w") as f:
        f.create_dataset("other", data=np.zeros(3))
    (src / "lonely.cfl").write_bytes(b"\0" * 16)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "black.png")
    (src / ".hidden.png").write_bytes(b"junk")
    s = _import([src, src / "good.png"], tmp_path / "ds", shape=(8, 8))  # good.png named twice
    assert s["count"] == 1 and s["files"]["found"] == 8
    names = {os.path.basename(e["path"]): e["reason"] for e in s["skipped"]}
    assert set(names) == {"trunc.png", "bad.nii.gz", "readme.txt", "bad.dcm", "nokspace.h5",
                          "lonely.cfl", "black.png"}
    assert "unrecognised format" in names["readme.txt"]
    assert names["nokspace.h5"].startswith("no 'kspace' dataset")  # path stripped
    assert "empty-slice" in names["black.png"]
    assert all("\n" not in r for r in names.values())
    details = {os.path.basename(e["path"]): e["detail"] for e in s["skipped"]}
    assert "DICM" in details["bad.dcm"] and "trunc.png" not in details["trunc.png"]
    m = _manifest(tmp_path / "ds")
    assert len(m["summary"]["skipped"]) == 7 and str(src) not in json.dumps(m)


def test_interrupt_leaves_no_output(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8), i + 1, np.uint8)).save(src / f"{i}.png")
    calls = []
    real = mriprior.io.images.read_image

    def flaky(path):
        calls.append(path)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(mriprior.io.images, "read_image", flaky)
    out = tmp_path / "out" / "ds"
    with pytest.raises(KeyboardInterrupt):
        _import(src, out, shape=(8, 8))
    assert not out.exists() and not list((tmp_path / "out").glob("*"))  # no parent left either
    # an existing dataset survives a failed re-import with overwrite
    monkeypatch.setattr(mriprior.io.images, "read_image", real)
    _import(src, out, shape=(8, 8))
    before = (out / "manifest.json").read_bytes()
    calls.clear()
    monkeypatch.setattr(mriprior.io.images, "read_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        _import(src, out, shape=(8, 8), overwrite=True)
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ds"]


def test_option_errors(tmp_path):
    Image.fromarray(np.full((8, 8), 5, np.uint8)).save(tmp_path / "a.png")
    for kw, match in (({"shape": (0, 8)}, "shape"), ({"resize": "zoom"}, "resize"),
                      ({"split": (0.5, 0.5, 0.5)}, "split"), ({"axes": ("w",)}, "axes"),
                      ({"workers": 0}, "workers"), ({"min_signal": 1.5}, "min_signal")):
        with pytest.raises(InputError, match=match):
            _import(tmp_path / "a.png", tmp_path / "ds", **kw)
    with pytest.raises(InputError, match="no sources"):
        import_dataset([], tmp_path / "ds")
    with pytest.raises(InputError, match="not found"):
        _import(tmp_path / "missing", tmp_path / "ds")
    (tmp_path / "ds").mkdir()
    with pytest.raises(InputError, match="already exists"):
        _import(tmp_path / "a.png", tmp_path / "ds")


# =============================================================================================
# CLI

def _cli(*argv):
    """``mriprior data import ARGV``, parsed and run as mriprior.cli.main does (exit code)."""
    p = _Parser(prog="mriprior data import", description=data_import.__doc__)
    data_import.add_arguments(p)
    try:
        args = p.parse_args([str(a) for a in argv])
        data_import.run(args)
    except SystemExit as e:
        return e.code
    except InputError:
        return 2
    return 0


def test_cli_exit_codes(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.full((8, 8), 5, np.uint8)).save(src / "a.png")
    (src / "b.txt").write_text("x")
    assert _cli(src, "--out", tmp_path / "ds", "--shape", 16, 16, "--salt", "s") == 0
    out = capsys.readouterr().out
    assert "imported 1 slices" in out and "b.txt" in out
    assert "near-duplicates: 0 groups; no val / test slice has one in train" in out
    assert open_dataset(tmp_path / "ds").shape == (16, 16)
    assert _cli(src, "--out", tmp_path / "ds") == 2                      # exists, no --force
    assert _cli(src, "--out", tmp_path / "ds", "--force", "--normalize", "p99") == 0
    assert _cli("--out", tmp_path / "x") == 2                            # no sources
    assert _cli(src, "--out", tmp_path / "x", "--shape", 0, 5) == 2       # bad shape
    assert _cli(src / "b.txt", "--out", tmp_path / "x") == 2              # nothing importable
    assert _cli(src, "--out", tmp_path / "x", "--resize", "zoom") == 2    # argparse choice
    assert not (tmp_path / "x").exists()


def test_cli_reports_split_leakage(tmp_path, capsys):
    # one image under a name in every subject's folder (as archives re-export slices), beside
    # each subject's own image: the held-out subjects' copies have a twin in train
    g = np.random.default_rng(0)
    shared = (g.random((16, 16)) * 255).astype(np.uint8)
    for k in range(12):
        (tmp_path / "src" / f"s{k}").mkdir(parents=True)
        Image.fromarray(shared).save(tmp_path / "src" / f"s{k}" / "copy.png")
        Image.fromarray((g.random((16, 16)) * 255).astype(np.uint8)).save(
            tmp_path / "src" / f"s{k}" / "own.png")
    args = (tmp_path / "src", "--shape", 16, 16, "--salt", "s", "--split", 0.5, 0.25, 0.25)
    assert _cli(*args, "--out", tmp_path / "ds") == 0
    out = capsys.readouterr().out
    split = [r["split"] for r in open_dataset(tmp_path / "ds").records]
    held = {s: split.count(s) // 2 for s in ("val", "test")}  # one copy per held-out subject
    assert held["val"] and held["test"]
    assert (f"held-out slices with a near-duplicate in train: val {held['val']} of "
            f"{2 * held['val']}, test {held['test']} of {2 * held['test']} (1 groups") in out
    assert _cli(*args, "--out", tmp_path / "ds2", "--no-dedup-check") == 0
    assert "near-duplicate" not in capsys.readouterr().out
    assert _cli(*args, "--out", tmp_path / "ds3", "--dedup-check-max", 10) == 0
    assert "near-duplicate check skipped (24 slices > --dedup-check-max 10)" in (
        capsys.readouterr().out)


def test_cli_through_main(tmp_path, capsys):
    from mriprior.cli.main import main

    Image.fromarray(np.full((8, 8), 5, np.uint8)).save(tmp_path / "a.png")
    assert main(["data", "import", str(tmp_path / "a.png"), "--out", str(tmp_path / "ds"),
                 "--shape", "8", "8", "--split", "1", "0", "0"]) == 0
    assert main(["data", "import", "--out", str(tmp_path / "ds2")]) == 2
    assert "no SRC given" in capsys.readouterr().err
