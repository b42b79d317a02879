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
     "created_by": "mriprior x.y.z", "step": N, "ema": true,
     "recon_defaults": {"fast": {"sigma_start": .., "nfe": ..}, "pics": {"lam": ..},
                        "l1": {"lam": ..}, "tuned_on": "..."}}       (optional)

``recon_defaults`` (any prior type): reconstruction settings chosen on validation slices, which
`mriprior recon` uses where the command line gives none (:func:`set_recon_defaults` writes
them into an existing sidecar); ``l1`` is the baseline's: L1-wavelet PICS's lambda tuned on the
same slices, which `mriprior demo` compares with. A method's optional ``"1d"`` mapping holds the
settings tuned on line (1D) sampling, which replace the others for 1D patterns
(:func:`mriprior.physics.masks.pattern_kind`, :func:`mriprior.recon.posterior.tuned_options`).

``denoising_error`` (diffusion priors, optional): ``{"sigmas": [..], "loss": [..], "measured_on":
".."}``, the held-out denoising loss per noise level (:func:`~mriprior.diffusion.losses.
heldout_dsm_loss`: the denoiser's mean squared error per component relative to ``sigma^2``),
written by training (its last held-out evaluation) or by :func:`set_denoising_error`; the fast
sampler's posterior draws use it as the variance of the clean image given a noisy one.

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
import math
import os
from pathlib import Path

import torch

from mriprior.diffusion.losses import PARAMETRISATION_OF
from mriprior.errors import InputError
from mriprior.io.files import (DIR_MODE, atomic_write_bytes, atomic_write_text,
                               check_replaceable, weights_and_sidecar)
from mriprior.priors.config import Field, at_least, check_section
from mriprior.priors.networks import network_from_config


__all__ = ["save_prior", "load_prior", "read_sidecar", "set_recon_defaults",
           "set_denoising_error", "prior_files",
           "prior_kind",
           "export_folder", "user_prior_dir", "portable", "FORMAT",
           "VERSION", "RECON_DEFAULT_KEYS"]

FORMAT = "mriprior-prior"
VERSION = 1
REQUIRED = ("network", "parametrisation", "diffusion", "data")  # a diffusion prior's keys
PRIOR_TYPES = {
    "diffusion": REQUIRED,
    "pixelcnn": ("network", "parametrisation", "likelihood", "quantisation", "data"),
    "gan": ("network", "parametrisation", "data"),  # pix2pix phase generator
}
_LIKELIHOODS = ("discretized_logistic_mixture",)


# recon_defaults: method -> key -> (kind, minimum)
RECON_DEFAULT_KEYS = {"fast": {"sigma_start": (float, 0.0), "nfe": (int, 1), "chains": (int, 1),
                               "flips": (bool, None)},
                      "pics": {"lam": (float, 0.0), "iters": (int, 1), "wavelet": (float, 0.0),
                               "flips": (bool, None), "anneal_sigma": (float, 0.0),
                               "anneal_iters": (int, 1)},
                      "l1": {"lam": (float, 0.0), "iters": (int, 1)},
                      "langevin": {"lam": (float, 0.0), "chains": (int, 1)}}


def _check_recon_defaults(rd, where: str, sub: str = "") -> None:
    """InputError naming the key unless ``rd`` maps methods of :data:`RECON_DEFAULT_KEYS` to
    valid values (an int ``>=`` its minimum, a finite number ``>`` it, a bool; a method's
    ``"1d"``: the same for line sampling); ``tuned_on`` is free."""
    if not isinstance(rd, dict):
        raise InputError(f"{where}: recon_defaults must be a mapping")
    for method, values in rd.items():
        if method == "tuned_on" and not sub:
            continue
        name = f"recon_defaults.{method}{sub}"
        if method not in RECON_DEFAULT_KEYS or not isinstance(values, dict):
            raise InputError(f"{where}: {name}: expected a mapping under one "
                             f"of {sorted(RECON_DEFAULT_KEYS)}")
        values = dict(values)
        if "1d" in values and not sub:  # the settings tuned on line (1D) sampling
            _check_recon_defaults({method: values.pop("1d")}, where, ".1d")
        if "calibration" in values and method in ("fast", "langevin"):
            _check_calibration(values.pop("calibration"), f"{where}: {name}.calibration")
        check_section(f"{where}: {name}", values, {
            k: Field(kind, None, check=None if kind is bool else at_least(lo) if kind is int else
                     (lambda v, lo=lo: None if v > lo else f"must be > {lo}, got {v}"))
            for k, (kind, lo) in RECON_DEFAULT_KEYS[method].items()})


def _check_calibration(cal, where: str) -> None:
    """A sampler's uncertainty calibration (:mod:`mriprior.recon.calibration`): ``scale`` > 0,
    ``pool`` an odd int >= 1, ``level`` in (0, 1), ``settings`` / ``validation`` mappings,
    ``measured_on`` a string."""
    if not isinstance(cal, dict):
        raise InputError(f"{where}: expected a mapping, got {type(cal).__name__}")
    cal = dict(cal)
    for key in ("settings", "validation"):
        if not isinstance(cal.pop(key, {}), dict):
            raise InputError(f"{where}.{key}: expected a mapping")
    check_section(where, cal, {
        "scale": Field(float, check=lambda v: None if v > 0 else f"must be > 0, got {v}"),
        "pool": Field(int, 1, check=lambda v: None if v >= 1 and v % 2 else
                      f"must be an odd window size >= 1, got {v}"),
        "level": Field(float, 0.9, check=lambda v: None if 0 < v < 1 else
                       f"must be in (0, 1), got {v}"),
        "measured_on": Field(str, "?")})


def _check_meta(meta: dict, where: str) -> None:
    """Required keys per ``prior_type`` and their consistency; raises InputError naming them."""
    if not isinstance(meta, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    kind = meta.get("prior_type", "diffusion")
    if kind not in PRIOR_TYPES:
        raise InputError(f"{where}: unknown prior_type {kind!r} (known: {sorted(PRIOR_TYPES)})")
    missing = [k for k in PRIOR_TYPES[kind] if k not in meta]
    if missing:
        raise InputError(f"{where}: missing key(s) {missing} for prior_type {kind!r}")
    if not isinstance(meta["network"], dict):
        raise InputError(f"{where}: 'network' must be a mapping, got "
                         f"{type(meta['network']).__name__}")
    net_type = meta["network"].get("type")
    if (net_type == "pixelcnn") != (kind == "pixelcnn") or (net_type == "pix2pix") != (kind == "gan"):
        raise InputError(f"{where}: prior_type {kind!r} does not match network type "
                         f"{net_type!r}")
    if "recon_defaults" in meta:
        _check_recon_defaults(meta["recon_defaults"], where)
    if "denoising_error" in meta:
        _check_denoising_error(meta["denoising_error"], where)
    if kind == "diffusion":
        diff = meta["diffusion"]
        dtype = diff.get("type") if isinstance(diff, dict) else None
        if dtype not in PARAMETRISATION_OF:
            raise InputError(f"{where}: diffusion.type {dtype!r} is not one of "
                             f"{sorted(PARAMETRISATION_OF)}")
        want = PARAMETRISATION_OF[dtype]
        if meta["parametrisation"] != want:
            raise InputError(f"{where}: parametrisation {meta['parametrisation']!r} does not "
                             f"match diffusion.type {dtype!r} (trained as {want!r})")
        keys = {"ve": ("sigma_min", "sigma_max"), "edm": ("sigma_min", "sigma_max",
                                                          "sigma_data")}.get(dtype, ())
        for k in keys:
            v = diff.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise InputError(f"{where}: diffusion.{k} must be a positive number, got {v!r}")
        if keys and not diff["sigma_min"] < diff["sigma_max"]:
            raise InputError(f"{where}: diffusion.sigma_min must be < diffusion.sigma_max")
    if kind == "pixelcnn":
        if meta["parametrisation"] != "nll":
            raise InputError(f"{where}: parametrisation of a pixelcnn prior must be 'nll', got "
                             f"{meta['parametrisation']!r}")
        if meta["likelihood"] not in _LIKELIHOODS:
            raise InputError(f"{where}: unknown likelihood {meta['likelihood']!r} (known: "
                             f"{list(_LIKELIHOODS)})")


ASSETS = Path(__file__).resolve().parents[1] / "assets"  # the bundled priors
BUNDLED = "prior-edm-cpu"  # what the name "bundled" means: the default prior


FOLDER_FILES = ("model.safetensors", "config.json")  # a prior folder (as model hubs lay out)


def user_prior_dir() -> Path:
    """Where priors are installed by name: ``$MRIPRIOR_PRIORS``, else
    ``$XDG_DATA_HOME/mriprior/priors`` (``~/.local/share/mriprior/priors``)."""
    if os.environ.get("MRIPRIOR_PRIORS"):
        return Path(os.environ["MRIPRIOR_PRIORS"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mriprior" / "priors"


def _pair(p: Path) -> tuple[Path, Path] | None:
    """The files of prior ``p`` if they exist: a folder, or NAME.safetensors + NAME.json."""
    if p.is_dir() and (p / FOLDER_FILES[1]).is_file():
        return p / FOLDER_FILES[0], p / FOLDER_FILES[1]
    weights, sidecar = weights_and_sidecar(p)
    if weights.exists() or sidecar.exists():
        return weights, sidecar
    return None


def prior_files(path) -> tuple[Path, Path]:
    """``(weights, sidecar)`` of a prior given as a path or a name.

    A path may name either file of ``NAME.safetensors`` + ``NAME.json`` or NAME itself (a NAME
    with a dot keeps it: ``out/prior-v1.5`` -> ``out/prior-v1.5.safetensors``), or a prior
    folder (``model.safetensors`` + ``config.json`` + ``README.md``, :func:`export_folder`). A
    bare name found nowhere here resolves in the user prior directory (:func:`user_prior_dir`),
    then among the bundled priors; ``bundled`` is the default bundled prior."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json") and not p.is_dir():
        p = p.with_suffix("")
    found = _pair(p)
    if found is not None:
        return found
    if len(p.parts) == 1:
        name = BUNDLED if p.name == "bundled" else p.name
        for base in (user_prior_dir(), ASSETS):
            found = _pair(base / name)
            if found is not None:
                return found
    return weights_and_sidecar(p)


def prior_kind(meta: dict) -> str:
    """The kind of model a sidecar describes: ``"diffusion"`` (the default), ``"pixelcnn"`` or
    ``"gan"``."""
    return meta.get("prior_type", "diffusion")


def portable(meta):
    """``meta`` with every absolute path replaced by its last component: a sidecar must not
    carry the layout of the machine that trained it."""
    if isinstance(meta, dict):
        return {k: portable(v) for k, v in meta.items()}
    if isinstance(meta, list):
        return [portable(v) for v in meta]
    if isinstance(meta, str) and os.path.isabs(meta) and len(meta) > 1:
        return Path(meta).name
    return meta


_paths = prior_files


def save_prior(path, model: torch.nn.Module, meta: dict) -> tuple[Path, Path]:
    """Write ``model``'s state (parameters and buffers) and the sidecar ``meta``."""
    from safetensors.torch import save

    kind = meta.get("prior_type", "diffusion")
    missing = [k for k in PRIOR_TYPES.get(kind, ()) if k not in meta]
    if missing:
        raise InputError(f"prior metadata lacks {missing}")
    _check_meta(meta, "prior metadata")
    weights, sidecar = _paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    from mriprior import __version__
    side = portable({"format": FORMAT, "version": VERSION, "created_by": f"mriprior {__version__}",
                     **meta})
    weights.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(weights, save(tensors, metadata={"format": FORMAT}))
    atomic_write_text(sidecar, json.dumps(side, indent=1))
    return weights, sidecar


def read_sidecar(path) -> dict:
    weights, sidecar = _paths(path)
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise InputError(f"{sidecar}: prior sidecar not found (a prior is NAME.safetensors + "
                         "NAME.json, a folder with config.json, or a name installed in "
                         f"{user_prior_dir()})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{sidecar}: invalid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{sidecar}: unreadable prior sidecar ({e})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{sidecar}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{sidecar}: not an mriprior prior (format {meta.get('format')!r}, "
                         f"version {meta.get('version')!r})")
    _check_meta(meta, str(sidecar))
    return meta


def _check_denoising_error(de, where: str) -> None:
    ok = (isinstance(de, dict) and isinstance(de.get("sigmas"), list)
          and isinstance(de.get("loss"), list) and len(de["sigmas"]) == len(de["loss"]) >= 1
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
                  for v in de["sigmas"] + de["loss"])
          and all(a < b for a, b in zip(de["sigmas"], de["sigmas"][1:])))
    if not ok:
        raise InputError(f"{where}: denoising_error must be {{'sigmas': [increasing positive "
                         "numbers], 'loss': [as many positive numbers]}}")


def set_denoising_error(path, sigmas, loss, measured_on: str) -> Path:
    """Write the held-out denoising loss per noise level (see the module docstring) into the
    sidecar of the prior ``path``; checked first, written atomically."""
    _, sidecar = _paths(path)
    meta = read_sidecar(path)
    meta["denoising_error"] = {"sigmas": [float(s) for s in sigmas],
                               "loss": [float(v) for v in loss], "measured_on": measured_on}
    _check_meta(meta, str(sidecar))
    atomic_write_text(sidecar, json.dumps(meta, indent=1))
    return sidecar


def set_recon_defaults(path, defaults: dict) -> Path:
    """Write ``defaults`` (see the module docstring) into the sidecar of the prior ``path``,
    replacing any there; checked first, written atomically. Returns the sidecar's path."""
    _, sidecar = _paths(path)
    meta = read_sidecar(path)
    meta["recon_defaults"] = defaults
    _check_meta(meta, str(sidecar))
    atomic_write_text(sidecar, json.dumps(meta, indent=1))
    return sidecar


def load_prior(path, device=None) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network from the sidecar and load the safetensors weights (strict)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    weights, sidecar = _paths(path)
    meta = read_sidecar(path)
    try:
        with safe_open(str(weights), framework="pt") as f:
            header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise InputError(f"{weights}: prior weights not found") from None
    except (SafetensorError, OSError) as e:
        raise InputError(f"{weights}: unreadable safetensors file ({e})") from None
    # The architecture's shapes without allocating it (a sidecar could ask for any size), checked
    # against the file's header before the network is built for real.
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape)
                      for k, v in network_from_config(meta["network"]).state_dict().items()}
    except (InputError, TypeError, ValueError) as e:
        raise InputError(f"{sidecar}: network: {e}") from None
    if shapes != header:
        diff = sorted(set(shapes) ^ set(header)) or [
            k for k in shapes if shapes[k] != header[k]]
        k = diff[0]
        raise InputError(f"{weights}: weights do not match the network in {sidecar.name} "
                         f"(tensor {k!r}: file {header.get(k)}, network {shapes.get(k)}; "
                         f"{len(diff)} tensor(s) differ)")
    net = network_from_config(meta["network"])
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise InputError(f"{weights}: unreadable safetensors file ({e})") from None
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise InputError(f"{weights}: tensor {k!r} holds NaN or Inf values")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{weights}: weights do not match the network in the sidecar "
                         f"({str(e).splitlines()[0]})") from None
    if meta.get("patches"):  # a patch prior: the whole-image network is its tiler
        from mriprior.priors.patches import PatchTiler

        try:
            net = PatchTiler(net, meta["patches"]["infer"], meta["patches"]["ref"])
        except (KeyError, TypeError, IndexError, ValueError):
            raise InputError(f"{sidecar}: patches: expected {{sizes, area, infer, ref}}, got "
                             f"{meta['patches']!r}") from None
    net.eval()
    return (net.to(device) if device is not None else net), meta


