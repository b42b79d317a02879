"""Deterministic, resumable, multi-worker loading of dataset slices for training priors.

Items and batches
  :class:`SliceDataset` item: a float32 tensor ``(C, y, x)``. ``channels="complex"``: C = 2,
  (real, imaginary) -- the two real channels a network sees at its edge (a magnitude dataset
  gives an all-zero imaginary channel); ``channels="magnitude"``: C = 1, ``|image|``.
  ``(y, x)`` is the crop size, or the dataset's slice shape when ``crop=None``.
  :func:`make_loader` batch: a float32 tensor ``(batch_size, C, y, x)`` (the last batch of an
  epoch is smaller only when ``drop_last=False``).

Data stays on disk: an item reads just its (cropped) window from the memory-mapped shard. A
:class:`SliceDataset` pickles to its path and options only (worker processes reopen the
memory maps), so it is cheap to send to workers.

Determinism contract
  Everything random is a pure function of integers, never of worker-local or global RNG state:

  * the order of epoch ``e`` is ``numpy.random.default_rng([ORDER, seed, e]).permutation(n)``
    over the ``n`` slices of the split (:func:`epoch_order`);
  * the sample at position ``p`` of that order gets its crop offset, flips, transpose and gain
    from ``default_rng([AUGMENT, seed, e, p])`` (:meth:`SliceDataset.augmentation`): the crop
    is placed uniformly, the y and x flips and the transpose (the y <-> x swap; with the flips,
    the 8 flips / 90-degree rotations) are independent with p = 0.5, the intensity gain is
    log-uniform in ``gain = (lo, hi)``, and the crop is a window of the (possibly) flipped,
    then transposed slice. Every draw is made whether its option is on or not, in that order,
    so turning an option on changes no other draw.

  Hence batches do not depend on ``num_workers``, on restarts, or (per sample) on the number of
  ranks, and the global torch RNG is never touched.

Distributed sharding
  With ``world_size`` W, rank ``r`` takes positions ``r, r + W, r + 2W, ...`` of each epoch's
  order, ``n // W`` of them: the ranks' parts are disjoint and equally sized, and the last
  ``n % W`` positions of each epoch are dropped (a different set of slices each epoch, since
  the order changes). Each rank then cuts its part into batches (``drop_last``: drop a final
  partial batch).

Resume contract
  Step ``k`` (the k-th batch, counting from 0 over all epochs) is batch ``k % S`` of epoch
  ``k // S``, with ``S`` = :attr:`Loader.steps_per_epoch`. ``make_loader(..., start_step=k)``
  yields exactly the batches a fresh loader would yield from step ``k`` on, augmentations
  included. :meth:`Loader.state` gives a :class:`LoaderState` (plain ints) to put in a
  checkpoint; pass it (or its ``step``) back as ``start_step``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from mriprior.data.dataset import SPLITS, Dataset, open_dataset
from mriprior.errors import InputError, check_int

__all__ = ["SliceDataset", "Augmentation", "EpochBatchSampler", "Loader", "LoaderState",
           "make_loader", "epoch_order", "rank_positions", "CHANNELS"]

CHANNELS = ("complex", "magnitude")
# Stream tags: keep the order and augmentation streams independent for the same (seed, epoch).
ORDER = 0x6F72
AUGMENT = 0x6175


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order (a permutation of ``range(n)``) of epoch ``epoch``; a function of its args."""
    return np.random.default_rng([ORDER, seed, epoch]).permutation(n)


def rank_positions(n: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Positions in an epoch's order that rank ``rank`` takes (strided; remainder dropped)."""
    per_rank = n // world_size
    return np.arange(rank, per_rank * world_size, world_size, dtype=np.int64)


class Augmentation(NamedTuple):
    """Crop offset (in the flipped, transposed slice), flips, transpose and intensity gain of
    one sample."""

    oy: int
    ox: int
    flip_y: bool
    flip_x: bool
    transpose: bool = False
    gain: float = 1.0


def _window(offset: int, size: int, full: int, flip: bool) -> slice:
    """Source-slice window equal to ``flipped[offset:offset + size]`` (``flip`` reverses)."""
    if not flip:
        return slice(offset, offset + size)
    stop = full - offset - size - 1
    return slice(full - offset - 1, stop if stop >= 0 else None, -1)


def _crop_shape(crop, shape) -> tuple[int, int]:
    if crop is None:
        return tuple(shape)
    if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool):
        crop = (crop, crop)
    try:
        cy, cx = (int(c) for c in crop)
    except (TypeError, ValueError):
        raise InputError(f"crop must be None, an int or (cy, cx), not {crop!r}") from None
    if min(cy, cx) < 1:
        raise InputError(f"crop must be positive, got {crop!r}")
    if cy > shape[0] or cx > shape[1]:
        raise InputError(f"crop {(cy, cx)} is larger than the dataset's slices {tuple(shape)}")
    return cy, cx


