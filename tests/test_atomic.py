"""``theia_ros.atomic``: the one atomic-write helper every checkpoint, dataset and report uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from theia_ros.atomic import atomic_write, atomic_write_bytes, atomic_write_json


def test_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "f.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert target.read_text().endswith("\n")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old weights")

    def half_write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
