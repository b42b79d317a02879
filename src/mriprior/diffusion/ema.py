"""Exponential moving average of a model's weights.

``shadow <- decay * shadow + (1 - decay) * param`` for every floating-point parameter, after each
optimiser step (:meth:`EMA.update`). Buffers (e.g. normalisation statistics) are not averaged:
the model's own buffers are used when evaluating with the EMA weights. The shadow weights are
kept in float32 at least (float64 parameters stay float64), on the parameters' device.

``state_dict`` / ``load_state_dict`` hold the decay, the number of updates and the shadow
tensors exactly, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mriprior.errors import InputError

__all__ = ["EMA"]


def _shadow_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class EMA:
    """EMA of ``model``'s floating-point parameters.

    Args:
        model: the trained module (the shadow is initialised from its current weights).
        decay: in ``[0, 1)``; the EMA's time constant is about ``1 / (1 - decay)`` updates.
        ramp: warm the decay up as ``min(decay, (1 + n) / (10 + n))`` (see ``current_decay``).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, ramp: bool = False):
        if not 0.0 <= decay < 1.0:
            raise InputError(f"EMA decay must be in [0, 1), got {decay}")
        self.model = model
        self.decay = float(decay)
        self.ramp = bool(ramp)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().to(_shadow_dtype(p)).clone()
            for name, p in self._params(model)
        }

    @staticmethod
    def _params(model: nn.Module):
        return [(n, p) for n, p in model.named_parameters() if p.dtype.is_floating_point]

    def _check(self, model: nn.Module | None):
        model = self.model if model is None else model
        params = self._params(model)
        names = [n for n, _ in params]
        if set(names) != set(self.shadow):
            raise InputError("EMA: the model's parameters do not match the shadow weights "
                             f"(model {len(names)}, shadow {len(self.shadow)})")
        return params

    @property
    def current_decay(self) -> float:
        """The decay of the next update: ``decay``, or with ``ramp`` ``min(decay, (1 + n) / (10 +
        n))`` after ``n`` updates, so a short run's average is not dominated by its start."""
        if not self.ramp:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module | None = None) -> None:
        """One EMA step from the parameters of ``model`` (default: the model given at creation)."""
        for name, p in self._check(model):
            sh = self.shadow[name]
            sh.lerp_(p.detach().to(sh.dtype), 1.0 - self.current_decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        """Overwrite ``model``'s parameters with the shadow weights."""
        for name, p in self._check(model):
            p.copy_(self.shadow[name].to(p.dtype))

    @contextlib.contextmanager
    def swap(self, model: nn.Module | None = None):
        """Evaluate with the EMA weights inside the ``with`` block; the trained weights (exact
        copies) are restored on exit, also after an exception."""
        model = self.model if model is None else model
        params = self._check(model)
        backup = {name: p.detach().clone() for name, p in params}
        try:
            self.copy_to(model)
            yield model
        finally:
            with torch.no_grad():
                for name, p in params:
                    p.copy_(backup[name])

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"decay", "num_updates", "shadow"} - set(state)
        if missing:
            raise InputError(f"EMA state is missing {sorted(missing)}")
        if set(state["shadow"]) != set(self.shadow):
            raise InputError("EMA state does not match this model's parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for k, v in state["shadow"].items():
            ref = self.shadow[k]
            if v.shape != ref.shape:
                raise InputError(f"EMA state: shape of {k!r} is {tuple(v.shape)}, expected "
                                 f"{tuple(ref.shape)}")
            self.shadow[k] = v.detach().to(device=ref.device, dtype=ref.dtype).clone()
