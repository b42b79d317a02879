"""Near-duplicate detection and deduplication of datasets (mriprior.data.dedup)."""

import numpy as np
import pytest

from mriprior.cli.main import main
from mriprior.data.dataset import DatasetWriter, open_dataset
from mriprior.data.dedup import dedup_dataset, fingerprints, leakage, near_duplicate_groups
from mriprior.errors import InputError


def _images(n, shape=(48, 40), seed=0):
    """Distinct smooth random images (low-pass noise), so unrelated slices correlate weakly."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = np.zeros(shape, complex)
        k[:6, :6] = g.standard_normal((6, 6)) + 1j * g.standard_normal((6, 6))
        out.append(np.abs(np.fft.ifft2(k)).astype(np.float32) + 0.1)
    return out


def _write(path, items, kind="magnitude"):
    with DatasetWriter(path, kind, items[0][0].shape, shard_size=3) as w:
        for i, (img, split) in enumerate(items):
            w.add(img.astype(np.complex64 if kind == "complex" else np.float32),
                  {"source": f"s{i}", "split": split})


@pytest.fixture
def leaky(tmp_path):
    """Slices 0-5 distinct; 6 = 2 rescaled + offset (test copy of a train slice), 7 = 3 with a
    little noise (val copy of a train slice), 8 = 6 again (second test copy: one group of 2, 6,
    8), 9 = 4 shifted by a pixel (a neighbour, below the threshold)."""
    a = _images(6)
    g = np.random.default_rng(1)
    items = [(a[0], "train"), (a[1], "train"), (a[2], "train"), (a[3], "train"), (a[4], "test"),
             (a[5], "val"), (3.0 * a[2] + 0.5, "test"),
             (a[3] + 0.02 * a[3].std() * g.standard_normal(a[3].shape), "val"), (3.0 * a[2] + 0.5, "test"),
             (np.roll(a[4], 1, axis=1), "train")]
    _write(tmp_path / "d", items)
    return tmp_path / "d"


def test_fingerprints_are_scale_and_offset_free(leaky):
    ds = open_dataset(leaky)
    f = fingerprints(ds, size=8)
    assert f.shape == (10, 64)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(f[6], f[2], atol=1e-5)
    assert abs(float(f[0] @ f[1])) < 0.9


def test_groups_leakage_and_dedup(leaky, tmp_path):
    ds = open_dataset(leaky)
    groups = near_duplicate_groups(ds, threshold=0.99, size=16)
    assert [g.tolist() for g in groups] == [[2, 6, 8], [3, 7]]
    # the shifted neighbour is similar, but not a duplicate
    f = fingerprints(ds, size=16)
    assert 0.5 < float(f[4] @ f[9]) < 0.99
    assert leakage(ds, groups) == {"val": {"slices": 2, "with_train_duplicate": 1},
                                   "test": {"slices": 3, "with_train_duplicate": 2}}
    r = dedup_dataset(leaky, tmp_path / "out", threshold=0.99, size=16)
    out = open_dataset(tmp_path / "out")
    # kept: each group's first slice of its most protected split (6 for {2, 6, 8}; 7 for {3, 7})
    assert [rec["subset_of"] for rec in out.records] == [0, 1, 4, 5, 6, 7, 9]
    assert r["dropped"] == {"train": 2, "val": 0, "test": 1} and r["groups"] == 2
    assert r["splits"] == {"train": 3, "val": 2, "test": 2}
    np.testing.assert_array_equal(out[4], ds[6])
    assert out.manifest["options"]["dedup"]["threshold"] == 0.99
    # the deduplicated dataset has no near-duplicates left
    assert near_duplicate_groups(out, threshold=0.99, size=16) == []


def test_dedup_cli_and_errors(leaky, tmp_path, capsys):
    assert main(["data", "dedup", "--in", str(leaky), "--size", "16"]) == 0
    text = capsys.readouterr().out
    assert "2 groups" in text and "test: 2 of 3 slices (66.7 %)" in text
    assert not (tmp_path / "x").exists()
    assert main(["data", "dedup", "--in", str(leaky), "--size", "16", "--out",
                 str(tmp_path / "x")]) == 0
    assert len(open_dataset(tmp_path / "x")) == 7
    # complex datasets are compared by magnitude
    _write(tmp_path / "c", [(np.exp(1j * 0.3) * open_dataset(leaky)[i], s) for i, s in
                            enumerate(["train", "test"] * 5)], kind="complex")
    assert [g.tolist() for g in near_duplicate_groups(open_dataset(tmp_path / "c"), 0.99,
                                                      16)] == [[2, 6, 8], [3, 7]]
    with pytest.raises(InputError, match="threshold"):
        dedup_dataset(leaky, tmp_path / "y", threshold=1.5)
    with pytest.raises(InputError, match="exceeds the slices' shape"):
        near_duplicate_groups(open_dataset(leaky), size=64)
    assert main(["data", "dedup", "--in", str(leaky), "--size", "2"]) == 2
    assert not (tmp_path / "y").exists()
