"""Training-run configuration: one YAML file per run, validated against a schema written here.

A config has six sections (every key of every section is listed in :data:`SCHEMA`, with its type
and default; ``model`` is checked by building the network)::

    model:      {preset: cpu-small, ...overrides}  or  {type: unet, ...network_from_config keys}
                or {preset: pixelcnn-cpu, ...}     or  {type: pixelcnn, filters, n_resnet, ...}
    data:       {path, split, crop, channels: complex|magnitude, flips, transposes, gain,
                 patches, num_workers}
                (patches: null, or {sizes, area, infer} for a patch prior, see
                mriprior.priors.patches; crop must then be null)
    diffusion:  {type: ve, sigma_min, sigma_max, t_eps}  or  {type: vp, beta_min, beta_max, t_eps}
                or {type: edm, sigma_data, p_mean, p_std, sigma_min, sigma_max} (denoiser
                preconditioning of Karras et al. 2022; sigma_min / sigma_max: the sampling range)
                or {type: none} (the only choice for, and the default of, a pixelcnn model)
    optim:      {lr, betas, eps, weight_decay, grad_clip, warmup_steps, schedule, min_lr}
    train:      {batch_size, steps, save_every, keep_last, ema_decay, ema_ramp, seed, log_every,
                 output, init_from, amp, device, tensorboard}
                (init_from: an exported prior whose weights start a fresh run: fine-tuning)
    heldout:    {every, n_images, sigmas, split, sample_grid}
                sample_grid: null (off) or {n, size, steps}: EMA samples written to TensorBoard

Two kinds of prior, chosen by ``model.type``:

* ``unet``: a score network trained by denoising score matching under ``diffusion`` (ve / vp);
  held-out number: the DSM loss at each of ``heldout.sigmas``.
* ``pixelcnn``: a PixelCNN++ trained by maximum likelihood; ``diffusion`` is absent or
  ``{type: none}`` (resolved to ``{type: none}``); ``heldout.sigmas`` and
  ``heldout.sample_grid.steps`` do not apply and are rejected; held-out number: NLL in bits/dim.

Errors are :class:`~mriprior.errors.InputError` naming the key path, e.g.
``optim.lerning_rate: unknown key`` or ``train.steps: expected int, got str``.

Resolution: ``model`` becomes the full ``network_from_config`` mapping (the preset expanded, the
network's own normalised ``config``); relative ``data.path``, ``train.output`` and
``train.init_from`` are resolved
against the config file's folder (against ``base_dir`` for an in-memory mapping); omitted keys
take their defaults; keys of the other diffusion type are rejected. The resolved config is a
plain JSON-able dict; validating it again returns it unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mriprior.errors import InputError

__all__ = ["SCHEMA", "SECTIONS", "load_config", "validate_config", "apply_overrides", "read_yaml",
           "Field", "check_section", "at_least", "positive", "resolve_path", "in_unit_interval",
           "adam_betas", "check_sections", "load_yaml_config"]

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One config key: ``kind`` (int, float, bool, str, a tuple of choices, "floats", "strings",
    "float_pair", "crop", "sample_grid"), its default (``_REQUIRED`` if none), whether ``None`` is
    allowed, and an optional extra check returning an error message or None."""

    kind: Any
    default: Any = _REQUIRED
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def positive(v):
    return None if v > 0 else f"must be > 0, got {v}"


def at_least(n):
    return lambda v: None if v >= n else f"must be >= {n}, got {v}"


def in_unit_interval(v):
    return None if 0 <= v < 1 else f"must be in [0, 1), got {v}"


def gain_range(v):
    return None if 0 < v[0] <= v[1] else f"must be [lo, hi] with 0 < lo <= hi, got {v}"


def adam_betas(v):
    return None if all(0 <= b < 1 for b in v) else f"must be two numbers in [0, 1), got {v}"


