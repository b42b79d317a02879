"""Per-item random streams: an item's noise depends on its own seed, never on its batch.

A sampler that draws its noise from one ``torch.Generator`` for the whole batch gives an item a
result that depends on which items it was batched with and in which order (and so on the number
of ranks a job ran on). :class:`ItemNoise` holds one generator per batch item instead; pass it
wherever a sampler takes ``generator=`` (:func:`~mriprior.diffusion.schedules.randn_like`
dispatches on it). Seeds of items are derived with :func:`mriprior.seeds.derive_seed`,
e.g. chain ``j`` of a slice with seed ``s`` uses ``derive_seed(s, j)``.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

from mriprior.errors import InputError
from mriprior.seeds import derive_seed

__all__ = ["ItemNoise"]


class ItemNoise:
    """One ``torch.Generator`` per batch item, seeded with ``seeds[i]``; the first dimension of
    every draw is the batch."""

    def __init__(self, seeds: Sequence[int], device="cpu"):
        if len(seeds) == 0:
            raise InputError("ItemNoise needs at least one seed")
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s))
                           for s in seeds]

    @classmethod
    def for_chains(cls, seeds: int | Sequence[int], batch: int, chains: int, device="cpu"
                   ) -> "ItemNoise":
        """Items ``b * chains + j``: chain ``j`` of slice ``b`` uses ``derive_seed(seed_b, j)``;
        ``seeds`` is one int for every slice or one per slice."""
        if isinstance(seeds, numbers.Integral):
            seeds = [int(seeds)] * batch
        seeds = [int(s) for s in seeds]
        if len(seeds) != batch:
            raise InputError(f"got {len(seeds)} seeds for a batch of {batch} slices")
        return cls([derive_seed(s, j) for s in seeds for j in range(chains)], device)

    def __len__(self) -> int:
        return len(self.generators)

    def _draw(self, fn, shape, dtype, device):
        if shape[0] != len(self.generators):
            raise InputError(f"a draw of batch {shape[0]} from noise streams of "
                             f"{len(self.generators)} items")
        return torch.stack([fn(tuple(shape[1:]), generator=g, device=device, dtype=dtype)
                            for g in self.generators])

    def randn(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return self._draw(torch.randn, shape, dtype, device or self.device)

    def rand(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return self._draw(torch.rand, shape, dtype, device or self.device)
