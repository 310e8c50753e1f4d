"""Atomic file writes: readers see the old file or the new one, never half of one.

The data goes to a temporary file in the same directory (so the rename never crosses
filesystems), is fsynced (so a power cut after the rename cannot leave an empty file), and is
renamed over the target with ``os.replace``. On any error the temporary file is removed.
One implementation for checkpoints, datasets, bundles, caches and reports.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, then fsync and rename ``tmp_path`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """fsync ``tmp`` (a finished file in ``path``'s directory) and rename it onto ``path``.

    For writers that must stream into their temporary file themselves (video muxers,
    memory-mapped arrays, exporters that take a path).
    """
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return Path(path)


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """A unique temporary name beside ``path`` for :func:`commit` (``suffix`` keeps an
    extension that the writing library insists on)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int = 2,
                      sort_keys: bool = False) -> Path:
    """``data`` as UTF-8 JSON with a trailing newline."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))