SCHEMA: dict[str, dict[str, Field]] = {
    "data": {
        "path": Field(str, doc="dataset folder (relative: to the config file)"),
        "split": Field(("train", "val", "test"), "train", nullable=True,
                       doc="training split (null: all slices)"),
        "crop": Field("crop", None, nullable=True, doc="int or [y, x]; null: whole slices"),
        "channels": Field(("complex", "magnitude"), "complex"),
        "flips": Field(bool, True),
        "transposes": Field(bool, False, doc="random y <-> x swaps (with flips: the 8 flips / "
                                               "90-degree rotations); square slices"),
        "gain": Field("float_pair", None, nullable=True, check=gain_range,
                      doc="[lo, hi]: intensity scaling, every sample times a log-uniform "
                          "factor in [lo, hi]; null: none"),
        "patches": Field("patches", None, nullable=True,
                         doc="null: whole images / crops; {sizes: [16, 32, 64], area: 128, "
                             "infer: null}: a patch prior (mriprior.priors.patches) trained on "
                             "patches of these sizes, (area // size)^2 per slice and step, "
                             "applied to whole images (infer: null, default) or in infer x "
                             "infer tiles"),
        "num_workers": Field(int, 2, check=at_least(0)),
    },
    "diffusion": {
        "type": Field(("ve", "vp", "edm", "none"), "ve",
                      doc="none: no diffusion (pixelcnn models); default for pixelcnn"),
        "sigma_min": Field(float, 0.01, check=positive, doc="ve, edm"),
        "sigma_max": Field(float, 1.0, check=positive, doc="ve, edm"),
        "beta_min": Field(float, 0.1, check=positive, doc="vp only"),
        "beta_max": Field(float, 20.0, check=positive, doc="vp only"),
        "t_eps": Field(float, 1e-5, check=in_unit_interval, doc="ve, vp"),
        "sigma_data": Field(float, 0.2, check=positive,
                            doc="edm: std of the data (per real component)"),
        "p_mean": Field(float, -2.0, doc="edm: mean of ln sigma in training"),
        "p_std": Field(float, 1.2, check=positive, doc="edm: std of ln sigma in training"),
    },
    "optim": {
        "lr": Field(float, 2e-4, check=positive),
        "betas": Field("float_pair", [0.9, 0.999], check=adam_betas),
        "eps": Field(float, 1e-8, check=positive),
        "weight_decay": Field(float, 0.0, check=at_least(0)),
        "grad_clip": Field(float, 1.0, nullable=True, check=positive,
                           doc="max global gradient norm; null: no clipping"),
        "warmup_steps": Field(int, 0, check=at_least(0), doc="linear warm-up from 0"),
        "schedule": Field(("cosine", "constant"), "cosine",
                          doc="after warm-up: cosine from lr to min_lr at train.steps"),
        "min_lr": Field(float, 0.0, check=at_least(0)),
    },
    "train": {
        "batch_size": Field(int, 8, check=at_least(1), doc="per rank"),
        "steps": Field(int, check=at_least(1), doc="total optimiser steps"),
        "save_every": Field(int, 1000, check=at_least(1)),
        "keep_last": Field(int, 3, check=at_least(1)),
        "ema_decay": Field(float, 0.999, check=in_unit_interval),
        "ema_ramp": Field(bool, False, doc="EMA decay min(ema_decay, (1 + n) / (10 + n)) after "
                                          "n updates (short runs)"),
        "seed": Field(int, 0, check=at_least(0)),
        "log_every": Field(int, 10, check=at_least(1)),
        "output": Field(str, doc="run folder (relative: to the config file)"),
        "init_from": Field(str, None, nullable=True,
                           doc="an exported prior (path, relative: to the config file) whose "
                               "weights start a fresh run (fine-tuning): same network and "
                               "diffusion; ignored on resume (the checkpoint holds the weights)"),
        "amp": Field(bool, True, doc="mixed precision (CUDA only; ignored on CPU)"),
        "device": Field(("auto", "cpu", "cuda"), "auto"),
        "tensorboard": Field(("auto", True, False), "auto",
                             doc="TensorBoard logs in OUTPUT/tensorboard: auto = when the "
                                 "package is installed (pip install 'mriprior[tensorboard]'), "
                                 "true = required, false = off"),
    },
    "heldout": {
        "every": Field(int, 0, check=at_least(0), doc="steps between evaluations; 0: off"),
        "n_images": Field(int, 8, check=at_least(1)),
        "sigmas": Field("floats", [0.01, 0.1, 1.0],
                        check=lambda v: None if v and all(s > 0 for s in v)
                        else f"must be a non-empty list of positive numbers, got {v}"),
        "split": Field(("train", "val", "test"), "val"),
        "sample_grid": Field("sample_grid", None, nullable=True,
                             doc="null: off; {n, size, steps}: EMA samples to TensorBoard at "
                                 "every evaluation (only when tensorboard imports)"),
    },
}
SECTIONS = ("model",) + tuple(SCHEMA)
REQUIRED_SECTIONS = ("model", "data", "train")
# Keys of each diffusion type (the first two: a range that must be increasing).
_DIFFUSION_KEYS = {"ve": ("sigma_min", "sigma_max", "t_eps"),
                   "vp": ("beta_min", "beta_max", "t_eps"),
                   "edm": ("sigma_min", "sigma_max", "sigma_data", "p_mean", "p_std")}
