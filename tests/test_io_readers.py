"""Readers of magnitude images and fastMRI files: DICOM, NIfTI, PNG/JPEG, fastMRI HDF5.

All inputs are written here (pydicom, nibabel, Pillow, h5py) or shipped inside pydicom.
"""

from __future__ import annotations

import gzip
import json
import random

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (EnhancedMRImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless,
                         JPEGLSLossless, MRImageStorage)

from mriprior.errors import InputError
from mriprior.io.dicom import list_dicom_series, read_dicom, read_dicom_series
from mriprior.io.fastmri import FastMRIVolume, LazyKSpace, parse_ismrmrd_header, read_fastmri
from mriprior.io.images import read_image
from mriprior.io.nifti import read_nifti

RNG = np.random.default_rng(7)


def _testdata(name):
    p = get_testdata_file(name, download=False)
    if p is None:
        pytest.skip(f"pydicom test file {name} not shipped with this pydicom")
    return p


def _raises_naming(path, fn, *args, match=None, **kw):
    with pytest.raises(InputError) as ei:
        fn(path, *args, **kw)
    msg = str(ei.value)
    assert str(path.name if hasattr(path, "name") else path) in msg, msg
    if match is not None:
        assert match in msg, msg
    return msg


# =============================================================================================
# DICOM

# Fake identifiers that must never reach the metadata.
PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "12345",
    "PatientBirthDate": "19700101",
    "PatientAddress": "42 Wallaby Way, Sydney",
    "PatientTelephoneNumbers": "555-0100",
    "OtherPatientIDs": "OTHER-ID-777",
    "InstitutionName": "St Example Hospital",
    "InstitutionAddress": "1 Hospital Road",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Quinn^Michaela",
    "OperatorsName": "Operator^Olivia",
    "StationName": "MRSTATION7",
    "DeviceSerialNumber": "SN-998877",
    "AccessionNumber": "ACC-2468",
    "StudyID": "STUDY-1357",
    "StudyDate": "20240229",
    "SeriesDate": "20240228",
    "AcquisitionDate": "20240227",
    "ContentDate": "20240226",
    "StudyTime": "101112",
    "StudyDescription": "Knee of Jane Doe",
    "SeriesDescription": "Jane Doe sagittal",
    "ProtocolName": "Doe protocol",
    "ImageComments": "call Jane on 555-0100",
    "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.555.1",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.2.1125.555.3",
}
SERIES_UID = "1.2.826.0.1.3680043.2.1125.555.2"


