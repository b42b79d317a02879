"""Markdown reports: benchmarks and experiments put their tables into the docs this way."""

from __future__ import annotations

import os

from mriprior.io.files import atomic_write, atomic_write_text


def replace_section(path, head: str, section: str) -> None:
    """Put ``section`` (starting with the ``## ...`` line ``head``) into the markdown file
    ``path``: replace the section with that heading (up to the next ``## ``), or append it.
    Written atomically; a missing file is created."""
    text = open(path).read() if os.path.exists(path) else ""
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + section.rstrip("\n") + "\n" + (text[nxt:] if nxt >= 0 else "")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section.rstrip("\n") + "\n"
    atomic_write_text(path, text)


def display_magnitude(img) -> tuple:
    """``|img[0]|`` as numpy and its display maximum (the 99.5th percentile)."""
    import numpy as np

    r = img[0].abs().cpu().numpy()
    return r, float(np.percentile(r, 99.5))


def save_figure(fig, path, dpi: int = 100) -> None:
    """Save a matplotlib figure to ``path`` (PNG) atomically and close it: written to a
    temporary name in the same folder, then renamed, so no half-written figure is left."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda t: fig.savefig(t, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