# heldout.sample_grid's keys. steps: noise levels (diffusion priors only).
_SAMPLE_GRID = {"n": Field(int, 4, check=at_least(1)), "size": Field("crop", [64, 64]),
                "steps": Field(int, 50, check=at_least(1))}


def _tname(v) -> str:
    return "null" if v is None else type(v).__name__


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _coerce(path: str, f: Field, v):
    if v is None:
        if f.nullable:
            return None
        raise InputError(f"{path}: must not be null")
    k = f.kind
    if k is int:
        if not _is_int(v):
            raise InputError(f"{path}: expected int, got {_tname(v)}")
    elif k is float:
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"{path}: must be a finite number, got {v}")
        if not _is_num(v):
            raise InputError(f"{path}: expected number, got {_tname(v)}")
        v = float(v)
    elif k is bool:
        if not isinstance(v, bool):
            raise InputError(f"{path}: expected bool, got {_tname(v)}")
    elif k is str:
        if not isinstance(v, str) or not v:
            raise InputError(f"{path}: expected non-empty str, got {_tname(v)}")
    elif isinstance(k, tuple):
        if v not in k:
            raise InputError(f"{path}: expected one of {list(k)}, got {v!r}")
    elif k in ("floats", "float_pair"):
        if not isinstance(v, (list, tuple)) or not all(_is_num(x) for x in v):
            raise InputError(f"{path}: expected a list of numbers, got {_tname(v)} {v!r}")
        v = [float(x) for x in v]
        if k == "float_pair" and len(v) != 2:
            raise InputError(f"{path}: expected two numbers, got {len(v)}")
    elif k == "strings":
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise InputError(f"{path}: expected a list of strings, got {_tname(v)} {v!r}")
        v = list(v)
    elif k == "crop":
        if _is_int(v):
            v = [v, v]
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_int(x) for x in v):
            raise InputError(f"{path}: expected an int or [y, x] ints, got {v!r}")
        v = [int(x) for x in v]
        if min(v) < 1:
            raise InputError(f"{path}: must be positive, got {v}")
    elif k == "sample_grid":
        v = _sample_grid(path, v)
    elif k == "patches":
        v = _patches(path, v)
    else:  # pragma: no cover - schema error
        raise AssertionError(k)
    if f.check is not None:
        msg = f.check(v)
        if msg:
            raise InputError(f"{path}: {msg}")
    return v


def _sample_grid(path: str, v) -> dict:
    if not isinstance(v, Mapping):
        raise InputError(f"{path}: expected null or a mapping {{n, size, steps}}, got {_tname(v)}")
    return check_section(path, v, _SAMPLE_GRID)


def _patches(path: str, v) -> dict:
    if not isinstance(v, Mapping):
        raise InputError(f"{path}: expected null or a mapping {{sizes, area, infer}}, got "
                         f"{_tname(v)}")
    for key in v:
        if key not in ("sizes", "area", "infer"):
            raise InputError(f"{path}.{key}: unknown key (known: sizes, area, infer)")
    sizes = v.get("sizes")
    if (not isinstance(sizes, (list, tuple)) or not sizes
            or not all(_is_int(p) and p > 0 for p in sizes)):
        raise InputError(f"{path}.sizes: expected a non-empty list of positive ints, got "
                         f"{sizes!r}")
    out = {"sizes": [int(p) for p in sizes]}
    for key, default in (("area", max(out["sizes"])), ("infer", None)):
        x = v.get(key, default)
        if x is None and key == "infer":
            out[key] = None
            continue
        if not _is_int(x) or x < 1:
            raise InputError(f"{path}.{key}: expected a positive int{' or null' * (key == 'infer')}"
                             f", got {x!r}")
        out[key] = int(x)
    if out["area"] < max(out["sizes"]):
        raise InputError(f"{path}.area: {out['area']} is smaller than the largest patch "
                         f"{max(out['sizes'])}")
    return out