def _mr_dataset(pixels: np.ndarray, *, series_uid=SERIES_UID, instance=1, position=None,
                orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), photometric="MONOCHROME2",
                bits_stored=None, signed=False, slope=None, intercept=None, series_number=3,
                sop_uid=None, **extra) -> Dataset:
    """A classic MR Image Storage dataset carrying the fake identifiers above."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[None]
    n, rows, cols = pixels.shape
    sop_uid = sop_uid or f"1.2.826.0.1.3680043.2.1125.555.9.{instance}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    for k, v in PHI.items():
        setattr(ds, k, v)
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Model X"
    ds.MagneticFieldStrength = 3
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    ds.EchoTime = 11.5
    ds.RepetitionTime = 2200
    ds.FlipAngle = 90
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [0.75, 0.8]
    ds.ImageOrientationPatient = list(orientation)
    if position is not None:
        ds.ImagePositionPatient = list(position)
    ds.Rows, ds.Columns = rows, cols
    if n > 1:
        ds.NumberOfFrames = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored or 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype("<i2" if signed else "<u2").tobytes()
    return ds


def _write(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def _no_phi(meta: dict):
    text = json.dumps(meta)
    for value in list(PHI.values()) + [SERIES_UID, "Doe", "Jane", "1.2.826.0.1.3680043.2.1125"]:
        assert value not in text, f"{value!r} leaked into meta: {text}"
    for key in ("patient_name", "patientname", "patient_id", "patientid", "birth", "address",
                "institution", "physician", "operator", "station", "serial", "accession",
                "date", "time_of", "uid", "description", "comment", "protocol"):
        assert not any(key.lower() in k.lower() for k in meta), meta.keys()


def test_dicom_round_trip_values_and_meta(tmp_path):
    img = RNG.integers(0, 4096, size=(12, 10)).astype(np.uint16)
    p = _write(_mr_dataset(img, bits_stored=12, position=(1, 2, 3)), tmp_path / "one.dcm")
    frames, meta = read_dicom(p)
    assert frames.dtype == np.float32 and frames.shape == (1, 12, 10)
    np.testing.assert_array_equal(frames[0], img.astype(np.float32))
    assert meta["rows"] == 12 and meta["columns"] == 10 and meta["number_of_frames"] == 1
    assert meta["pixel_spacing_mm"] == [0.75, 0.8]
    assert meta["echo_time_ms"] == 11.5 and meta["repetition_time_ms"] == 2200.0
    assert meta["magnetic_field_strength_T"] == 3.0
    assert meta["modality"] == "MR" and meta["manufacturer_model"] == "Model X"
    assert meta["image_orientation_patient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert meta["transfer_syntax"] == "Explicit VR Little Endian"
    assert meta["inverted"] is False
    _no_phi(meta)


def test_dicom_rescale_slope_intercept(tmp_path):
    img = np.arange(-50, 70, dtype=np.int16).reshape(10, 12)
    p = _write(_mr_dataset(img, signed=True, slope=0.5, intercept=-10), tmp_path / "r.dcm")
    frames, meta = read_dicom(p)
    np.testing.assert_array_equal(frames[0], img * 0.5 - 10)
    assert meta["rescale_slope"] == 0.5 and meta["rescale_intercept"] == -10.0


def test_dicom_monochrome1_inverted(tmp_path):
    img = RNG.integers(0, 4096, size=(8, 9)).astype(np.uint16)
    p = _write(_mr_dataset(img, photometric="MONOCHROME1", bits_stored=12), tmp_path / "m1.dcm")
    frames, meta = read_dicom(p)
    np.testing.assert_array_equal(frames[0], 4095.0 - img)
    assert meta["inverted"] is True and meta["photometric_interpretation"] == "MONOCHROME1"
    # with a rescale, the inversion is about the rescaled range
    p2 = _write(_mr_dataset(img, photometric="MONOCHROME1", bits_stored=12, slope=2,
                            intercept=100), tmp_path / "m1r.dcm")
    frames2, _ = read_dicom(p2)
    np.testing.assert_array_equal(frames2[0], (2 * 4095 + 100 + 100) - (2.0 * img + 100))


def test_dicom_multiframe(tmp_path):
    vol = RNG.integers(0, 1000, size=(10, 6, 7)).astype(np.uint16)
    p = _write(_mr_dataset(vol), tmp_path / "multi.dcm")
    frames, meta = read_dicom(p)
    assert frames.shape == (10, 6, 7) and meta["number_of_frames"] == 10
    np.testing.assert_array_equal(frames, vol.astype(np.float32))
    _no_phi(meta)


def _enhanced(vol: np.ndarray, positions, slopes, path):
    """Enhanced MR multi-frame file: geometry and rescale in the functional groups."""
    n, rows, cols = vol.shape
    ds = _mr_dataset(vol)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    for kw in ("PixelSpacing", "SliceThickness", "ImageOrientationPatient", "EchoTime",
               "RepetitionTime"):
        delattr(ds, kw)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [0.5, 0.5]
    pm.SliceThickness = 3.0
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    timing = Dataset()
    timing.RepetitionTime = 500
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for pos, s in zip(positions, slopes):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = list(pos)
        pv = Dataset()
        pv.RescaleSlope = s
        pv.RescaleIntercept = 0
        echo = Dataset()
        echo.EffectiveEchoTime = 9.0
        item.PlanePositionSequence = Sequence([pp])
        item.PixelValueTransformationSequence = Sequence([pv])
        item.MREchoSequence = Sequence([echo])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    return _write(ds, path)


def test_dicom_enhanced_multiframe_functional_groups(tmp_path):
    vol = RNG.integers(0, 1000, size=(4, 5, 6)).astype(np.uint16)
    slopes = [1.0, 2.0, 0.5, 4.0]
    p = _enhanced(vol, [(0, 0, z) for z in (0, 3, 6, 9)], slopes, tmp_path / "enh.dcm")
    frames, meta = read_dicom(p)
    np.testing.assert_array_equal(frames, vol * np.array(slopes)[:, None, None])
    assert meta["pixel_spacing_mm"] == [0.5, 0.5] and meta["slice_thickness_mm"] == 3.0
    assert meta["echo_time_ms"] == 9.0 and meta["repetition_time_ms"] == 500.0
    assert meta["image_orientation_patient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    _no_phi(meta)


def test_dicom_enhanced_in_series_sorted_by_frame_position(tmp_path):
    vol = RNG.integers(0, 1000, size=(4, 5, 6)).astype(np.uint16)
    zs = [6, 0, 9, 3]  # frames stored out of order
    _enhanced(vol, [(0, 0, z) for z in zs], [1, 1, 1, 1], tmp_path / "enh.dcm")
    out, meta = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(out, vol[np.argsort(zs)])
    assert meta["slice_positions_mm"] == [0.0, 3.0, 6.0, 9.0]


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_implicit.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jp2klossless.dcm"])
def test_dicom_shipped_mr_small_all_syntaxes(name):
    ref = pydicom.dcmread(_testdata("MR_small.dcm")).pixel_array.astype(np.float32)
    p = _testdata(name)
    if name == "MR_small_jp2klossless.dcm":
        from pydicom.pixels.decoders.base import get_decoder
        if not get_decoder(JPEG2000Lossless).is_available:
            pytest.skip("no JPEG 2000 decoder installed (Pillow with openjpeg, pylibjpeg, gdcm)")
    frames, meta = read_dicom(p)
    assert frames.shape == (1, 64, 64) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames[0], ref)
    text = json.dumps(meta)
    for phi in ("CompressedSamples", "MR1", str(pydicom.dcmread(p).StudyInstanceUID)):
        assert phi not in text


@pytest.mark.parametrize("name, uid", [("MR_small_jp2klossless.dcm", JPEG2000Lossless),
                                       ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless)])
def test_dicom_undecodable_transfer_syntax(name, uid, monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder
    p = _testdata(name)
    monkeypatch.setattr(get_decoder(uid), "_available", {})  # as if no decoder were installed
    msg = _raises_naming(p, read_dicom, match=str(uid))
    assert "decoder" in msg


def test_dicom_jpeg_ls_without_plugin_real():
    from pydicom.pixels.decoders.base import get_decoder
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    _raises_naming(_testdata("MR_small_jpeg_ls_lossless.dcm"), read_dicom, match=JPEGLSLossless)


def test_dicom_colour_and_non_image_rejected(tmp_path):
    ds = _mr_dataset(np.zeros((4, 4), np.uint16))
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((4, 4, 3), np.uint8).tobytes()
    p = _write(ds, tmp_path / "colour.dcm")
    _raises_naming(p, read_dicom, match="RGB")
    _raises_naming(_testdata("rtplan.dcm"), read_dicom, match="no pixel data")
    sc = get_testdata_file("SC_rgb.dcm", download=False) or get_testdata_file(
        "SC_rgb_rle.dcm", download=False)
    if sc:
        _raises_naming(sc, read_dicom, match="colour")


def test_dicom_malformed_files(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not a dicom file" * 10)
    _raises_naming(junk, read_dicom)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    _raises_naming(empty, read_dicom)
    _raises_naming(tmp_path / "missing.dcm", read_dicom, match="not found")
    _raises_naming(tmp_path, read_dicom, match="directory")
    # truncated pixel data
    good = _write(_mr_dataset(np.ones((16, 16), np.uint16)), tmp_path / "good.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(good.read_bytes()[:-100])
    _raises_naming(cut, read_dicom)
    _raises_naming(_testdata("MR_truncated.dcm"), read_dicom)


def _series_files(tmp_path, n=6, spacing=2.5, normal_axis="z", series_uid=SERIES_UID,
                  series_number=3, prefix="im", positions=True):
    """n slices; slice k has constant value 100 + k and lies at k * spacing along the normal."""
    if normal_axis == "z":
        orient = (1, 0, 0, 0, 1, 0)
        pos = lambda k: (-10.0, -20.0, 5.0 + k * spacing)  # noqa: E731
    else:  # sagittal: rows along y, columns along -z, normal = -x... use the cross product
        orient = (0, 1, 0, 0, 0, -1)
        pos = lambda k: (-k * spacing + 30.0, -20.0, 40.0)  # noqa: E731
    order = list(range(n))
    random.Random(3).shuffle(order)
    paths = []
    for file_i, k in enumerate(order):
        # InstanceNumber deliberately disagrees with position order
        ds = _mr_dataset(np.full((5, 4), 100 + k, np.uint16), series_uid=series_uid,
                         instance=n - k, position=pos(k) if positions else None,
                         orientation=orient, series_number=series_number,
                         sop_uid=f"1.2.826.0.1.3680043.2.1125.555.{series_number}.{k}")
        paths.append(_write(ds, tmp_path / f"{prefix}{file_i:03d}.dcm"))
    return paths


@pytest.mark.parametrize("normal_axis", ["z", "x"])
def test_dicom_series_sorted_by_position(tmp_path, normal_axis):
    _series_files(tmp_path, n=7, normal_axis=normal_axis)
    (tmp_path / "README.txt").write_text("not dicom")
    vol, meta = read_dicom_series(tmp_path)
    assert vol.shape == (7, 5, 4) and vol.dtype == np.float32
    # axial: slice k at z = 5 + 2.5k; sagittal: normal = row x col = (0,1,0) x (0,0,-1) =
    # (-1,0,0) and slice k at x = 30 - 2.5k, i.e. at -30 + 2.5k along the normal.
    # Files are named in shuffled order and InstanceNumber runs backwards, so only sorting by
    # position gives 100, 101, ...
    np.testing.assert_array_equal(vol[:, 0, 0], 100 + np.arange(7))
    assert meta["sorted_by"] == "image_position"
    assert meta["slice_spacing_mm"] == pytest.approx(2.5)
    assert meta["n_slices"] == 7 and meta["n_files"] == 7 and meta["skipped_files"] == 1
    _no_phi(meta)


def test_dicom_series_fallback_instance_number(tmp_path):
    _series_files(tmp_path, n=5, positions=False)
    vol, meta = read_dicom_series(tmp_path)
    assert meta["sorted_by"] == "instance_number"
    # InstanceNumber runs against position (instance of value 100 + k is 5 - k)
    np.testing.assert_array_equal(vol[:, 0, 0], [104, 103, 102, 101, 100])
    _no_phi(meta)


def test_dicom_series_grouping_and_selection(tmp_path):
    _series_files(tmp_path, n=4, series_uid=SERIES_UID, series_number=3, prefix="a")
    _series_files(tmp_path, n=3, series_uid=SERIES_UID + ".9", series_number=4, prefix="b")
    msg = _raises_naming(tmp_path, read_dicom_series, match="series_number=3")
    assert "series_number=4" in msg and "Doe" not in msg
    summaries = list_dicom_series(tmp_path)
    assert [(s["series_number"], s["n_files"]) for s in summaries] == [(3, 4), (4, 3)]
    _no_phi({"s": summaries})
    v3, m3 = read_dicom_series(tmp_path, series=3)
    v4, m4 = read_dicom_series(tmp_path, series=4)
    assert v3.shape[0] == 4 and v4.shape[0] == 3
    np.testing.assert_array_equal(v4[:, 0, 0], [100, 101, 102])  # by position, not instance
    assert m4["series_number"] == 4
    _raises_naming(tmp_path, read_dicom_series, series=9, match="series_number=9")


def test_dicom_series_errors(tmp_path):
    _raises_naming(tmp_path, read_dicom_series, match="no DICOM image files")
    _raises_naming(tmp_path / "nope", read_dicom_series, match="not found")
    f = _write(_mr_dataset(np.ones((4, 4), np.uint16)), tmp_path / "x.dcm")
    _raises_naming(f, read_dicom_series, match="not a directory")
    # a slice of the wrong size is named
    _write(_mr_dataset(np.ones((6, 4), np.uint16), instance=2, position=(0, 0, 1),
                       sop_uid="1.2.3.4.5.6.2"), tmp_path / "odd.dcm")
    with pytest.raises(InputError, match=r"odd\.dcm|x\.dcm") as ei:
        read_dicom_series(tmp_path)
    assert "differs" in str(ei.value)
    # a truncated file in the series is named
    d = tmp_path / "trunc"
    d.mkdir()
    paths = _series_files(d, n=3)
    paths[1].write_bytes(paths[1].read_bytes()[:-30])
    with pytest.raises(InputError, match=paths[1].name):
        read_dicom_series(d)


# =============================================================================================
# NIfTI

@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path, suffix):
    vol = RNG.standard_normal((5, 6, 7)).astype(np.float32)
    aff = np.diag([0.5, 0.6, 2.0, 1.0])
    aff[:3, 3] = [-10, 20, 5]
    p = tmp_path / f"v{suffix}"
    nib.Nifti1Image(vol, aff).to_filename(p)
    out, meta = read_nifti(p)
    assert out.dtype == np.float32 and out.shape == (5, 6, 7)
    np.testing.assert_array_equal(out, vol)
    np.testing.assert_allclose(meta["affine"], aff)
    assert meta["voxel_sizes_mm"] == pytest.approx([0.5, 0.6, 2.0])
    assert meta["orientation"] == meta["original_orientation"] == "RAS"
    json.dumps(meta)


def test_nifti_4d_and_2d(tmp_path):
    vol = RNG.standard_normal((3, 4, 5, 2)).astype(np.float32)
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header.set_zooms((1, 1, 1, 1.5))
    img.to_filename(tmp_path / "t.nii.gz")
    out, meta = read_nifti(tmp_path / "t.nii.gz")
    np.testing.assert_array_equal(out, vol)
    assert meta["tr"] == 1.5
    flat = RNG.standard_normal((4, 5)).astype(np.float32)
    nib.Nifti1Image(flat, np.eye(4)).to_filename(tmp_path / "f.nii")
    out2, _ = read_nifti(tmp_path / "f.nii")
    assert out2.shape == (4, 5, 1)
    np.testing.assert_array_equal(out2[..., 0], flat)


def test_nifti_scaling_applied(tmp_path):
    raw = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    p = tmp_path / "s.nii"
    nib.Nifti1Image(raw, np.eye(4)).to_filename(p)
    b = bytearray(p.read_bytes())  # scl_slope at byte 112, scl_inter at 116 (NIfTI-1)
    b[112:120] = np.array([2.0, -3.0], "<f4").tobytes()
    p.write_bytes(bytes(b))
    out, meta = read_nifti(p)
    np.testing.assert_array_equal(out, raw * 2.0 - 3.0)
    assert meta["datatype"] == "int16"


def test_nifti_flipped_affine_to_ras(tmp_path):
    vol = RNG.standard_normal((4, 5, 6)).astype(np.float32)
    aff = np.diag([-2.0, 1.0, 3.0, 1.0])  # axis 0 runs towards Left (LAS)
    aff[:3, 3] = [30, -10, 0]
    p = tmp_path / "las.nii.gz"
    nib.Nifti1Image(vol, aff).to_filename(p)
    out, meta = read_nifti(p)
    assert meta["original_orientation"] == "LAS" and meta["orientation"] == "RAS"
    np.testing.assert_array_equal(out, vol[::-1])
    A = np.array(meta["affine"])
    assert np.all(np.diag(A)[:3] > 0)
    # the same world point for the same voxel value: voxel (0,0,0) of out is voxel (3,0,0) in
    np.testing.assert_allclose(A @ [0, 0, 0, 1], aff @ [3, 0, 0, 1])
    raw, meta_raw = read_nifti(p, canonical=False)
    np.testing.assert_array_equal(raw, vol)
    assert meta_raw["orientation"] == "LAS"


def test_nifti_permuted_axes_to_ras(tmp_path):
    vol = RNG.standard_normal((3, 4, 5, 2)).astype(np.float32)
    # i -> Superior, j -> Right, k -> Posterior ("SRP")
    aff = np.array([[0, 1.5, 0, 0], [0, 0, -2.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    p = tmp_path / "perm.nii"
    nib.Nifti1Image(vol, aff).to_filename(p)
    out, meta = read_nifti(p)
    assert meta["original_orientation"] == "SRP" and meta["orientation"] == "RAS"
    expected = vol.transpose(1, 2, 0, 3)[:, ::-1]  # (R=j, A=-k, S=i, t)
    np.testing.assert_array_equal(out, expected)
    assert meta["voxel_sizes_mm"] == pytest.approx([1.5, 2.0, 1.0])
    assert meta["shape"] == [4, 5, 3, 2]


def test_nifti_malformed(tmp_path):
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"\x00" * 10 + b"garbage" * 100)
    _raises_naming(junk, read_nifti)
    vol = RNG.standard_normal((8, 8, 8)).astype(np.float32)
    good = tmp_path / "good.nii"
    nib.Nifti1Image(vol, np.eye(4)).to_filename(good)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(good.read_bytes()[:-500])
    _raises_naming(cut, read_nifti, match="truncated")
    gz = tmp_path / "gz.nii.gz"
    gz.write_bytes(gzip.compress(good.read_bytes())[:-200])
    _raises_naming(gz, read_nifti)
    notgz = tmp_path / "fake.nii.gz"
    notgz.write_bytes(good.read_bytes())  # plain bytes under a .gz name
    _raises_naming(notgz, read_nifti)
    txt = tmp_path / "volume.txt"
    txt.write_text("hello")
    _raises_naming(txt, read_nifti)
    _raises_naming(tmp_path / "missing.nii", read_nifti, match="not found")
    cplx = tmp_path / "complex.nii"
    nib.Nifti1Image(vol.astype(np.complex64), np.eye(4)).to_filename(cplx)
    _raises_naming(cplx, read_nifti, match="complex")
    five = tmp_path / "five.nii"
    nib.Nifti1Image(np.zeros((2, 2, 2, 2, 3), np.float32), np.eye(4)).to_filename(five)
    _raises_naming(five, read_nifti, match="4")


# =============================================================================================
# PNG / JPEG

def test_png_16bit_round_trip(tmp_path):
    img = RNG.integers(0, 65536, size=(17, 23)).astype(np.uint16)
    img[0, 0], img[-1, -1] = 0, 65535
    p = tmp_path / "g16.png"
    Image.fromarray(img).save(p)
    with Image.open(p) as check:  # really a 16-bit file
        assert check.mode.startswith("I")
    out, meta = read_image(p)
    assert out.dtype == np.float32 and out.shape == (17, 23)
    np.testing.assert_array_equal(out, img.astype(np.float32))
    assert meta["bit_depth"] == 16 and meta["max_value"] == 65535.0
    assert meta["format"] == "PNG" and meta["converted"] is None


def test_png_8bit_round_trip(tmp_path):
    img = RNG.integers(0, 256, size=(9, 11)).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "g8.png")
    out, meta = read_image(tmp_path / "g8.png")
    np.testing.assert_array_equal(out, img)
    assert meta["bit_depth"] == 8 and meta["max_value"] == 255.0


def test_rgb_to_luminance(tmp_path):
    rgb = RNG.integers(0, 256, size=(6, 7, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out, meta = read_image(tmp_path / "c.png")
    expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert meta["converted"] == "rgb_to_luminance"
    assert meta["luminance_weights"] == [0.299, 0.587, 0.114]
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "ca.png")
    np.testing.assert_allclose(read_image(tmp_path / "ca.png")[0], expected, rtol=1e-6)


def test_palette_images(tmp_path):
    idx = RNG.integers(0, 4, size=(5, 6)).astype(np.uint8)
    gray = Image.fromarray(idx, mode="P")
    gray.putpalette([0, 0, 0, 80, 80, 80, 160, 160, 160, 255, 255, 255])
    gray.save(tmp_path / "pg.png")
    out, meta = read_image(tmp_path / "pg.png")
    np.testing.assert_array_equal(out, np.array([0, 80, 160, 255])[idx])
    assert meta["converted"] == "palette_to_gray" and meta["mode"] == "P"
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]])
    col = Image.fromarray(idx, mode="P")
    col.putpalette(colours.ravel().tolist())
    col.save(tmp_path / "pc.png")
    out, meta = read_image(tmp_path / "pc.png")
    np.testing.assert_allclose(out, (colours @ [0.299, 0.587, 0.114])[idx], rtol=1e-6)
    assert meta["converted"] == "palette_to_luminance"


def test_jpeg_gray_and_exif_orientation(tmp_path):
    img = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (8, 1))
    Image.fromarray(img).save(tmp_path / "g.jpg", quality=100)
    out, meta = read_image(tmp_path / "g.jpg")
    assert out.shape == (8, 16) and meta["format"] == "JPEG" and meta["bit_depth"] == 8
    assert np.abs(out - img).max() <= 4  # lossy
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(img).save(tmp_path / "r.jpg", quality=100, exif=exif)
    out, meta = read_image(tmp_path / "r.jpg")
    assert out.shape == (16, 8) and meta["exif_orientation"] == 6
    assert np.abs(out - np.rot90(img, -1)).max() <= 4


def test_image_malformed(tmp_path):
    img = RNG.integers(0, 65536, size=(64, 64)).astype(np.uint16)
    good = tmp_path / "good.png"
    Image.fromarray(img).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    _raises_naming(cut, read_image)
    corrupt = tmp_path / "crc.png"
    b = bytearray(good.read_bytes())
    b[100] ^= 0xFF  # inside IDAT: CRC mismatch
    corrupt.write_bytes(bytes(b))
    _raises_naming(corrupt, read_image)
    jpg = tmp_path / "good.jpg"
    Image.fromarray((img >> 8).astype(np.uint8)).save(jpg)
    cutj = tmp_path / "cut.jpg"
    cutj.write_bytes(jpg.read_bytes()[:200])
    _raises_naming(cutj, read_image)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    _raises_naming(junk, read_image)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _raises_naming(empty, read_image)
    _raises_naming(tmp_path / "missing.png", read_image, match="not found")
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 128)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    _raises_naming(tmp_path / "anim.gif", read_image, match="2 frames")


# =============================================================================================
# fastMRI

FAKE_IDS = ("Doe^Jane", "PID-98765", "St Example Hospital", "MRSTATION7", "20240229",
            "1.3.12.2.1107.5.2.19.555", "meas_MID00042", "sha256-patienthash")

HEADER_XML = f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">
  <subjectInformation>
    <patientName>{FAKE_IDS[0]}</patientName>
    <patientWeight_kg>70</patientWeight_kg>
    <patientID>{FAKE_IDS[1]}</patientID>
    <patientGender>F</patientGender>
  </subjectInformation>
  <studyInformation>
    <studyDate>{FAKE_IDS[4][:4]}-{FAKE_IDS[4][4:6]}-{FAKE_IDS[4][6:]}</studyDate>
    <studyTime>10:11:12</studyTime>
  </studyInformation>
  <measurementInformation>
    <measurementID>{FAKE_IDS[6]}</measurementID>
    <patientPosition>FFS</patientPosition>
    <protocolName>AX T2 FS Jane</protocolName>
    <frameOfReferenceUID>{FAKE_IDS[5]}</frameOfReferenceUID>
  </measurementInformation>
  <acquisitionSystemInformation>
    <systemVendor>SIEMENS</systemVendor>
    <systemModel>Skyra</systemModel>
    <systemFieldStrength_T>2.893620</systemFieldStrength_T>
    <relativeReceiverNoiseBandwidth>0.793000</relativeReceiverNoiseBandwidth>
    <receiverChannels>4</receiverChannels>
    <institutionName>{FAKE_IDS[2]}</institutionName>
    <stationName>{FAKE_IDS[3]}</stationName>
  </acquisitionSystemInformation>
  <experimentalConditions>
    <H1resonanceFrequency_Hz>123259810</H1resonanceFrequency_Hz>
  </experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>32</x><y>20</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280.000000</x><y>140.000000</y><z>4.500000</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>16</x><y>16</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140.000000</x><y>140.000000</y><z>3.000000</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>17</maximum><center>9</center>
      </kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center>
      </kspace_encoding_step_2>
      <average><minimum>0</minimum><maximum>0</maximum><center>0</center></average>
      <slice><minimum>0</minimum><maximum>2</maximum><center>0</center></slice>
      <contrast><minimum>0</minimum><maximum>0</maximum><center>0</center></contrast>
      <repetition><minimum>0</minimum><maximum>0</maximum><center>0</center></repetition>
    </encodingLimits>
    <parallelImaging>
      <accelerationFactor>
        <kspace_encoding_step_1>1</kspace_encoding_step_1>
        <kspace_encoding_step_2>1</kspace_encoding_step_2>
      </accelerationFactor>
      <calibrationMode>other</calibrationMode>
    </parallelImaging>
  </encoding>
  <sequenceParameters>
    <TR>2750.000000</TR>
    <TE>27.000000</TE>
    <TI>100.000000</TI>
    <flipAngle_deg>150.000000</flipAngle_deg>
    <sequence_type>TurboSpinEcho</sequence_type>
    <echo_spacing>9.000000</echo_spacing>
  </sequenceParameters>
</ismrmrdHeader>
"""


