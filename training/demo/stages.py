"""Stage bookkeeping of ``theia demo``: skip what is done, refuse to mix configurations.

``<out>/stages.json`` holds, per finished stage, the settings it was made with (its key),
its wall time and when it finished. It is rewritten atomically after each stage, so an
interrupted demo re-run with the same settings continues with the first unfinished stage
(the stages themselves resume too: recording per episode, training from its last state).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from theia_ros.atomic import atomic_write_json as _write_json_atomic
from theia_ros.errors import TheiaError

STAGES_FILE = "stages.json"
STARTED_DIR = ".started"  # <out>/.started/<stage>.json: key of a stage begun, maybe unfinished


@dataclass
class StageRecord:
    key: dict[str, Any]
    wall_s: float
    finished: str


@dataclass
class StageBook:
    """Finished stages under one output directory."""

    out: Path
    records: dict[str, StageRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, out: str | Path) -> StageBook:
        out = Path(out)
        path = out / STAGES_FILE
        book = cls(out)
        if not path.exists():
            return book
        try:
            raw = json.loads(path.read_text())
            book.records = {name: StageRecord(r["key"], float(r["wall_s"]), r["finished"])
                            for name, r in raw.items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TheiaError(f"{path}: unreadable stage record ({exc}); delete it to redo "
                             "every stage") from exc
        return book

    def is_done(self, name: str, key: dict[str, Any], output: Path) -> bool:
        """True when ``name`` finished with ``key`` and ``output`` still exists.

        Raises ``TheiaError`` when it finished with different settings (a new ``--out`` or
        deleting the stage's output is the user's call, never ours).
        """
        rec = self.records.get(name)
        if rec is None:
            return False
        if rec.key != key:
            diff = sorted(k for k in set(key) | set(rec.key) if key.get(k) != rec.key.get(k))
            raise TheiaError(f"{self.out / STAGES_FILE}: stage {name!r} was made with other "
                             f"settings ({', '.join(f'{k}: {rec.key.get(k)!r} -> {key.get(k)!r}' for k in diff)}); "  # noqa: E501
                             "use a new --out, or delete "
                             f"{output} to redo it")
        return output.exists()

    def check_fresh(self, name: str, key: dict[str, Any], output: Path) -> None:
        """Refuse to resume into an output that a *different* unfinished run started."""
        marker = self.out / STARTED_DIR / f"{name}.json"
        if marker.exists():
            old = json.loads(marker.read_text())
            if old != key:
                raise TheiaError(f"{output}: a {name} stage with other settings was started "
                                 "here and not finished; use a new --out or delete it")
        elif output.is_file() or (output.is_dir() and any(output.iterdir())):
            raise TheiaError(f"{output}: exists but has no stage record here (made by an "
                             "older theia demo, or by something else); use a new --out")
        marker.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(marker, key)

    def finish(self, name: str, key: dict[str, Any], wall_s: float) -> None:
        self.records[name] = StageRecord(key, wall_s, time.strftime("%Y-%m-%d %H:%M:%S"))
        doc = {n: {"key": r.key, "wall_s": r.wall_s, "finished": r.finished}
               for n, r in self.records.items()}
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.out / STAGES_FILE, doc)


class StageRunner:
    """Runs each stage unless the stage book says it is done with the same settings."""

    def __init__(self, book: StageBook, keys: dict[str, Any], log: Callable[[str], None]):
        self.book, self.keys, self.log = book, keys, log
        self.walls: dict[str, dict[str, Any]] = {}

    def run(self, name: str, output: Path, work: Callable[[], None]) -> None:
        book, key, log = self.book, self.keys[name], self.log
        if book.is_done(name, key, output):
            rec = book.records[name]
            log(f"[{name}] already done with these settings ({rec.wall_s:.0f} s on "
                f"{rec.finished}): skipped")
            self.walls[name] = {"wall_s": 0.0, "skipped": True, "original_wall_s": rec.wall_s}
            return
        book.check_fresh(name, key, output)
        log(f"[{name}] ...")
        t0 = time.perf_counter()
        work()
        wall = time.perf_counter() - t0
        book.finish(name, key, wall)
        self.walls[name] = {"wall_s": wall, "skipped": False}
        log(f"[{name}] done in {wall:.0f} s")
