"""A training run's log: ``log.jsonl`` (one JSON record per line) and TensorBoard when installed.

On resume, records after the checkpoint's step (a killed run's tail, whose last line may be
partial) are dropped; a fresh run replaces the file. Only the active (rank-0) logger writes.
``tensorboard``: ``"auto"`` (use it when importable, warn once otherwise), ``True`` (required:
:func:`check_tensorboard` fails before anything is written) or ``False``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from mriprior.errors import InputError
from mriprior.io.files import atomic_write_text

__all__ = ["Logger", "check_tensorboard", "TB_MISSING"]

TB_MISSING = ("train.tensorboard: true, but TensorBoard is not installed (pip install "
              "'mriprior[tensorboard]', or set it to false)")


def check_tensorboard(wanted) -> None:
    """Fail before anything is written when TensorBoard is required but missing."""
    if wanted is True:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise InputError(TB_MISSING) from None


class Logger:
    def __init__(self, output: Path, active: bool, resume_step: int | None,
                 tensorboard="auto"):
        self.active = active
        self.path = output / "log.jsonl"
        self.tb = None
        if not active:
            return
        if resume_step is not None and self.path.exists():
            # Drop records written after the checkpoint we resume from (a killed run's tail,
            # whose last line may be partial).
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line) if line.strip() else None
                except ValueError:
                    warnings.warn(f"{self.path}: dropped an unreadable line (a killed run's "
                                  "partial record)")
                    continue
                if isinstance(rec, dict) and rec.get("step", 0) <= resume_step:
                    kept.append(line)
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard is False:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if tensorboard is True:
                raise InputError(TB_MISSING) from None
            warnings.warn("TensorBoard is not installed: logging to log.jsonl only (pip install "
                          "'mriprior[tensorboard]' for TensorBoard logs)")
            return
        self.tb = SummaryWriter(str(output / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, step)
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        self.tb.add_scalar(f"{k}/{kk}", vv, step)

    def images(self, images: dict, step: int) -> None:
        """``{"tag": (1, H, W) in [0, 1]}`` to TensorBoard; a failure disables it with a warning."""
        if self.tb is None:
            return
        try:
            for tag, img in images.items():
                self.tb.add_image(tag, img, step)
        except Exception as e:  # never let TensorBoard stop training
            warnings.warn(f"TensorBoard image logging failed ({e}); sample grids disabled")
            self.tb = None

    def close(self):
        if self.tb is not None:
            self.tb.close()
