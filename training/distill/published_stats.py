"""The Theia authors' per-teacher ImageNet feature statistics: read from a folder, or downloaded.

They normalise the translators' targets (``(x - mean) / std`` per channel) of the published
models, so with them a model can be distilled without an ImageNet statistics pass, and a
published checkpoint's translator outputs can be decoded back into teacher space
(``x * std + mean``). They were computed on teacher inputs made by each teacher's own hub
processor (``model.teacher_inputs=published``).

Files (github.com/bdaiinstitute/theia, ``feature_stats/``, at a pinned commit), one pair per
teacher, hub id with ``/`` written as ``_``::

    imagenet_mean_facebook_dinov2-large.npy    float32 [1024]   per-channel mean
    imagenet_var_facebook_dinov2-large.npy     float32 [1024]   per-channel VARIANCE

Note the second file is the variance, not the standard deviation: ``std = sqrt(var)``.
The files are under the Theia licence (non-commercial research use), so theia-ros does not
ship them: point at a folder holding them, or say ``published`` to download them once into
``~/.cache/theia-ros/feature-stats/<commit>/``. Arrays are read with ``allow_pickle=False``.

Example::

    stats = read_published_stats("theia-feature-stats/")     # {hub id: (mean, var)}
    folder = fetch_published_stats(["facebook/dinov2-large"])  # downloads when not cached
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policies.teacher_specs import TEACHERS
from theia_ros.atomic import atomic_write_bytes
from theia_ros.errors import TheiaError

PUBLISHED = "published"  # the statistics source that means "download the published files"
PUBLISHED_REPO = "bdaiinstitute/theia"
PUBLISHED_COMMIT = "59d0448f0c917f5c523142096ee608963012a8d2"
PUBLISHED_URL = (f"https://raw.githubusercontent.com/{PUBLISHED_REPO}/{PUBLISHED_COMMIT}/"
                 "feature_stats")


def file_names(hub_id: str) -> tuple[str, str]:
    """``(mean file, variance file)`` of one teacher."""
    key = hub_id.replace("/", "_")
    return f"imagenet_mean_{key}.npy", f"imagenet_var_{key}.npy"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "theia-ros" / "feature-stats" / PUBLISHED_COMMIT[:12]


def _load_vector(data: bytes | Path, name: str, channels: int | None = None) -> np.ndarray:
    """A finite float vector (of ``channels`` values when given) from .npy bytes or a file."""
    try:
        arr = np.load(io.BytesIO(data) if isinstance(data, bytes) else data,
                      allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TheiaError(f"{name}: not a readable .npy array ({exc})") from None
    want = (channels,) if channels is not None else None
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or (want and arr.shape != want):
        raise TheiaError(f"{name}: expected a vector of {channels or 'C'} values, got shape "
                         f"{getattr(arr, 'shape', None)}")
    if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
        raise TheiaError(f"{name}: expected finite floats, got {arr.dtype}")
    return arr.astype(np.float32)


def read_published_stats(folder: str | os.PathLike, teachers: Sequence[str] | None = None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{hub id: (mean [C], variance [C])}`` float32 from a folder of the published files.

    ``teachers``: the hub ids needed (each must be there); default every known teacher whose
    pair of files is in the folder (at least one). Widths are checked against the model
    that uses them (``TeacherStats.check``), not here.
    """
    root = Path(folder)
    if not root.is_dir():
        raise TheiaError(f"{root}: not a folder of published feature statistics")
    wanted = list(teachers) if teachers is not None else [
        hub for hub in TEACHERS if all((root / f).is_file() for f in file_names(hub))]
    if not wanted:
        raise TheiaError(f"{root}: no published feature statistics found (expected files "
                         f"like {file_names('facebook/dinov2-large')[0]})")
    out = {}
    for hub in wanted:
        mean_file, var_file = (root / f for f in file_names(hub))
        for f in (mean_file, var_file):
            if not f.is_file():
                raise TheiaError(f"{f}: missing (published statistics of {hub})")
        mean = _load_vector(mean_file, str(mean_file))
        var = _load_vector(var_file, str(var_file), mean.shape[0])
        if np.any(var < 0):
            raise TheiaError(f"{var_file}: negative variance (is this a variance file?)")
        out[hub] = (mean, var)
    return out


def fetch_published_stats(teachers: Sequence[str], cache_dir: str | os.PathLike | None = None,
                          base_url: str | None = None, timeout_s: float = 20.0) -> Path:
    """Folder holding the published files of ``teachers``, downloading the missing ones.

    ``base_url`` defaults to the public repository at the pinned commit. Each file is checked
    (a float vector of the teacher's width) before it is written, atomically, into the
    cache; without network a missing file is a one-line error.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base_url = base_url or PUBLISHED_URL
    for hub in teachers:
        if hub not in TEACHERS:
            raise TheiaError(f"no published statistics exist for teacher {hub!r}")
        for name in file_names(hub):
            path = root / name
            if path.is_file():
                continue
            url = f"{base_url}/{name}"
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:
                    data = response.read()
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise TheiaError(f"cannot download the published feature statistics from "
                                 f"{url} ({reason}); without network, pass a folder holding "
                                 f"the imagenet_mean_*.npy / imagenet_var_*.npy files "
                                 f"instead of {PUBLISHED!r}") from None
            _load_vector(data, url, TEACHERS[hub].channels)
            atomic_write_bytes(path, data)
    return root
