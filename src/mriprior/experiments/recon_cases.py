"""The reconstruction test cases shared by `bench/recon.py` and `mriprior experiment priors`.

* :func:`simulated_case`: a complex image (e.g. a held-out slice of the open corpus with
  simulated phase) -> 8 birdcage coils, complex Gaussian noise at SNR 40, a Poisson-disc R ~ 8
  (20 x 20 calibration) or 1D variable-density R = 5 (30 ACS lines) mask, ESPIRiT maps estimated
  from the undersampled data; reference = the image itself (metrics without rescaling).
* :func:`real_case`: a folder with BART ``ksp`` / ``img`` (the real 8-coil slice): its acquired
  k-space and pattern, ESPIRiT maps; reference = ``img`` map 0 (full-data reconstruction of
  unknown global scale -> metrics with least-squares magnitude scaling).

Every case is a dict: ``ksp (1, c, y, x)``, ``maps (1, c, y, x)``, ``ref (1, y, x)``, ``mask``,
``accel``, ``scale`` ("none" | "lsq") and, for simulated cases, ``ref_complex`` (the reference
in the estimated maps' phase gauge, for complex-error checks).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mriprior.errors import InputError
from mriprior.io.cfl import BartLayout, read_cfl
from mriprior.physics.espirit import espirit
from mriprior.physics.fft import fft2c
from mriprior.physics.masks import poisson_disc, variable_density_1d
from mriprior.physics.phantom import birdcage_maps
from mriprior.physics.simulate import simulate_multicoil, snr_to_sigma

__all__ = ["PATTERNS", "make_mask", "simulated_case", "real_case", "pick_slices", "complex_lsq"]

PATTERNS = {"poisson": "Poisson-disc R~8, calib 20x20", "1d": "1D VD R=5, 30 ACS lines"}


def make_mask(kind, shape, seed):
    if kind == "poisson":
        return poisson_disc(shape, 8.0, calib=(20, 20), seed=seed)
    return variable_density_1d(shape, 5.0, acs_lines=30, seed=seed)


def simulated_case(img: torch.Tensor, kind: str, seed: int):
    """img (y, x) complex -> dict(ksp (1,c,y,x), maps (1,c,y,x), ref (1,y,x), mask, accel)."""
    n = img.shape
    ref = img.to(torch.complex64)[None]
    true_maps = birdcage_maps(8, n, normalize="rss")[None]
    g = torch.Generator().manual_seed(seed)
    sigma = snr_to_sigma(fft2c(true_maps * ref[:, None]), 40.0)
    mask = make_mask(kind, n, seed)
    ksp = simulate_multicoil(ref, true_maps, noise_cov=float(sigma[0]),
                             mask=mask.tensor(), generator=g)
    maps = espirit(ksp, calib=20, maps=1)[:, 0]
    # The reference in the ESPIRiT maps' gauge: ESPIRiT maps carry an arbitrary smooth phase
    # relative to the true coils, so complex errors (uncertainty checks) must be taken against
    # the image that the estimated maps represent, sum_c conj(S_esp) S_true ref / sum |S_esp|^2.
    den = maps.abs().square().sum(1)
    ref_g = torch.where(den > 0, (maps.conj() * true_maps * ref[:, None]).sum(1)
                        / den.clamp_min(1e-12), torch.zeros_like(ref))
    return {"ksp": ksp, "maps": maps, "ref": ref, "ref_complex": ref_g,
            "mask": mask.tensor()[None, None], "accel": mask.accel, "scale": "none"}


def real_case(path):
    k = read_cfl(os.path.join(path, "ksp"))
    layout = BartLayout.from_dims(k.shape, name="ksp")
    ksp = torch.from_numpy(np.ascontiguousarray(layout.to_torch(k, max_dim=3)))[None]
    img = read_cfl(os.path.join(path, "img"))
    ref = torch.from_numpy(np.ascontiguousarray(layout.to_torch(img, max_dim=4)))
    ref = ref.reshape(-1, *ref.shape[-2:])[:1]  # map 0 -> (1, y, x)
    mask = (ksp.abs().sum(1, keepdim=True) > 0).float()
    maps = espirit(ksp, calib=20, maps=1)[:, 0]
    return {"ksp": ksp, "maps": maps, "ref": ref.to(torch.complex64), "mask": mask,
            "accel": float(mask.numel() / mask.sum()), "scale": "lsq"}


def complex_lsq(ref, x):
    """Complex factor a minimising ||ref - a x|| (undoes the unknown global scale / phase)."""
    return complex((x.conj() * ref).sum() / (x.conj() * x).sum())


def pick_slices(ds, split, n):
    """``n`` distinct slice indices of ``split``, evenly spaced through the split's middle half
    (avoids near-empty edge slices), or through the whole split if the middle half is smaller."""
    idx = [i for i, rec in enumerate(ds.manifest["slices"]) if rec["split"] == split]
    if not idx:
        raise InputError(f"no {split} slices in the dataset")
    if n > len(idx):
        raise InputError(f"{n} {split} slices asked for, the dataset has {len(idx)}")
    lo, hi = len(idx) // 4, max(len(idx) // 4 + 1, 3 * len(idx) // 4)
    if hi - lo < n:
        lo, hi = 0, len(idx)
    pos = np.linspace(lo, hi - 1, n).round().astype(int)
    return [idx[p] for p in pos]