def _fastmri_file(path, multicoil=True, n_slices=3, coils=4, ny=20, nx=32, header=True,
                  kspace=True, extra=None):
    shape = (n_slices, coils, ny, nx) if multicoil else (n_slices, ny, nx)
    k = (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)
    recon = RNG.random((n_slices, 16, 16)).astype(np.float32)
    with h5py.File(path, "w") as f:
        if kspace:
            f.create_dataset("kspace", data=k, chunks=(1,) + shape[1:])
        if header:
            f.create_dataset("ismrmrd_header", data=np.bytes_(HEADER_XML.encode()))
        f.create_dataset("reconstruction_rss" if multicoil else "reconstruction_esc", data=recon)
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = np.float64(0.000321)
        f.attrs["norm"] = np.float64(0.0123)
        f.attrs["patient_id"] = FAKE_IDS[7]
        for key, value in (extra or {}).items():
            f.create_dataset(key, data=value)
    return k, recon


def test_fastmri_multicoil(tmp_path):
    p = tmp_path / "file1000001.h5"
    k, recon = _fastmri_file(p)
    with read_fastmri(p) as vol:
        assert isinstance(vol, FastMRIVolume) and isinstance(vol.kspace, LazyKSpace)
        assert vol.multicoil and vol.shape == (3, 4, 20, 32) and len(vol) == 3
        s1 = vol.kspace[1]
        assert s1.dtype == np.complex64 and s1.shape == (4, 20, 32)
        np.testing.assert_array_equal(s1, k[1])
        np.testing.assert_array_equal(vol.slice(-1), k[-1])
        np.testing.assert_array_equal(vol.kspace[::2], k[::2])
        for unsupported in ([2, 0], np.ones(3, bool), slice(None, None, -1), 1.0):
            with pytest.raises(IndexError):
                vol.kspace[unsupported]
        np.testing.assert_array_equal(vol.kspace[1, 2:, :5], k[1, 2:, :5])
        np.testing.assert_array_equal(vol.kspace[..., 0], k[..., 0])
        np.testing.assert_array_equal(np.asarray(vol.kspace), k)
        with pytest.raises(IndexError):
            vol.kspace[3]
        np.testing.assert_array_equal(vol.reconstruction_rss, recon)
        assert vol.reconstruction_esc is None and vol.mask is None
        assert vol.attrs == {"acquisition": "CORPD_FBK", "max": 0.000321, "norm": 0.0123}
        h = vol.header
        assert h == {"encoded_matrix": [32, 20, 1], "encoded_fov_mm": [280.0, 140.0, 4.5],
                     "recon_matrix": [16, 16, 1], "recon_fov_mm": [140.0, 140.0, 3.0]}
        text = json.dumps([vol.header, vol.attrs])
        for fake in FAKE_IDS + ("patient", "FFS", "Jane"):
            assert fake not in text, fake
    with pytest.raises(InputError, match="closed"):
        vol.kspace[0]


