"""Import options: the allowed values and their checks (one :class:`_Options` per import)."""

from __future__ import annotations

import dataclasses
import math


from mriprior.errors import InputError


FORMATS = ("dicom", "nifti", "image", "fastmri", "cfl")
RESIZE_MODES = ("fit", "crop", "none")
NORMALIZE_MODES = ("max", "p99", "none")
KINDS = ("auto", "magnitude", "complex")
COMBINES = ("espirit", "rss")
SUBJECT_FROM = ("auto", "file", "dir")
AXES = ("x", "y", "z")
SPLITS = ("train", "val", "test")
EMPTY_FRACTION = 0.01  # a slice needs >= 1 % of its pixels above min_signal x volume max
MIN_SIDE = 4           # slices smaller than this on a side are not images
HASH_CHARS = 16

# =============================================================================================
# options

@dataclasses.dataclass(frozen=True)
class _Options:
    shape: tuple[int, int]
    resize: str
    normalize: str
    axes: tuple[str, ...]
    kind: str
    combine: str
    split: tuple[float, float, float]
    subject_from: str
    min_signal: float


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise InputError(f"{name}={value!r}: must be one of {', '.join(allowed)}")
    return value


def _check_shape(shape) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in shape)
        ok = all(float(v) == int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape={shape!r}: expected two positive integers (Y, X)") from None
    if not ok or y < MIN_SIDE or x < MIN_SIDE:
        raise InputError(f"shape={tuple(shape)!r}: expected two integers >= {MIN_SIDE} (Y, X)")
    return y, x


def _check_split(split) -> tuple[float, float, float]:
    try:
        f = tuple(float(v) for v in split)
    except (TypeError, ValueError):
        raise InputError(f"split={split!r}: expected three fractions (train, val, test)") from None
    if len(f) != 3 or any(not math.isfinite(v) or v < 0 for v in f) or abs(sum(f) - 1) > 1e-6:
        raise InputError(f"split={tuple(split)!r}: expected three fractions >= 0 (train, val, "
                         "test) that sum to 1")
    return f


def _check_axes(axes) -> tuple[str, ...]:
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    if not axes or any(a not in AXES for a in axes) or len(set(axes)) != len(axes):
        raise InputError(f"axes={axes!r}: expected one or more distinct of x, y, z")
    return axes


def _options(shape, resize, normalize, axes, kind, combine, split, subject_from,
             min_signal) -> _Options:
    try:
        ms = float(min_signal)
    except (TypeError, ValueError):
        ms = float("nan")
    if not 0 <= ms < 1:
        raise InputError(f"min_signal={min_signal!r}: must lie in [0, 1)")
    return _Options(_check_shape(shape), _choice("resize", resize, RESIZE_MODES),
                    _choice("normalize", normalize, NORMALIZE_MODES), _check_axes(axes),
                    _choice("kind", kind, KINDS), _choice("combine", combine, COMBINES),
                    _check_split(split), _choice("subject_from", subject_from, SUBJECT_FROM),
                    ms)
