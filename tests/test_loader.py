"""Tests of mriprior.data.loader: items, keyed augmentation, order, sharding, resume, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mriprior.data.dataset import DatasetWriter, open_dataset
from mriprior.data.loader import (EpochBatchSampler, LoaderState, SliceDataset, epoch_order,
                                  make_loader)
from mriprior.errors import InputError

Y, X = 12, 16
N = 40
CROP = (5, 7)


def _image(i: int) -> np.ndarray:
    """Slice i: real part in [i, i + 0.9) (so floor(min) = i), asymmetric in y and x."""
    yy, xx = np.mgrid[:Y, :X]
    pattern = (yy * X + xx) / (Y * X)
    return (i + 0.9 * pattern + 1j * (xx - 2.0 * yy)).astype(np.complex64)


def _split(i: int) -> str:
    return "val" if i % 5 == 1 else "test" if i % 7 == 3 else "train"


def _write(path, kind, count=N, split=_split):
    with DatasetWriter(path, kind, (Y, X), shard_size=9) as w:
        for i in range(count):
            im = _image(i)
            w.add(im if kind == "complex" else im.real.copy(), {"source": f"s{i}",
                                                                 "split": split(i)})
    return path


@pytest.fixture(scope="module")
def cplx(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("loader") / "complex", "complex")


@pytest.fixture(scope="module")
def mag(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("loader") / "magnitude", "magnitude")


def _ids(batch: torch.Tensor) -> list[int]:
    """Source slice of each item of a complex-channel batch (see _image)."""
    return torch.floor(batch[:, 0].amin(dim=(-2, -1))).long().tolist()


def _run(dataset, steps, **kw) -> list[torch.Tensor]:
    kw.setdefault("num_workers", 0)
    return list(make_loader(dataset, total_steps=steps, **kw))


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _reference(src: np.ndarray, aug, crop) -> np.ndarray:
    """The crop window of the (possibly) flipped full slice."""
    ref = src[::-1] if aug.flip_y else src
    ref = ref[:, ::-1] if aug.flip_x else ref
    return ref[aug.oy:aug.oy + crop[0], aug.ox:aug.ox + crop[1]]


# -- items -------------------------------------------------------------------------------------

def test_item_shapes_dtypes_and_channels(cplx, mag):
    src = open_dataset(cplx)
    c = SliceDataset(cplx, flips=False)
    m = SliceDataset(cplx, flips=False, channels="magnitude")
    i = 3
    j = c.source_index(i)
    assert c[i].shape == (2, Y, X) and c[i].dtype == torch.float32
    assert m[i].shape == (1, Y, X) and m[i].dtype == torch.float32
    np.testing.assert_array_equal(c[i][0].numpy(), src[j].real)
    np.testing.assert_array_equal(c[i][1].numpy(), src[j].imag)
    np.testing.assert_array_equal(m[i][0].numpy(), np.abs(src[j]))
    # A magnitude dataset: complex channels have a zero imaginary part.
    mc = SliceDataset(mag, flips=False)
    assert mc[i].shape == (2, Y, X)
    np.testing.assert_array_equal(mc[i][0].numpy(), open_dataset(mag)[mc.source_index(i)])
    assert torch.count_nonzero(mc[i][1]) == 0
    mm = SliceDataset(mag, crop=CROP, channels="magnitude")
    assert mm[i].shape == (1,) + CROP


@pytest.mark.parametrize("kind,channels", [("complex", "complex"), ("complex", "magnitude"),
                                           ("magnitude", "complex")])
def test_crop_is_window_of_flipped_slice(cplx, mag, kind, channels):
    path = cplx if kind == "complex" else mag
    sd = SliceDataset(path, crop=CROP, channels=channels, seed=5)
    src = open_dataset(path)
    flips, oys, oxs = set(), set(), set()
    for epoch in range(3):
        for position in range(len(sd)):
            index = (position * 7 + epoch) % len(sd)
            aug = sd.augmentation(epoch, position)
            item = sd[(epoch, position, index)].numpy()
            ref = _reference(src[sd.source_index(index)], aug, CROP)
            if channels == "magnitude":
                ref = np.abs(ref)[None]
            elif kind == "complex":
                ref = np.stack([ref.real, ref.imag])
            else:
                ref = np.stack([ref, np.zeros_like(ref)])
            np.testing.assert_array_equal(item, ref)
            flips.add((aug.flip_y, aug.flip_x))
            oys.add(aug.oy)
            oxs.add(aug.ox)
    assert len(flips) == 4  # both flips, independently
    assert oys == set(range(Y - CROP[0] + 1)) and oxs == set(range(X - CROP[1] + 1))


def test_no_flips_no_crop_is_the_source(cplx):
    sd = SliceDataset(cplx, flips=False)
    src = open_dataset(cplx)
    for key in [(0, 0, 0), (4, 17, 9), (9, 3, len(sd) - 1)]:
        assert sd.augmentation(*key[:2]) == (0, 0, False, False, False, 1.0)
        np.testing.assert_array_equal(sd[key][0].numpy(), src[sd.source_index(key[2])].real)


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    """Complex 12 x 12 slices: the top-left 12 x 12 of :func:`_image` (asymmetric in y, x)."""
    path = tmp_path_factory.mktemp("loader") / "square"
    with DatasetWriter(path, "complex", (Y, Y), shard_size=9) as w:
        for i in range(10):
            w.add(_image(i)[:, :Y].copy(), {"source": f"s{i}", "split": "train"})
    return path


def test_transposes_and_gain(square):
    """Each item is the crop window of the flipped, then transposed slice, times its gain; the
    8 flips / transposes all occur; gains are log-uniform in the range; and turning the options
    on changes no crop or flip."""
    crop, lo, hi = (5, 7), 0.5, 2.0
    sd = SliceDataset(square, crop=crop, seed=3, transposes=True, gain=(lo, hi))
    plain = SliceDataset(square, crop=crop, seed=3)
    src = open_dataset(square)
    seen, gains = set(), []
    for epoch in range(4):
        for position in range(len(sd)):
            aug = sd.augmentation(epoch, position)
            assert aug[:4] == plain.augmentation(epoch, position)[:4]
            ref = src[sd.source_index(position)]
            ref = ref[::-1] if aug.flip_y else ref
            ref = ref[:, ::-1] if aug.flip_x else ref
            ref = (ref.T if aug.transpose else ref)[aug.oy:aug.oy + crop[0],
                                                    aug.ox:aug.ox + crop[1]]
            item = sd[(epoch, position, position)].numpy()
            np.testing.assert_allclose(item, aug.gain * np.stack([ref.real, ref.imag]),
                                       rtol=1e-6)
            seen.add((aug.flip_y, aug.flip_x, aug.transpose))
            gains.append(aug.gain)
    assert len(seen) == 8
    assert lo <= min(gains) and max(gains) <= hi
    assert 0.3 < np.mean(np.log(gains) < 0) < 0.7  # log-uniform: median 1 for (0.5, 2)


def test_transposes_and_gain_refused(cplx, square):
    with pytest.raises(InputError, match=r"transposes need square slices.*\(12, 16\)"):
        SliceDataset(cplx, transposes=True)
    for bad in ((0.0, 1.0), (2.0, 1.0), (1.0,), "x"):
        with pytest.raises(InputError, match="gain"):
            SliceDataset(square, gain=bad)


def test_split_selection(cplx):
    for split in ("train", "val", "test", None):
        sd = SliceDataset(cplx, split=split, crop=CROP)
        want = [i for i in range(N) if split is None or _split(i) == split]
        assert len(sd) == len(want)
        assert sorted(_ids(torch.stack([sd[i] for i in range(len(sd))]))) == want
        got = set(sum((_ids(b) for b in _run(sd, len(sd), batch_size=2)), []))
        assert got == set(want)


def test_pickles_small_without_the_data(cplx):
    sd = SliceDataset(cplx, crop=CROP)
    blob = pickle.dumps(sd)
    data_bytes = N * Y * X * 8
    assert len(blob) < 2048 < data_bytes
    copy = pickle.loads(blob)
    assert copy._ds is None  # reopened (memory-mapped) lazily in the worker
    for key in [(0, 0, 0), (2, 5, 11)]:
        assert torch.equal(copy[key], sd[key])
    assert isinstance(copy._ds[0], np.memmap)


# -- order, augmentation streams, sharding ------------------------------------------------------

def test_same_seed_same_batches_other_seed_differs(cplx):
    kw = dict(batch_size=4, crop=CROP)
    a, b = _run(cplx, 10, seed=3, **kw), _run(cplx, 10, seed=3, **kw)
    assert _equal(a, b)
    assert not _equal(a, _run(cplx, 10, seed=4, **kw))


def test_epochs_differ_in_order_and_augmentation(cplx):
    sd = SliceDataset(cplx, crop=CROP, seed=1)
    n = len(sd)
    o0, o1 = epoch_order(n, 1, 0), epoch_order(n, 1, 1)
    assert sorted(o0) == sorted(o1) == list(range(n)) and not np.array_equal(o0, o1)
    a0 = [sd.augmentation(0, p) for p in range(n)]
    a1 = [sd.augmentation(1, p) for p in range(n)]
    assert a0 != a1
    loader = make_loader(sd, batch_size=4, num_workers=0)
    spe = loader.steps_per_epoch
    assert spe == n // 4
    batches = _run(sd, 2 * spe, batch_size=4)
    ids0 = sum((_ids(b) for b in batches[:spe]), [])
    ids1 = sum((_ids(b) for b in batches[spe:]), [])
    # Each epoch: distinct slices (n % 4 of them dropped), in a different order.
    assert len(set(ids0)) == len(set(ids1)) == 4 * spe and ids0 != ids1
    # Same slice in two epochs: different crops / flips.
    first = {i: b for i, b in zip(ids0, torch.cat(batches[:spe]))}
    second = {i: b for i, b in zip(ids1, torch.cat(batches[spe:]))}
    common = first.keys() & second.keys()
    assert len(common) >= 4 * spe - 2 * (len(sd) - 4 * spe)
    assert sum(not torch.equal(first[i], second[i]) for i in common) > len(common) // 2


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_sharding_disjoint_equal_and_covering(cplx, world_size):
    n = len(SliceDataset(cplx))
    per_rank = n // world_size
    for epoch in range(2):
        parts = []
        for rank in range(world_size):
            s = EpochBatchSampler(n, 3, seed=2, drop_last=False, rank=rank,
                                  world_size=world_size)
            keys = sum((s.batch(epoch * s.steps_per_epoch + k)
                        for k in range(s.steps_per_epoch)), [])
            assert all(k[0] == epoch for k in keys)
            parts.append([k[2] for k in keys])
        assert all(len(p) == per_rank for p in parts)
        union = set().union(*parts)
        assert len(union) == per_rank * world_size  # disjoint
        order = epoch_order(n, 2, epoch)
        assert union == set(order[:per_rank * world_size].tolist())  # all but the remainder
    # A rank's loader reads exactly its keys' slices.
    sd = SliceDataset(cplx, crop=CROP, seed=2)
    loader = make_loader(sd, 3, num_workers=0, rank=1, world_size=world_size, total_steps=4)
    want = [[sd.source_index(k[2]) for k in loader.keys(step)] for step in range(4)]
    assert [_ids(b) for b in loader] == want


def test_drop_last_false_keeps_a_short_batch(cplx):
    sd = SliceDataset(cplx)
    loader = make_loader(sd, 4, num_workers=0, drop_last=False)
    spe = loader.steps_per_epoch
    assert spe == -(-len(sd) // 4)
    batches = _run(sd, spe + 1, batch_size=4, drop_last=False)
    assert batches[spe - 1].shape[0] == len(sd) - 4 * (spe - 1) and batches[spe].shape[0] == 4


# -- resume and workers ---------------------------------------------------------------------------

def test_resume_equals_straight_run_across_epoch_boundary(cplx):
    sd = SliceDataset(cplx, crop=CROP, seed=7)
    kw = dict(batch_size=5, seed=7)
    spe = make_loader(sd, num_workers=0, **kw).steps_per_epoch
    total = 2 * spe + 2
    straight = _run(sd, total, **kw)
    for k in (1, spe - 1, spe, spe + 1, 2 * spe):
        assert _equal(_run(sd, total, start_step=k, **kw), straight[k:]), k


def test_state_checkpoint_round_trip_and_break_continue(cplx):
    sd = SliceDataset(cplx, crop=CROP)
    straight = _run(sd, 12, batch_size=4)
    loader = make_loader(sd, 4, num_workers=0, total_steps=12)
    got = []
    for batch in loader:
        got.append(batch)
        if len(got) == 7:
            break
    saved = loader.state().as_dict()
    assert saved == {"step": 7, "steps_per_epoch": loader.steps_per_epoch,
                     "epoch": 7 // loader.steps_per_epoch, "offset": 7 % loader.steps_per_epoch}
    assert all(type(v) is int for v in saved.values())
    resumed = make_loader(sd, 4, num_workers=0, total_steps=12,
                          start_step=LoaderState.from_dict(saved))
    assert _equal(list(resumed), straight[7:])
    assert _equal(got + list(loader), straight)  # iterating again continues where it stopped
    assert len(resumed) == 0 and resumed.state().step == 12


def test_workers_give_identical_batches(cplx):
    sd = SliceDataset(cplx, crop=CROP, seed=11)
    kw = dict(batch_size=4, seed=11)
    serial = _run(sd, 14, **kw)
    assert _equal(_run(sd, 14, num_workers=2, **kw), serial)
    assert _equal(_run(sd, 14, num_workers=2, start_step=9, **kw), serial[9:])


def test_spawned_workers_reopen_the_dataset(cplx):
    # Spawned workers get the SliceDataset by pickle (path and options only).
    sd = SliceDataset(cplx, crop=CROP, seed=11)
    kw = dict(batch_size=4, seed=11)
    assert _equal(_run(sd, 3, num_workers=1, multiprocessing_context="spawn", **kw),
                  _run(sd, 3, **kw))


def test_global_rng_untouched(cplx):
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    _run(cplx, 3, batch_size=4, crop=CROP)
    assert torch.equal(before, torch.get_rng_state())
    assert np.array_equal(np_before, np.random.get_state()[1])


def test_loader_state_arithmetic():
    s = LoaderState(7, 3)
    assert (s.epoch, s.offset) == (2, 1)
    assert LoaderState.from_dict(s.as_dict()) == s
    with pytest.raises(InputError, match="offset"):
        LoaderState.from_dict({"step": 7, "steps_per_epoch": 3, "epoch": 2, "offset": 0})
    with pytest.raises(InputError, match="step"):
        LoaderState.from_dict({"steps_per_epoch": 3})


# -- bad arguments --------------------------------------------------------------------------------

def test_bad_arguments_raise_input_error(cplx, tmp_path):
    only_train = _write(tmp_path / "train-only", "complex", count=4, split=lambda i: "train")
    cases = [
        (lambda: SliceDataset(cplx, crop=(Y + 1, 4)), "crop"),
        (lambda: SliceDataset(cplx, crop=(4, X + 1)), "crop"),
        (lambda: SliceDataset(cplx, crop=(0, 4)), "crop"),
        (lambda: SliceDataset(cplx, crop="big"), "crop"),
        (lambda: SliceDataset(cplx, channels="rgb"), "channels"),
        (lambda: SliceDataset(only_train, split="val"), "split"),
        (lambda: SliceDataset(cplx, split="training"), "split"),
        (lambda: SliceDataset(cplx, seed=-1), "seed"),
        (lambda: make_loader(only_train, 5, num_workers=0), "batch_size"),
        (lambda: make_loader(cplx, 0, num_workers=0), "batch_size"),
        (lambda: make_loader(cplx, 2, num_workers=0, rank=2, world_size=2), "rank"),
        (lambda: make_loader(cplx, 2, num_workers=0, world_size=0), "world_size"),
        (lambda: make_loader(cplx, 2, num_workers=0, start_step=-1), "start_step"),
        (lambda: make_loader(cplx, 2, num_workers=-1), "num_workers"),
        (lambda: make_loader(cplx, 2, num_workers=0, start_step=LoaderState(3, 99)),
         "start_step"),
        (lambda: make_loader(SliceDataset(cplx), 2, crop=4), "slice options"),
    ]
    for make, name in cases:
        with pytest.raises(InputError, match=name):
            make()
