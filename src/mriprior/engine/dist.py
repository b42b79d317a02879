"""Process group, rank and device of a training run, and the run folder's lock.

``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` come from ``torchrun``; with ``WORLD_SIZE`` > 1 the
process group is initialised (``nccl`` on CUDA, ``gloo`` on CPU) unless it already is. Rank ``r``
uses CUDA device ``LOCAL_RANK % device_count``. Only rank 0 writes files.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from mriprior.errors import InputError
from mriprior.launch import launch_env
from mriprior.io.files import output_lock

__all__ = ["Dist", "rank0_lock", "run_ranked"]


class Dist:
    """``device_pref``: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``."""

    def __init__(self, device_pref: str):
        self.rank, self.world_size, self.local_rank = launch_env()
        want_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise InputError("train.device: 'cuda' requested but CUDA is not available")
        if want_cuda:
            self.device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.owns_group = False
        import torch.distributed as dist
        self.dist = dist
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
            self.owns_group = True

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def gather(self, obj):
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.enabled:
            self.dist.barrier()

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` for the training step: DistributedDataParallel when there are several ranks."""
        if not self.enabled:
            return net
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self):
        if self.owns_group:
            self.dist.destroy_process_group()


def rank0_lock(ctx: Dist, output):
    """The output lock of a training run, taken by rank 0 (mriprior.io.files.output_lock)."""
    return output_lock(output, "training") if ctx.rank == 0 else nullcontext()


def run_ranked(device_pref: str, output, fn):
    """``fn(ctx)`` with this process's :class:`Dist` (process group initialised under torchrun)
    while rank 0 holds the run folder's lock; the group is closed afterwards."""
    ctx = Dist(device_pref)
    try:
        with rank0_lock(ctx, output):
            return fn(ctx)
    finally:
        ctx.close()