def test_fastmri_lazy_reads_only_requested_slice(tmp_path, monkeypatch):
    p = tmp_path / "lazy.h5"
    k, _ = _fastmri_file(p, n_slices=5)
    reads = []
    orig = h5py.Dataset.__getitem__

    def spy(self, sel, *a, **kw):
        if self.name == "/kspace":
            reads.append(sel)
        return orig(self, sel, *a, **kw)

    vol = read_fastmri(p)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    np.testing.assert_array_equal(vol.kspace[3], k[3])
    assert reads == [3]
    vol.close()


def test_fastmri_singlecoil_and_loaded(tmp_path):
    p = tmp_path / "single.h5"
    k, recon = _fastmri_file(p, multicoil=False,
                             extra={"mask": np.array([0, 1, 1, 0] * 8, np.float32)})
    vol = read_fastmri(p, lazy=False)
    assert isinstance(vol.kspace, np.ndarray) and not vol.multicoil
    assert vol.kspace.shape == (3, 1, 20, 32) and vol.kspace.dtype == np.complex64
    np.testing.assert_array_equal(vol.kspace[:, 0], k)
    np.testing.assert_array_equal(vol.reconstruction_esc, recon)
    assert vol.reconstruction_rss is None
    assert vol.mask.dtype == bool and vol.mask.sum() == 16
    vol.close()
    np.testing.assert_array_equal(vol.slice(2), k[2][None])  # still there: loaded
    with read_fastmri(p) as lazy:
        assert lazy.kspace.shape == (3, 1, 20, 32)
        np.testing.assert_array_equal(lazy.kspace[1], k[1][None])
        np.testing.assert_array_equal(lazy.kspace[0:2], k[0:2, None])