def _gain_range(gain) -> tuple[float, float] | None:
    """``None`` or ``(lo, hi)`` with ``0 < lo <= hi`` (finite)."""
    if gain is None:
        return None
    try:
        lo, hi = (float(v) for v in gain)
    except (TypeError, ValueError):
        raise InputError(f"gain must be None or (lo, hi), not {gain!r}") from None
    if not (0 < lo <= hi < math.inf):
        raise InputError(f"gain (lo, hi) needs 0 < lo <= hi, finite; got {gain!r}")
    return lo, hi


class SliceDataset(torch.utils.data.Dataset):
    """Slices of one split as float32 ``(C, y, x)`` tensors, with keyed random crop / flips /
    transposes / intensity gains.

    ``dataset_or_path``: a :class:`~mriprior.data.dataset.Dataset` or its folder. ``split``:
    "train", "val", "test" or None (all slices). ``crop``: None, an int or ``(cy, cx)``.
    ``flips``: random y / x flips. ``transposes``: random y <-> x swaps (square slices only).
    ``gain``: None or ``(lo, hi)`` with ``0 < lo <= hi``: every sample multiplied by a
    log-uniform random factor in that range (intensity scaling). ``channels``: "complex"
    (C = 2) or "magnitude" (C = 1). ``seed``: the augmentation (and, by default, order) seed.

    Item keys: ``(epoch, position, index)`` -- the sample ``index`` (0 .. len - 1 within the
    split) at ``position`` of epoch ``epoch``'s order, augmented by
    :meth:`augmentation` ``(epoch, position)``; a plain int ``i`` means ``(0, i, i)``.
    """

    def __init__(self, dataset_or_path, split: str | None = "train", crop=None,
                 flips: bool = True, channels: str = "complex", seed: int = 0,
                 transposes: bool = False, gain=None):
        if channels not in CHANNELS:
            raise InputError(f"channels must be one of {CHANNELS}, not {channels!r}")
        if split is not None and split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS} or None, not {split!r}")
        ds = dataset_or_path if isinstance(dataset_or_path, Dataset) else \
            open_dataset(dataset_or_path)
        self.path = Path(ds.path)
        self.split, self.channels, self.flips = split, channels, bool(flips)
        self.seed = check_int("seed", seed, 0)
        self.kind, self.shape = ds.kind, tuple(ds.shape)
        self.crop = _crop_shape(crop, self.shape)
        self.transposes, self.gain = bool(transposes), _gain_range(gain)
        if self.transposes and self.shape[0] != self.shape[1]:
            raise InputError(f"transposes need square slices; {self.path} has {self.shape}")
        indices = ds.indices(split)
        if len(indices) == 0:
            raise InputError(f"split {split!r} of {self.path} has no slices")
        self._n = len(indices)
        self._ds, self._indices = ds, indices

    # -- pickling: path and options only; workers reopen the memory maps lazily --------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = state["_indices"] = None
        return state

    def _open(self) -> tuple[Dataset, np.ndarray]:
        if self._ds is None:
            ds = open_dataset(self.path)
            indices = ds.indices(self.split)
            if len(indices) != self._n or ds.kind != self.kind or tuple(ds.shape) != self.shape:
                raise InputError(f"{self.path}: dataset changed since the loader was made")
            self._ds, self._indices = ds, indices
        return self._ds, self._indices

    @property
    def num_channels(self) -> int:
        return 2 if self.channels == "complex" else 1

    def __len__(self) -> int:
        return self._n

    def source_index(self, index: int) -> int:
        """Index in the whole dataset of the split's sample ``index``."""
        return int(self._open()[1][index])

    def augmentation(self, epoch: int, position: int) -> Augmentation:
        """Crop offset, flips, transpose and gain of the sample at ``position`` of epoch
        ``epoch``."""
        rng = np.random.default_rng([AUGMENT, self.seed, int(epoch), int(position)])
        (ny, nx), (cy, cx) = self.shape, self.crop
        oy = int(rng.integers(0, ny - cy + 1))
        ox = int(rng.integers(0, nx - cx + 1))
        fy, fx = (self.flips and bool(f) for f in rng.random(2) < 0.5)  # drawn either way
        tr = self.transposes and bool(rng.random() < 0.5)  # drawn either way
        u = float(rng.random())  # drawn either way
        g = 1.0 if self.gain is None else math.exp(math.log(self.gain[0]) + u * math.log(
            self.gain[1] / self.gain[0]))
        return Augmentation(oy, ox, fy, fx, tr, g)

    def load(self, index: int, aug: Augmentation) -> torch.Tensor:
        """Sample ``index`` of the split with augmentation ``aug``: float32 ``(C, cy, cx)``."""
        ds, indices = self._open()
        src = ds[int(indices[index])]
        (ny, nx), (cy, cx) = self.shape, self.crop
        if aug.transpose:  # window (cy, cx) of the transpose = transposed window (cx, cy)
            view = src[_window(aug.ox, cx, ny, aug.flip_y), _window(aug.oy, cy, nx, aug.flip_x)].T
        else:
            view = src[_window(aug.oy, cy, ny, aug.flip_y), _window(aug.ox, cx, nx, aug.flip_x)]
        out = self._channels(view)
        if aug.gain != 1.0:
            out *= np.float32(aug.gain)
        return torch.from_numpy(out)

    def _channels(self, view: np.ndarray) -> np.ndarray:
        out = np.empty((self.num_channels,) + view.shape, np.float32)
        if self.channels == "magnitude":
            np.abs(view, out=out[0])
        elif self.kind == "complex":
            out[0], out[1] = view.real, view.imag
        else:
            out[0], out[1] = view, 0.0
        return out

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            epoch, position, index = 0, int(key), int(key)
        else:
            epoch, position, index = (int(k) for k in key)
        if not 0 <= index < self._n:
            raise IndexError(f"sample {index} out of range for {self._n} samples")
        return self.load(index, self.augmentation(epoch, position))


