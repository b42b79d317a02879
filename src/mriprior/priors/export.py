"""Exported priors: ``NAME.safetensors`` (weights) + ``NAME.json`` (sidecar). Never pickle.

The sidecar says everything needed to rebuild and use the prior::

    {"format": "mriprior-prior", "version": 1,
     "prior_type": "diffusion",          (absent in older sidecars: means "diffusion")
     "network": {...network_from_config mapping...},
     "parametrisation": "score" | "eps" | "edm",
     "diffusion": {"type": "ve", "sigma_min": .., "sigma_max": ..}
                | {"type": "vp", "beta_min": .., "beta_max": ..}
                | {"type": "edm", "sigma_data": .., "p_mean": .., "p_std": ..,
                   "sigma_min": .., "sigma_max": ..},
     "data": {"channels": "complex" | "magnitude", "normalisation": "max", ...},
     "dataset_manifest_sha256": "...", "git_revision": "...", "config": {...the run's config...},
     "created_by": "mriprior x.y.z", "step": N, "ema": true}

An explicit-likelihood PixelCNN++ prior (:mod:`mriprior.priors.pixelcnn`) has instead of
``diffusion`` (fields from :func:`~mriprior.priors.pixelcnn.likelihood_meta`)::

     "prior_type": "pixelcnn", "network": {"type": "pixelcnn", ...}, "parametrisation": "nll",
     "likelihood": "discretized_logistic_mixture",
     "quantisation": {"bins": 256, "range": [-1, 1], "bin_width": 2/255, "edges": "open", ...},
     "channel_map": "...", "conditioning": "...", "data": {...}, ...

:func:`save_prior` writes both files atomically (temporary names, then rename, weights first);
:func:`load_prior` validates the sidecar, rebuilds the network and loads the weights strictly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from mriprior.errors import InputError

__all__ = ["save_prior", "load_prior", "FORMAT", "VERSION"]

FORMAT = "mriprior-prior"
VERSION = 1
REQUIRED = ("network", "parametrisation", "diffusion", "data")  # a diffusion prior's keys
PRIOR_TYPES = {
    "diffusion": REQUIRED,
    "pixelcnn": ("network", "parametrisation", "likelihood", "quantisation", "data"),
    "gan": ("network", "parametrisation", "data"),  # pix2pix phase generator
}
_LIKELIHOODS = ("discretized_logistic_mixture",)


def _check_meta(meta: dict, where: str) -> None:
    """Required keys per ``prior_type`` and their consistency; raises InputError naming them."""
    kind = meta.get("prior_type", "diffusion")
    if kind not in PRIOR_TYPES:
        raise InputError(f"{where}: unknown prior_type {kind!r} (known: {sorted(PRIOR_TYPES)})")
    missing = [k for k in PRIOR_TYPES[kind] if k not in meta]
    if missing:
        raise InputError(f"{where}: missing key(s) {missing} for prior_type {kind!r}")
    net_type = meta["network"].get("type") if isinstance(meta["network"], dict) else None
    if (net_type == "pixelcnn") != (kind == "pixelcnn") or (net_type == "pix2pix") != (kind == "gan"):
        raise InputError(f"{where}: prior_type {kind!r} does not match network type "
                         f"{net_type!r}")
    if kind == "pixelcnn":
        if meta["parametrisation"] != "nll":
            raise InputError(f"{where}: parametrisation of a pixelcnn prior must be 'nll', got "
                             f"{meta['parametrisation']!r}")
        if meta["likelihood"] not in _LIKELIHOODS:
            raise InputError(f"{where}: unknown likelihood {meta['likelihood']!r} (known: "
                             f"{list(_LIKELIHOODS)})")


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_prior(path, model: torch.nn.Module, meta: dict) -> tuple[Path, Path]:
    """Write ``model``'s state (parameters and buffers) and the sidecar ``meta``."""
    from safetensors.torch import save_file

    kind = meta.get("prior_type", "diffusion")
    missing = [k for k in PRIOR_TYPES.get(kind, ()) if k not in meta]
    if missing:
        raise InputError(f"prior metadata lacks {missing}")
    _check_meta(meta, "prior metadata")
    weights, sidecar = _paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    from mriprior import __version__
    side = {"format": FORMAT, "version": VERSION, "created_by": f"mriprior {__version__}", **meta}
    _atomic_write(weights, lambda t: save_file(tensors, t, metadata={"format": FORMAT}))
    _atomic_write(sidecar, lambda t: Path(t).write_text(json.dumps(side, indent=1)))
    return weights, sidecar


def read_sidecar(path) -> dict:
    weights, sidecar = _paths(path)
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise InputError(f"{sidecar}: prior sidecar not found (a prior is NAME.safetensors + "
                         "NAME.json)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{sidecar}: invalid JSON ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{sidecar}: not an mriprior prior (format {meta.get('format')!r}, "
                         f"version {meta.get('version')!r})")
    _check_meta(meta, str(sidecar))
    return meta


def load_prior(path, device=None) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network from the sidecar and load the safetensors weights (strict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mriprior.priors.networks import network_from_config

    weights, _ = _paths(path)
    meta = read_sidecar(path)
    net = network_from_config(meta["network"])
    try:
        state = load_file(str(weights), device="cpu")
    except FileNotFoundError:
        raise InputError(f"{weights}: prior weights not found") from None
    except (SafetensorError, OSError) as e:
        raise InputError(f"{weights}: unreadable safetensors file ({e})") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{weights}: weights do not match the network in the sidecar "
                         f"({str(e).splitlines()[0]})") from None
    net.eval()
    return (net.to(device) if device is not None else net), meta