def _model_card(name: str, meta: dict, weights_sha: str, n_params: int) -> str:
    cfg = meta.get("config") or {}
    data, diff = meta.get("data") or {}, meta.get("diffusion") or {}
    train = cfg.get("train", {})
    lines = [
        f"# {name}: an mriprior {meta.get('prior_type', 'diffusion')} prior", "",
        f"- **Model**: {meta.get('network', {}).get('type', '?')} network, {n_params:,} "
        f"parameters; parametrisation `{meta.get('parametrisation')}`"
        + (f", diffusion `{diff.get('type')}` ("
           + ", ".join(f"{k} {v}" for k, v in diff.items() if k != "type") + ")" if diff else ""),
        f"- **Training data**: dataset `{data.get('dataset', '?')}` (manifest sha256 "
        f"`{meta.get('dataset_manifest_sha256', '?')}`), {data.get('channels', '?')} images, "
        f"crop {data.get('crop', '?')}, split `{data.get('split', '?')}`, normalisation "
        f"`{data.get('normalisation', '?')}` (images scaled to maximum magnitude 1)",
        f"- **Training**: {meta.get('step', '?')} steps of batch {train.get('batch_size', '?')} "
        f"on {train.get('device', '?')}; EMA weights: {meta.get('ema', '?')}; "
        f"{meta.get('created_by', '?')}, git {meta.get('git_revision', '?')}",
        "- **Command**: `mriprior train CONFIG` with the run configuration stored under `config` "
        "in `config.json` (write it out as YAML to retrain)",
    ]
    rd = meta.get("recon_defaults")
    if rd:
        lines.append(f"- **Reconstruction settings tuned on validation slices** "
                     f"({rd.get('tuned_on', '?')}): "
                     + "; ".join(f"{m}: {v}" for m, v in rd.items() if m != "tuned_on"))
    lines += [
        "- **Metrics**: see the mriprior benchmark that produced this prior (docs/benchmarks.md, "
        "docs/priors.md); none are stored with the weights", "",
        "## Use", "", "```bash",
        f"mriprior recon --prior {name} --noise-var auto ksp sens mmse  # by name or path",
        f"mriprior export {name} {name}.pt                 # TorchScript for BART 1.0",
        "```", "", "```python", "import mriprior as mp",
        f"prior = mp.load_image_prior({name!r})", "```", "",
        "## Files", "",
        f"- `model.safetensors` (sha256 `{weights_sha}`): the weights (never a pickle)",
        "- `config.json`: the sidecar (network, parametrisation, data, training run)",
        "", "Licence: as the training data allow; the open corpus and the simulated phase are "
        "redistributable, clinical archives usually are not.", ""]
    return "\n".join(lines)


def export_folder(prior, out) -> Path:
    """Write prior ``prior`` as a publishable folder ``out``: ``model.safetensors``,
    ``config.json`` (the sidecar, without absolute paths) and ``README.md`` (a model card:
    training data, command, settings, use). Built in a temporary sibling and renamed into place;
    an existing ``out`` is replaced only when it is an empty folder or a prior folder."""
    import hashlib
    import shutil
    import tempfile

    from safetensors import safe_open

    weights, _ = prior_files(prior)
    meta = portable(read_sidecar(prior))
    load_prior(prior)  # the weights must load against the sidecar before we publish them
    out = Path(out)
    check_replaceable(out, lambda d: (d / FOLDER_FILES[1]).is_file(), "a prior folder")
    data = weights.read_bytes()
    with safe_open(str(weights), framework="pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    name = out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{name}.tmp-"))
    try:
        (tmp / FOLDER_FILES[0]).write_bytes(data)
        (tmp / FOLDER_FILES[1]).write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / "README.md").write_text(_model_card(name, meta, hashlib.sha256(data).hexdigest(),
                                                   n_params))
        os.chmod(tmp, DIR_MODE)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