def check_section(name: str, raw: Any, schema: Mapping[str, Field] | None = None) -> dict:
    """Validate one section against ``schema`` (default: ``SCHEMA[name]``); defaults filled."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputError(f"{name}: expected a mapping, got {_tname(raw)}")
    schema = SCHEMA[name] if schema is None else schema
    for key in raw:
        if key not in schema:
            raise InputError(f"{name}.{key}: unknown key (known: {', '.join(schema)})")
    out = {}
    for key, f in schema.items():
        path = f"{name}.{key}"
        if key in raw:
            out[key] = _coerce(path, f, raw[key])
        elif f.default is _REQUIRED:
            raise InputError(f"{path}: required key missing")
        else:
            out[key] = copy.deepcopy(f.default)
    return out


def _model(raw: Any, channels: str, patches: dict | None = None) -> dict:
    from mriprior.priors.networks import _CONSTRUCTOR_KEYS, PRESETS, network_from_config

    if not isinstance(raw, Mapping):
        raise InputError(f"model: expected a mapping, got {_tname(raw)}")
    raw = dict(raw)
    if "preset" in raw:
        name = raw.pop("preset")
        if name not in PRESETS:
            raise InputError(f"model.preset: unknown preset {name!r} (known: "
                             f"{', '.join(sorted(PRESETS))})")
        if "type" in raw and raw["type"] != PRESETS[name]["type"]:
            raise InputError(f"model.type: {raw['type']!r} contradicts preset {name!r}")
        mapping = {**PRESETS[name], **raw}
    else:
        if "type" not in raw:
            raise InputError("model: needs 'preset' or 'type' (a network_from_config mapping)")
        mapping = raw
    if patches:
        if raw.get("cond_channels", 2) != 2:  # 2: a config this function resolved before
            raise InputError("model.cond_channels: set by data.patches (the 2 position "
                             "channels of a patch prior); remove it")
        mapping = {**mapping, "cond_channels": 2}
    kind = mapping.get("type")
    if kind not in _CONSTRUCTOR_KEYS:
        raise InputError(f"model.type: unknown network type {kind!r} (known: "
                         f"{', '.join(sorted(_CONSTRUCTOR_KEYS))})")
    for key in mapping:
        if key != "type" and key not in _CONSTRUCTOR_KEYS[kind]:
            raise InputError(f"model.{key}: unknown key (known: preset, type, "
                             f"{', '.join(_CONSTRUCTOR_KEYS[kind])})")
    try:
        net = network_from_config(mapping)  # checks every value (types, ranges)
    except InputError as e:
        raise InputError(f"model: {e}") from None
    except TypeError as e:
        raise InputError(f"model: {e}") from None
    cfg = dict(net.config)
    need = 2 if channels == "complex" else 1
    out_ch = cfg.get("out_channels", cfg["in_channels"])  # a pixelcnn outputs mixture parameters
    if cfg["in_channels"] != need or out_ch != need:
        raise InputError(f"model.in_channels: the network has {cfg['in_channels']} input / "
                         f"{out_ch} output channels, data.channels {channels!r} needs {need}")
    if patches:
        if kind != "unet":
            raise InputError(f"data.patches: a patch prior is a U-Net (model.type unet), not "
                             f"{kind!r}")
        multiple = net.size_multiple
        for p in sorted({*patches["sizes"], patches["infer"] or multiple}):
            if p % multiple:
                raise InputError(f"data.patches: patch size {p} is not a multiple of {multiple} "
                                 "(the network's resolution levels)")
    elif cfg.get("cond_channels", 0):
        # A conditional phase model: the complex image given its magnitude (1 channel).
        if channels != "complex" or cfg["cond_channels"] != 1 or kind != "unet":
            raise InputError("model.cond_channels: a conditional model is a U-Net with "
                             "cond_channels: 1 (the magnitude) on data.channels: complex")
    return cfg


def resolve_path(p: str, base_dir: Path) -> str:
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base_dir / q).resolve())


def check_sections(raw: Any, known, required=()) -> None:
    """InputError unless ``raw`` is a mapping of the ``known`` sections holding the
    ``required`` ones."""
    if not isinstance(raw, Mapping):
        raise InputError(f"config: expected a mapping of sections, got {_tname(raw)}")
    for key in raw:
        if key not in known:
            raise InputError(f"{key}: unknown section (known: {', '.join(known)})")
    for key in required:
        if key not in raw:
            raise InputError(f"{key}: required section missing")


def validate_config(raw: Any, base_dir=".") -> dict:
    """Validate a config mapping (as read from YAML) and return the resolved config."""
    check_sections(raw, SECTIONS, REQUIRED_SECTIONS)
    base_dir = Path(base_dir)
    out: dict[str, Any] = {}
    for name in SCHEMA:
        out[name] = check_section(name, raw.get(name))
    d = out["diffusion"]
    given = raw.get("diffusion") or {}
    if d["type"] == "none":
        for key in given:
            if key != "type":
                raise InputError(f"diffusion.{key}: not used by diffusion type 'none'")
        out["diffusion"] = {"type": "none"}
    else:
        own = _DIFFUSION_KEYS[d["type"]]
        for key in [k for k in d if k != "type" and k not in own]:
            if key in given:
                raise InputError(f"diffusion.{key}: not used by diffusion type {d['type']!r}")
            del d[key]
        lo, hi = own[:2]
        if not d[lo] < d[hi]:
            raise InputError(f"diffusion.{lo}: must be < diffusion.{hi} ({d[lo]} >= {d[hi]})")
    if out["optim"]["min_lr"] > out["optim"]["lr"]:
        raise InputError(f"optim.min_lr: must be <= optim.lr ({out['optim']['min_lr']} > "
                         f"{out['optim']['lr']})")
    out["data"]["path"] = resolve_path(out["data"]["path"], base_dir)
    out["train"]["output"] = resolve_path(out["train"]["output"], base_dir)
    if out["train"]["init_from"] is not None:
        out["train"]["init_from"] = resolve_path(out["train"]["init_from"], base_dir)
    if out["data"]["patches"] is not None and out["data"]["crop"] is not None:
        raise InputError("data.crop: a patch prior cuts its patches out of whole slices (their "
                         "positions are part of the input); set data.crop: null")
    out["model"] = _model(raw["model"], out["data"]["channels"], out["data"]["patches"])
    _by_model_type(out, raw)
    return {k: out[k] for k in SECTIONS}


def _by_model_type(out: dict, raw: Mapping) -> None:
    """Checks and resolution that depend on the model type (see the module docstring)."""
    model = out["model"]
    held_given = raw.get("heldout") or {}
    grid = out["heldout"]["sample_grid"]
    if model["type"] == "pixelcnn":
        given = raw.get("diffusion") or {}
        for key, value in given.items():
            if key == "type" and value == "none":
                continue
            shown = f"type {value!r}" if key == "type" else "its keys"
            raise InputError(f"diffusion.{key}: a pixelcnn model is trained by maximum "
                             f"likelihood, not under a diffusion ({shown}); remove the diffusion "
                             "section or set diffusion.type: none")
        out["diffusion"] = {"type": "none"}
        if "sigmas" in held_given:
            raise InputError("heldout.sigmas: not used by a pixelcnn model (its held-out number "
                             "is the NLL in bits/dim)")
        del out["heldout"]["sigmas"]
        if grid is not None:
            given_grid = held_given.get("sample_grid") or {}
            if "steps" in given_grid:
                raise InputError("heldout.sample_grid.steps: not used by a pixelcnn model "
                                 "(ancestral sampling, one network call per pixel)")
            del grid["steps"]
        multiple = 2 ** (model["n_levels"] - 1)
    else:
        if out["diffusion"]["type"] == "none":
            raise InputError(f"diffusion.type: 'none' is only for likelihood models (model.type "
                             f"pixelcnn); a {model['type']} score network needs 've', 'vp' or "
                             "'edm'")
        multiple = 2 ** (len(model.get("channel_mults", [1])) - 1)
    if grid is not None and (grid["size"][0] % multiple or grid["size"][1] % multiple):
        raise InputError(f"heldout.sample_grid.size: {grid['size']} is not divisible by "
                         f"{multiple} (the network's resolution levels)")


def apply_overrides(raw: Mapping, overrides: Mapping[str, Any]) -> dict:
    """Return a copy of ``raw`` with ``{"section.key": value}`` set (validated afterwards)."""
    raw = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        sec = raw.get(section)
        sec = dict(sec) if isinstance(sec, Mapping) else {}
        sec[key] = value
        raw[section] = sec
    return raw


def read_yaml(path):
    """``yaml.safe_load`` of a config file (no Python tags, no code); an unreadable file or bad
    YAML is one InputError line naming the file, line and column."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read config ({getattr(e, 'strerror', None) or e})"
                         ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        if "python/" in what or "could not determine a constructor" in what:
            what += " (Python tags are not allowed in configs)"
        raise InputError(f"{p}: invalid YAML{where}: {what}") from None


def load_yaml_config(path, overrides: Mapping[str, Any] | None, validate) -> dict:
    """Read a YAML config, apply ``overrides`` (``{"train.steps": 10}``) and return
    ``validate(raw, base_dir)`` (relative paths: to the file's folder); errors name the file."""
    p = Path(path)
    raw = read_yaml(p)
    if overrides:
        raw = apply_overrides(raw if isinstance(raw, Mapping) else {}, overrides)
    try:
        return validate(raw, p.resolve().parent)
    except InputError as e:
        raise InputError(f"{p}: {e}") from None


def load_config(path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a YAML prior config, apply ``overrides``, validate, resolve."""
    return load_yaml_config(path, overrides, validate_config)
