"""The top-level API: every public name resolves, every dotted path the docs name exists, and
the example of docs/api.md runs."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import mriprior

REPO = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves():
    for name in mriprior.__all__:
        assert getattr(mriprior, name) is not None, name
    assert set(mriprior.__all__) <= set(dir(mriprior))


def test_import_is_light():
    """`import mriprior` must not pull torch in (the command line's start-up)."""
    code = "import sys, mriprior; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for a in parts[i:]:
                obj = getattr(obj, a)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_path_in_the_docs_exists():
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"),
             *(REPO / "src" / "mriprior").rglob("*.py")]
    bad = set()
    for f in files:
        for m in re.finditer(r"\bmriprior(?:\.[A-Za-z_]\w*)+", f.read_text()):
            if m.group(0).endswith(".json"):  # a file name (mriprior.json), not a path
                continue
            if not _resolves(m.group(0)):
                bad.add(f"{f.relative_to(REPO)}: {m.group(0)}")
    assert not bad, sorted(bad)


def test_docs_api_example_runs(tmp_path, monkeypatch, capsys):
    text = (REPO / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 14
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code, "docs/api.md", "exec"), ns)
    assert "psnr" in capsys.readouterr().out
    assert ns["post"].mmse.shape == (1, 128, 128) and ns["post"].std.shape == (1, 128, 128)
    assert mriprior.evaluate(ns["img"], ns["l1"][:, 0], scale="lsq")["psnr"] > 25
    out = mriprior.read_cfl(tmp_path / "mmse")
    assert out.shape == (128, 128) and np.isfinite(out).all()


def test_command_help_does_not_import_torch():
    """`mriprior CMD --help` builds its parser without importing torch (start-up well under a
    second): heavy imports live in each command's run()."""
    code = ("import sys\nfrom mriprior.cli.main import COMMANDS, build_parser\n"
            "for name in COMMANDS:\n    build_parser(name)\n"
            "    if 'torch' in sys.modules:\n        print(name); break\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"building the parser of {out.stdout.strip()} imports torch"
