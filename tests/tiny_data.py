"""Tiny training data and configs shared by the training tests (the ``dataset`` fixture of
``conftest.py`` writes :func:`write_blob_dataset`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mriprior.data.dataset import DatasetWriter

TINY_NET = {"type": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
            "attention_levels": [], "fourier_scale": 16.0}


def write_blob_dataset(path, size: int = 20, shard_size: int = 7, unit_peak: bool = False
                       ) -> Path:
    """16 train + 4 val complex ``size x size`` slices: smooth blobs with a phase ramp
    (``unit_peak``: each scaled to max |x| = 1)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / float(size)
    with DatasetWriter(path, "complex", (size, size), shard_size=shard_size,
                       options={"normalize": "max"}) as w:
        for i in range(20):
            cy, cx = rng.uniform(0.3, 0.7, 2)
            mag = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
            if unit_peak:
                mag = mag / mag.max()
            img = (mag * np.exp(1j * (2 * xx + rng.uniform(0, 1)))).astype(np.complex64)
            w.add(img, {"source": f"s{i}", "split": "val" if i >= 16 else "train"})
    return Path(path)


def prior_config(dataset, output, **over) -> dict:
    """A raw training config of a tiny VE prior on ``dataset``; ``over``: ``"section.key"``
    replacements."""
    raw = {
        "model": dict(TINY_NET),
        "data": {"path": str(dataset), "crop": 16, "channels": "complex", "num_workers": 0},
        "diffusion": {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0},
        "optim": {"lr": 2e-3, "warmup_steps": 2, "grad_clip": 1.0, "min_lr": 1e-4},
        "train": {"batch_size": 4, "steps": 8, "save_every": 4, "keep_last": 2,
                  "ema_decay": 0.9, "seed": 3, "log_every": 2, "output": str(output),
                  "device": "cpu"},
        "heldout": {"every": 4, "n_images": 4, "sigmas": [0.1, 1.0]},
    }
    for dotted, value in over.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return raw
