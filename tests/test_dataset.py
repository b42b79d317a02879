"""The on-disk dataset format: round trip, sharding, atomic writes, validation."""

import json

import numpy as np
import pytest

from mriprior.data.dataset import DatasetWriter, open_dataset
from mriprior.errors import InputError


def write(path, n=7, kind="magnitude", shard=3, **kw):
    rng = np.random.default_rng(0)
    imgs = []
    with DatasetWriter(path, kind, (6, 5), shard_size=shard, **kw) as w:
        for i in range(n):
            a = rng.random((6, 5)).astype(np.float32)
            if kind == "complex":
                a = (a * np.exp(1j * rng.random((6, 5)))).astype(np.complex64)
            imgs.append(a)
            w.add(a, {"source": f"f{i}", "subject": f"s{i % 2}", "index": i,
                      "split": "test" if i % 2 else "train"})
    return imgs


@pytest.mark.parametrize("kind", ["magnitude", "complex"])
def test_round_trip_across_shards(tmp_path, kind):
    imgs = write(tmp_path / "ds", kind=kind)
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 7 and ds.kind == kind and ds.shape == (6, 5)
    assert len(ds.manifest["shards"]) == 3  # 3 + 3 + 1
    for i, a in enumerate(imgs):
        assert np.array_equal(ds[i], a)
    assert isinstance(ds[0].base, np.memmap) or isinstance(ds[0], np.memmap)
    assert list(ds.indices("test")) == [1, 3, 5]
    assert ds.records[4]["source"] == "f4"
    with pytest.raises(IndexError):
        ds[7]


def test_failure_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "ds", "magnitude", (2, 2)) as w:
            w.add(np.zeros((2, 2)), {"source": "a"})
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_only_when_asked(tmp_path):
    write(tmp_path / "ds", n=2)
    with pytest.raises(InputError, match="already exists"):
        DatasetWriter(tmp_path / "ds", "magnitude", (6, 5))
    write(tmp_path / "ds", n=4, overwrite=True)
    assert len(open_dataset(tmp_path / "ds")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_writer_rejects_bad_slices(tmp_path):
    with DatasetWriter(tmp_path / "ds", "magnitude", (2, 2)) as w:
        with pytest.raises(InputError, match="shape"):
            w.add(np.zeros((3, 2)), {"source": "a"})
        with pytest.raises(InputError, match="complex"):
            w.add(np.zeros((2, 2), np.complex64), {"source": "b"})
        with pytest.raises(InputError, match="NaN"):
            w.add(np.full((2, 2), np.nan), {"source": "c"})
        with pytest.raises(InputError, match="split"):
            w.add(np.zeros((2, 2)), {"source": "d", "split": "holdout"})
    with pytest.raises(InputError, match="kind"):
        DatasetWriter(tmp_path / "x", "phase", (2, 2))


def test_reader_validates(tmp_path):
    with pytest.raises(InputError, match="not an mriprior dataset"):
        open_dataset(tmp_path)
    write(tmp_path / "ds")
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    m["count"] = 8
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="count"):
        open_dataset(tmp_path / "ds")
    m["count"] = 7
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(m))
    np.save(tmp_path / "ds" / "shards" / "shard-00001.npy", np.zeros((3, 6, 4), np.float32))
    with pytest.raises(InputError, match="shard-00001"):
        open_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        open_dataset(tmp_path / "ds")
