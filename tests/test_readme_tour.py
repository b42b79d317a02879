"""The README's short tour runs verbatim (every line through the real command-line entry point,
in a fresh folder), and its images are what the tour says they are."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np

from mriprior.cli.main import main
from mriprior.io.cfl import read_cfl

REPO = Path(__file__).resolve().parents[1]


def tour_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## A short tour.*?```bash\n(.*?)```", text, re.S).group(1)
    block = block.replace("\\\n", " ")
    cmds = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "mriprior", line
            cmds.append(words[1:])
    return cmds


def test_readme_tour_runs_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cmds = tour_commands()
    assert len(cmds) >= 10
    for words in cmds:
        assert main(words) == 0, words
    out = capsys.readouterr().out
    psnr = [float(v) for v in re.findall(r"PSNR ([\d.]+) dB", out)]
    assert len(psnr) == 2 and min(psnr) > 25, out  # l1 and posterior MMSE vs the reference
    for name in ("img", "mmse", "std", "mmse_l", "img_p", "ref"):
        assert np.isfinite(read_cfl(name)).all(), name
    assert (tmp_path / "mmse.png").stat().st_size > 1000
