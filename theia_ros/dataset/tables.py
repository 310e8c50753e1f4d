"""Arrow tables for the parquet files of one episode, and parquet read/write helpers.

Vector features are ``fixed_size_list<float32>[D]`` columns (what HF ``datasets``
writes for a ``Sequence(length=D)`` feature), scalars are plain columns. Every episode's
metadata row has the same columns, so LeRobot can concatenate the files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from theia_ros.dataset.layout import to_jsonable
from theia_ros.dataset.stats import Stats
from theia_ros.errors import TheiaError


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write and fsync (callers place the file atomically via the commit step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")
    _fsync_file(path)


def read_parquet(path: Path, filters: list[tuple[str, str, Any]] | None = None) -> pa.Table:
    """Parquet -> table, with a one-line error naming the file when it is missing or bad."""
    try:
        return pq.read_table(path, filters=filters)
    except FileNotFoundError as exc:
        raise TheiaError(f"{path}: parquet file missing") from exc
    except (pa.ArrowException, OSError) as exc:
        raise TheiaError(f"{path}: cannot read parquet ({exc}); truncated or corrupt") from exc


def frame_table(arrays: dict[str, np.ndarray], vector_keys: list[str]) -> pa.Table:
    """One episode's frames -> table. ``arrays[k]``: ``[T, D]`` for vectors, ``[T]`` else."""
    columns: dict[str, pa.Array] = {}
    for key, values in arrays.items():
        if key in vector_keys:
            flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1), pa.float32())
            columns[key] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        elif values.dtype.kind == "f":
            columns[key] = pa.array(values.astype(np.float32), pa.float32())
        else:
            columns[key] = pa.array(values.astype(np.int64), pa.int64())
    return pa.table(columns)


def column_to_numpy(table: pa.Table, key: str) -> np.ndarray:
    """A column as numpy: list columns -> ``[T, D]``, scalar columns -> ``[T]``."""
    column = table.column(key).combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False)


def episode_row(
    *,
    episode_index: int,
    task: str,
    length: int,
    chunk_index: int,
    file_index: int,
    from_index: int,
    video_keys: list[str],
    fps: int,
    success: bool,
    recovered: bool,
    stats: Stats,
) -> pa.Table:
    """The ``meta/episodes`` row of one episode (LeRobot v3.0 columns + our extras)."""
    row: dict[str, Any] = {
        "episode_index": episode_index,
        "tasks": [task],
        "length": length,
        "data/chunk_index": chunk_index,
        "data/file_index": file_index,
        "dataset_from_index": from_index,
        "dataset_to_index": from_index + length,
    }
    for key in video_keys:
        row[f"videos/{key}/chunk_index"] = chunk_index
        row[f"videos/{key}/file_index"] = file_index
        row[f"videos/{key}/from_timestamp"] = 0.0
        row[f"videos/{key}/to_timestamp"] = length / fps
    row["meta/episodes/chunk_index"] = chunk_index
    row["meta/episodes/file_index"] = file_index
    row["success"] = bool(success)
    row["recovered"] = bool(recovered)
    for key, feats in stats.items():
        for stat, value in feats.items():
            arr = np.asarray(value)
            row[f"stats/{key}/{stat}"] = (arr.astype(np.int64) if stat == "count"
                                          else arr.astype(np.float64)).tolist()
    return pa.Table.from_pylist([row])


def tasks_table(tasks: dict[str, int]) -> pa.Table:
    """``meta/tasks.parquet``: pandas reads it back with the task text as the index."""
    ordered = sorted(tasks.items(), key=lambda kv: kv[1])
    table = pa.table({
        "task_index": pa.array([i for _, i in ordered], pa.int64()),
        "task": pa.array([t for t, _ in ordered], pa.string()),
    })
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def read_tasks(path: Path) -> dict[str, int]:
    """task text -> task_index; accepts LeRobot's unnamed-index spelling too."""
    table = read_parquet(path)
    names = table.column_names
    text_col = "task" if "task" in names else "__index_level_0__"
    if text_col not in names or "task_index" not in names:
        raise TheiaError(f"{path}: expected columns 'task' and 'task_index', got {names}")
    texts = table.column(text_col).to_pylist()
    indices = table.column("task_index").to_pylist()
    return {str(t): int(i) for t, i in zip(texts, indices)}


def stats_to_json(stats: Stats) -> dict[str, Any]:
    return to_jsonable(stats)
