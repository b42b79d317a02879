"""PNG/JPEG (and other single-frame Pillow formats) magnitude images.

:func:`read_image` returns ``(image, meta)``: ``image`` is float32 of shape ``(y, x)`` (rows top
to bottom, columns left to right, after applying any EXIF orientation tag) holding the stored
sample values unscaled: 0..255 for 8-bit, 0..65535 for 16-bit, 0/1 for 1-bit images.
``meta['max_value']`` gives the top of that range so callers can normalise.

Conversions, recorded in ``meta['converted']``:

* grayscale ``L``/``I;16``/``I``/``F`` and 1-bit images: none (``None``);
* gray + alpha (``LA``): the alpha channel is dropped (``"drop_alpha"``);
* colour (``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``...): luminance
  ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, the weights Pillow uses), computed in float
  without rounding (``"rgb_to_luminance"``; alpha ignored);
* palette (``P``): the palette is applied; a palette of grays gives those gray levels
  (``"palette_to_gray"``), a colour palette gives luminance (``"palette_to_luminance"``).

``meta`` also has ``format`` (e.g. ``"PNG"``), ``mode`` (Pillow's mode in the file),
``bit_depth``, ``shape`` and ``luminance_weights`` when luminance was computed. Text chunks and
EXIF data (which may carry names, dates, locations) are not copied. Multi-frame files
(animated PNG/GIF, multi-page TIFF), truncated, corrupt and unreadable files raise
:class:`~mriprior.errors.InputError` naming the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mriprior.errors import InputError

__all__ = ["read_image", "read_image_bytes", "LUMINANCE_WEIGHTS"]

LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)

_GRAY_BITS = {"1": 1, "L": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16,
              "I": 32, "F": 32}


def _luminance(rgb: np.ndarray) -> np.ndarray:
    w = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float64)
    return (rgb[..., :3].astype(np.float64) @ w).astype(np.float32)


def _open(p: Path) -> Image.Image:
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an image file")
    if not p.exists():
        raise InputError(f"{p}: file not found")
    return _load(lambda: p, p)


def _load(source, p) -> Image.Image:
    """Open ``source()`` (a path or a fresh file object) with Pillow; errors name ``p``."""
    try:
        with Image.open(source()) as probe:  # verify() checks PNG chunk CRCs; it consumes it
            probe.verify()
        img = Image.open(source())
        img.load()
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise InputError(f"{p}: corrupt or truncated image ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from e
    return img


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a single-frame grayscale or colour image as float32 ``(y, x)`` plus metadata."""
    p = Path(path)
    return _read(_open(p), p)


def read_image_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, dict]:
    """:func:`read_image` of a file's bytes held in memory (errors name ``name``)."""
    return _read(_load(lambda: io.BytesIO(data), name), name)


def _read(img: Image.Image, p) -> tuple[np.ndarray, dict]:
    try:
        n_frames = int(getattr(img, "n_frames", 1))
        if n_frames > 1:
            raise InputError(f"{p}: image has {n_frames} frames; read_image reads "
                             "single images")
        fmt, mode = img.format, img.mode
        orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
            orientation = 1
        meta: dict = {"format": fmt, "mode": mode, "converted": None}
        if mode in _GRAY_BITS:
            arr = np.asarray(img)
            if mode == "1":
                arr = arr.astype(np.float32)
            bits = _GRAY_BITS[mode]
            if mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
                bits = 16  # 16-bit PNGs open as mode "I" in some Pillow versions
            out = arr.astype(np.float32)
        elif mode == "LA":
            out = np.asarray(img)[..., 0].astype(np.float32)
            bits, meta["converted"] = 8, "drop_alpha"
        elif mode in ("P", "PA"):
            rgb = np.asarray(img.convert("RGB"))
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1],
                                                                           rgb[..., 2]):
                out = rgb[..., 0].astype(np.float32)
                meta["converted"] = "palette_to_gray"
            else:
                out = _luminance(rgb)
                meta["converted"] = "palette_to_luminance"
                meta["luminance_weights"] = list(LUMINANCE_WEIGHTS)
            bits = 8
        else:
            try:
                rgb = np.asarray(img if mode in ("RGB", "RGBA", "RGBX") else img.convert("RGB"))
            except (ValueError, OSError) as e:
                raise InputError(f"{p}: unsupported image mode {mode!r}") from e
            out = _luminance(rgb)
            bits = 8
            meta["converted"] = "rgb_to_luminance"
            meta["luminance_weights"] = list(LUMINANCE_WEIGHTS)
    finally:
        img.close()
    if out.ndim != 2:
        raise InputError(f"{p}: decoded image has shape {out.shape}; expected (y, x)")
    meta["bit_depth"] = bits
    meta["max_value"] = (1.0 if bits == 1 else float(2 ** bits - 1)) if bits <= 16 else None
    meta["shape"] = list(out.shape)
    if orientation not in (None, 1):
        meta["exif_orientation"] = int(orientation)
    return np.ascontiguousarray(out, dtype=np.float32), meta