def test_fastmri_without_header(tmp_path):
    p = tmp_path / "nohdr.h5"
    _fastmri_file(p, header=False)
    with read_fastmri(p) as vol:
        assert vol.header == {}


def test_fastmri_malformed(tmp_path):
    p = tmp_path / "nokspace.h5"
    _fastmri_file(p, kspace=False)
    _raises_naming(p, read_fastmri, match="'kspace'")
    real = tmp_path / "real.h5"
    with h5py.File(real, "w") as f:
        f["kspace"] = np.zeros((2, 4, 4), np.float32)
    _raises_naming(real, read_fastmri, match="complex")
    bad_shape = tmp_path / "shape.h5"
    with h5py.File(bad_shape, "w") as f:
        f["kspace"] = np.zeros((4, 4), np.complex64)
    _raises_naming(bad_shape, read_fastmri, match="(4, 4)")
    group = tmp_path / "group.h5"
    with h5py.File(group, "w") as f:
        f.create_group("kspace")
    _raises_naming(group, read_fastmri, match="group")
    bad_xml = tmp_path / "xml.h5"
    with h5py.File(bad_xml, "w") as f:
        f["kspace"] = np.zeros((1, 4, 4), np.complex64)
        f["ismrmrd_header"] = np.bytes_(b"<ismrmrdHeader><encoding>")
    _raises_naming(bad_xml, read_fastmri, match="ismrmrd_header")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 100)
    _raises_naming(junk, read_fastmri)
    _raises_naming(tmp_path / "missing.h5", read_fastmri, match="not found")


def test_parse_ismrmrd_header_without_namespace():
    xml = HEADER_XML.replace(' xmlns="http://www.ismrm.org/ISMRMRD"', "")
    assert parse_ismrmrd_header(xml)["recon_matrix"] == [16, 16, 1]
    with pytest.raises(InputError, match="not <ismrmrdHeader>"):
        parse_ismrmrd_header("<other/>", name="x.h5")


def test_read_image_bytes_matches_read_image(tmp_path):
    from PIL import Image

    from mriprior.io.images import read_image, read_image_bytes

    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=90)
    a, meta_a = read_image(tmp_path / "c.jpg")
    b, meta_b = read_image_bytes((tmp_path / "c.jpg").read_bytes(), "c.jpg")
    assert np.array_equal(a, b) and meta_a == meta_b
    assert meta_b["converted"] == "rgb_to_luminance" and b.shape == (9, 7)
    with pytest.raises(InputError, match="blob: not an image file"):
        read_image_bytes(b"not an image", "blob")
