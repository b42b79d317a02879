"""The launcher's environment, read in one place: ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as
``torchrun`` sets them (a plain ``python`` / ``mriprior`` process: rank 0 of 1)."""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["Launch", "launch_env"]


class Launch(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def launch_env(rank: int | None = None, world_size: int | None = None) -> Launch:
    """This process's place in the job; ``rank`` / ``world_size`` given explicitly win."""
    return Launch(int(os.environ.get("RANK", "0")) if rank is None else int(rank),
                  int(os.environ.get("WORLD_SIZE", "1")) if world_size is None
                  else int(world_size),
                  int(os.environ.get("LOCAL_RANK", "0")))
