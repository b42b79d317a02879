"""Salted subject ids and the deterministic train / val / test split of a subject."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


from mriprior.errors import InputError
from mriprior.data.importers.options import HASH_CHARS, SPLITS


# =============================================================================================
# salt, hashes, splits

def salt_file() -> Path:
    """Where the per-user salt lives: $MRIPRIOR_SALT_FILE, else $XDG_CONFIG_HOME/mriprior/salt,
    else ~/.config/mriprior/salt."""
    env = os.environ.get("MRIPRIOR_SALT_FILE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "mriprior" / "salt"


def load_salt() -> str:
    """The per-user salt, created (random, 256 bits, file mode 0600) on first use."""
    p = salt_file()
    try:
        text = p.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: salt file unreadable ({e}); fix it or set MRIPRIOR_SALT_FILE") \
            from None
    if text is None:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another import
            return load_salt()
        text = secrets.token_hex(32)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text + "\n")
    if not text:
        raise InputError(f"{p}: salt file is empty; delete it to create a new one (subject ids "
                         "and splits of new imports then change)")
    return text


def subject_hash(salt: str, key: str) -> str:
    """``sha256(salt + NUL + key)`` as 16 hex digits (used for subjects and hashed paths)."""
    data = f"{salt}\x00{key}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def split_of(digest: str, fractions) -> str:
    """The split of a subject hash: ``int(digest, 16) / 16**len`` cut at cumulative fractions."""
    u = int(digest, 16) / 16 ** len(digest)
    edge = 0.0
    for name, f in zip(SPLITS, fractions):
        edge += f
        if u < edge and f > 0:
            return name
    return [n for n, f in zip(SPLITS, fractions) if f > 0][-1]
