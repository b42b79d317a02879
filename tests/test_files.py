"""mriprior.io.files: atomic writes, --force safety, the output lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mriprior.errors import InputError
from mriprior.io.files import (atomic_write, atomic_write_json, check_replaceable, lock_path,
                               locks_output, make_parent, output_lock)


def test_atomic_write_leaves_old_file_and_no_temporary_on_failure(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    assert p.read_text() == '{\n "x": 1\n}\n'

    def half(t):
        t.write_text("partial")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        atomic_write(p, half)
    assert p.read_text() == '{\n "x": 1\n}\n'
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]
    with pytest.raises(ValueError):
        atomic_write_json(p, {"x": float("nan")})  # strict JSON unless asked
    atomic_write_json(p, {"x": float("nan")}, allow_nan=True)
    assert "NaN" in p.read_text()


def test_check_replaceable(tmp_path):
    check_replaceable(tmp_path / "missing", lambda p: False, "ours")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", lambda p: False, "ours")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.txt").write_text("x")
    with pytest.raises(InputError, match=r"user: not ours \(it holds a.txt\)"):
        check_replaceable(tmp_path / "user", lambda p: False, "ours")
    check_replaceable(tmp_path / "user", lambda p: True, "ours")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        check_replaceable(tmp_path / "file", lambda p: True, "ours")


def test_make_parent_names_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"f: is a file, not a folder"):
        make_parent(tmp_path / "f" / "g" / "out")
    made = make_parent(tmp_path / "a" / "b" / "out")
    assert made == [tmp_path / "a", tmp_path / "a" / "b"] and (tmp_path / "a" / "b").is_dir()


def test_lock_is_reentrant_exclusive_across_processes_and_removed(tmp_path):
    out = tmp_path / "deep" / "out"
    with output_lock(out, "job") as lp:
        assert lp == lock_path(out) and lp.read_text().strip().isdigit()
        with output_lock(out, "job"):  # the same process may nest (augment -> DatasetWriter)
            pass
        assert lp.exists()
        code = ("import sys\nfrom mriprior.io.files import output_lock\n"
                "try:\n    output_lock(sys.argv[1], 'job').__enter__()\n"
                "except Exception as e:\n    print(e)\n")
        r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                           text=True, check=True)
        assert "another job is writing this output" in r.stdout
        assert f"PID {__import__('os').getpid()}" in r.stdout
    assert not lock_path(out).exists()
    assert not (tmp_path / "deep").exists()  # the folder the lock made is removed again


def test_locks_output_only_on_rank_0(tmp_path, monkeypatch):
    seen = []

    @locks_output("out", "job")
    def job(out, rank=None):
        seen.append(lock_path(out).exists())

    job(tmp_path / "o")
    job(tmp_path / "o", rank=1)
    monkeypatch.setenv("RANK", "2")
    job(tmp_path / "o")
    assert seen == [True, False, False]
