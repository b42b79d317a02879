"""The top-level API: every public name resolves, every dotted path the docs name exists, and
the example of docs/api.md runs."""

from __future__ import annotations

import importlib
import os
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


def test_command_process_tunes_malloc_and_exits_fast(tmp_path):
    """The `mriprior` process keeps freed memory in glibc's heap unless the user set MALLOC_*,
    and skips the interpreter's teardown at exit, after threads, atexit handlers and flushing,
    with the command's exit code (0 done, 2 bad input, 0 for --help)."""
    from mriprior.cli.main import tune_malloc

    code = ("import os, sys\nfrom mriprior.cli.main import tune_malloc\n"
            "print(tune_malloc())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    for extra, expect in (({}, str(sys.platform.startswith("linux"))),
                          ({"MALLOC_ARENA_MAX": "2"}, "False")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=dict(env, **extra))
        assert out.stdout.strip() == expect
    assert isinstance(tune_malloc(), bool)
    flag, late = tmp_path / "atexit", tmp_path / "thread"
    code = ("import atexit, threading, time, sys\n"
            "from mriprior.cli.main import exit_fast_on_shutdown\n"
            "status = [1]\nexit_fast_on_shutdown(status)\n"
            f"atexit.register(lambda: open({str(flag)!r}, 'w').write('ran'))\n"
            f"threading.Thread(target=lambda: (time.sleep(0.3), open({str(late)!r}, 'w')"
            ".write('done'))).start()\n"
            "print('result', end='')\nstatus[0] = 3\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # the thread was joined, the later handler ran, stdout flushed, the chosen code kept
    assert (r.returncode, r.stdout, flag.read_text(), late.read_text()) == (3, "result", "ran",
                                                                            "done")
    # the real command: output written, exit codes 0 and 2
    cmd = [sys.executable, "-c", "from mriprior.cli.main import main; main()"]
    assert subprocess.run(cmd + ["phantom", "-x", "32", str(tmp_path / "ph")]).returncode == 0
    assert mriprior.read_cfl(tmp_path / "ph").shape == (32, 32)
    r = subprocess.run(cmd + ["phantom", "-x", "0", str(tmp_path / "bad")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "error" in r.stderr and not (tmp_path / "bad.cfl").exists()
    r = subprocess.run(cmd + ["phantom", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout
    r = subprocess.run(cmd + ["phantom"], capture_output=True, text=True)
    assert r.returncode == 2 and "required: output" in r.stderr

