"""Synthesised training k-space for unrolled networks: complex image -> undersampled multi-coil data.

``Synthesizer(spec, shape, seed)`` turns a batch of complex images ``(b, y, x)`` (the targets,
e.g. magnitude x a phase from one of the phase sources) into ``(ksp, maps, mask)``:

* coils: ``spec["coils"]`` birdcage coils, the set rotated by a random angle per example
  (:func:`mriprior.data.simulate.transform_maps`) and RSS-normalised after the rotation, so
  ``sum_c |S_c|^2 = 1`` as for ESPIRiT maps; the same maps are given to the network;
* noise: white, at ``spec["snr"]`` (RMS k-space over noise sigma; ``None``: noiseless);
* mask per example: a kind from ``spec["masks"]`` (``equispaced`` / ``random``: 1D phase-encode
  rows with ``acs_fraction * 4 / R`` of the rows as ACS lines, fastMRI's 8 % at R = 4 and 4 % at
  R = 8; ``poisson``: variable-density Poisson disc with a calibration square of
  ``calib_fraction`` of the size) and an acceleration from ``spec["accels"]``. Masks come from a
  bank of ``bank`` masks per (kind, R) drawn once from ``seed`` (Poisson-disc generation is far
  slower than a training step); examples pick from the bank.

Every random choice of a batch comes from the ``torch.Generator`` passed in, so a batch is a
function of (images, generator state): training resumes exactly.
"""

from __future__ import annotations

import torch

from mriprior.data.simulate import simulate_acquisition, transform_maps
from mriprior.errors import InputError
from mriprior.physics.phantom import birdcage_maps
from mriprior.physics.masks import equispaced_1d, poisson_disc, variable_density_1d

__all__ = ["Synthesizer", "make_mask", "MASK_KINDS"]

MASK_KINDS = ("equispaced", "random", "poisson")


def make_mask(kind: str, shape, accel: float, seed: int, acs_fraction: float = 0.08,
              calib_fraction: float = 0.08) -> torch.Tensor:
    """One mask ``(y, x)`` float32 (see the module docstring for the kinds)."""
    ny, nx = shape
    if kind in ("equispaced", "random"):
        acs = max(2, int(round(ny * acs_fraction * 4.0 / accel)))
        if kind == "equispaced":
            m = equispaced_1d((ny, nx), accel, acs_lines=acs, seed=seed)
        else:
            m = variable_density_1d((ny, nx), accel, acs_lines=acs, seed=seed, decay=0.0)
    elif kind == "poisson":
        c = (max(4, int(round(ny * calib_fraction))), max(4, int(round(nx * calib_fraction))))
        m = poisson_disc((ny, nx), accel, calib=c, seed=seed)
    else:
        raise InputError(f"mask kind {kind!r}: expected one of {', '.join(MASK_KINDS)}")
    return m.tensor()


class Synthesizer:
    def __init__(self, spec: dict, shape, seed: int = 0, bank: int = 16):
        self.spec = dict(spec)
        self.shape = tuple(int(s) for s in shape)
        self.combos = [(k, float(r)) for k in spec["masks"] for r in spec["accels"]]
        if not self.combos:
            raise InputError("simulation.masks / simulation.accels: need at least one of each")
        self.bank = torch.stack([
            torch.stack([make_mask(k, self.shape, r, seed * 100003 + 7919 * j + i,
                                   spec["acs_fraction"], spec["calib_fraction"])
                         for i in range(bank)])
            for j, (k, r) in enumerate(self.combos)])  # (combos, bank, y, x)
        self.base = birdcage_maps(spec["coils"], self.shape, normalize="rss")[None]

    def __call__(self, images: torch.Tensor, generator: torch.Generator):
        """``images (b, y, x)`` complex -> ``ksp (b, c, y, x)``, ``maps``, ``mask (b, 1, y, x)``."""
        b = images.shape[0]
        if tuple(images.shape[-2:]) != self.shape:
            raise InputError(f"images are {tuple(images.shape[-2:])}, the synthesizer was built "
                             f"for {self.shape}")
        dev = images.device
        gen_dev = generator.device
        combo = torch.randint(len(self.combos), (b,), generator=generator, device=gen_dev)
        pick = torch.randint(self.bank.shape[1], (b,), generator=generator, device=gen_dev)
        mask = self.bank[combo.cpu(), pick.cpu()].to(dev)[:, None]
        maps = self.base.to(dev).expand(b, -1, -1, -1)
        if self.spec["rotate_coils"]:
            angle = torch.rand(b, generator=generator, device=gen_dev, dtype=torch.float64)
            maps = transform_maps(self.base.to(dev), self.shape, (360.0 * angle).to(dev))
            maps = maps / (maps.abs().square().sum(1, keepdim=True).sqrt().clamp_min(1e-12))
        ksp, maps = simulate_acquisition(images, maps=maps, n_coils=self.spec["coils"],
                                         rotation_deg=(0.0, 0.0), snr=self.spec["snr"],
                                         generator=generator)
        return ksp * mask, maps, mask