@dataclass(frozen=True)
class LoaderState:
    """Where a loader stands: the next ``step`` to yield, as epoch and in-epoch offset.

    Plain ints; ``as_dict()`` / ``from_dict()`` for checkpoints.
    """

    step: int
    steps_per_epoch: int

    def __post_init__(self):
        check_int("step", self.step, 0)
        check_int("steps_per_epoch", self.steps_per_epoch, 1)

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def offset(self) -> int:
        return self.step % self.steps_per_epoch

    def as_dict(self) -> dict:
        return dict(asdict(self), epoch=self.epoch, offset=self.offset)

    @classmethod
    def from_dict(cls, d: dict) -> "LoaderState":
        try:
            state = cls(int(d["step"]), int(d["steps_per_epoch"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"loader state needs integer 'step' and 'steps_per_epoch' "
                             f"({e!r})") from None
        for key in ("epoch", "offset"):
            if key in d and int(d[key]) != getattr(state, key):
                raise InputError(f"loader state: {key} {d[key]} disagrees with step "
                                 f"{state.step} / steps_per_epoch {state.steps_per_epoch}")
        return state


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of item keys ``(epoch, position, index)`` for steps ``start`` .. ``stop - 1``.

    One rank's view (see the module docstring); ``stop=None`` runs forever.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1, start: int = 0, stop: int | None = None):
        self.n = check_int("n", n, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.world_size = check_int("world_size", world_size, 1)
        self.rank = check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise InputError(f"rank {rank} must be < world_size {world_size}")
        self.drop_last = bool(drop_last)
        self.positions = rank_positions(self.n, self.rank, self.world_size)
        self.steps_per_epoch = self._steps_per_epoch()
        self.start = check_int("start_step", start, 0)
        self.stop = None if stop is None else check_int("total_steps", stop, 0)

    def _steps_per_epoch(self) -> int:
        per_rank = len(self.positions)
        steps = per_rank // self.batch_size if self.drop_last else \
            math.ceil(per_rank / self.batch_size)
        if steps == 0:
            raise InputError(f"batch_size {self.batch_size} is larger than the {per_rank} "
                             f"samples per rank ({self.n} samples, world_size "
                             f"{self.world_size}) with drop_last=True")
        return steps

    def batch(self, step: int, order: np.ndarray | None = None) -> list[tuple[int, int, int]]:
        """The keys of step ``step`` (``order``: that epoch's order, if already computed)."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        if order is None:
            order = epoch_order(self.n, self.seed, epoch)
        pos = self.positions[offset * self.batch_size:(offset + 1) * self.batch_size]
        return [(epoch, int(p), int(order[p])) for p in pos]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        step, epoch, order = self.start, None, None
        while self.stop is None or step < self.stop:
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = epoch_order(self.n, self.seed, epoch)
            yield self.batch(step, order)
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless EpochBatchSampler (stop=None) has no length")
        return max(0, self.stop - self.start)


class Loader:
    """Iterable of batches over a :class:`SliceDataset` (made by :func:`make_loader`).

    Iterating continues from :attr:`step`, the next step to yield, and advances it as batches
    are handed out: breaking out of a loop and iterating again carries on where it stopped.
    Each iteration starts a torch ``DataLoader`` whose batch sampler is an
    :class:`EpochBatchSampler` from :attr:`step`.
    """

    def __init__(self, dataset: SliceDataset, sampler: EpochBatchSampler, num_workers: int,
                 pin_memory: bool, prefetch_factor: int | None, multiprocessing_context=None):
        self.dataset, self._sampler = dataset, sampler
        self.num_workers = num_workers
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self.step = sampler.start
        self.total_steps = sampler.stop

    @property
    def batch_size(self) -> int:
        return self._sampler.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return self._sampler.steps_per_epoch

    def state(self) -> LoaderState:
        """The position to save in a checkpoint (the next step this loader will yield)."""
        return LoaderState(self.step, self.steps_per_epoch)

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        """Item keys ``(epoch, position, index)`` of step ``step`` (no data read)."""
        return self._sampler.batch(step)

    def _dataloader(self) -> DataLoader:
        s = self._sampler
        sampler = EpochBatchSampler(s.n, s.batch_size, s.seed, s.drop_last, s.rank,
                                    s.world_size, start=self.step, stop=self.total_steps)
        extra = {}
        if self.num_workers > 0:
            extra = dict(prefetch_factor=self.prefetch_factor,
                         multiprocessing_context=self.multiprocessing_context)
        # default_collate stacks straight into shared memory in a worker (no extra copy); a
        # private generator keeps DataLoader from drawing its base seed from the global RNG.
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, collate_fn=default_collate,
                          generator=torch.Generator().manual_seed(s.seed), **extra)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self._dataloader():
            self.step += 1  # before yielding: state() inside the loop body is the next step
            yield batch

    def __len__(self) -> int:
        if self.total_steps is None:
            raise TypeError("an endless loader (total_steps=None) has no length")
        return max(0, self.total_steps - self.step)


def make_loader(dataset, batch_size: int, num_workers: int = 2, seed: int | None = None,
                start_step: int | LoaderState = 0, drop_last: bool = True, rank: int = 0,
                world_size: int = 1, total_steps: int | None = None,
                pin_memory: bool | None = None, prefetch_factor: int | None = 2,
                multiprocessing_context=None, **slice_options) -> Loader:
    """A deterministic, resumable loader of float32 ``(batch_size, C, y, x)`` batches.

    ``dataset``: a :class:`SliceDataset`, or a dataset / folder wrapped in one with
    ``slice_options`` (split, crop, flips, channels, transposes, gain) and ``seed``. ``seed``: the order seed;
    None means the SliceDataset's seed (0 unless given). ``start_step``: an int, or a
    :class:`LoaderState` from a checkpoint (checked against this loader's steps per epoch).
    ``total_steps``: stop before this absolute step (None: run forever over epochs).
    ``rank`` / ``world_size``: distributed sharding. ``pin_memory``: None means "if CUDA is
    available". See the module docstring for the determinism and resume contracts.
    """
    if isinstance(dataset, SliceDataset):
        if slice_options:
            raise InputError(f"slice options {sorted(slice_options)} given with a ready "
                             "SliceDataset; set them on the SliceDataset")
        sd = dataset
    else:
        sd = SliceDataset(dataset, seed=0 if seed is None else seed, **slice_options)
    seed = sd.seed if seed is None else seed
    num_workers = check_int("num_workers", num_workers, 0)
    state = start_step if isinstance(start_step, LoaderState) else None
    step = state.step if state is not None else start_step
    sampler = EpochBatchSampler(len(sd), batch_size, seed, drop_last, rank, world_size,
                                start=step, stop=total_steps)
    if state is not None and state.steps_per_epoch != sampler.steps_per_epoch:
        raise InputError(f"start_step: the checkpoint's loader had {state.steps_per_epoch} "
                         f"steps per epoch, this one has {sampler.steps_per_epoch} (dataset, "
                         "split, batch_size, drop_last or world_size changed)")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return Loader(sd, sampler, num_workers, bool(pin_memory), prefetch_factor,
                  multiprocessing_context)
