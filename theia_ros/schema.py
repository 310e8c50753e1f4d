"""Typed metadata schemas: a dataclass lists the fields, ``parse`` checks a mapping against it.

Bundles, checkpoints and policies carry their metadata as YAML/JSON written by us but read on
a robot from files anyone can edit. ``parse`` turns such a mapping into a frozen dataclass
or raises one ``TheiaError`` line naming the file and the dotted field: wrong types,
out-of-range numbers, unknown choices, non-finite floats, unknown or missing fields.

Field types come from the dataclass annotations: ``int``, ``float`` (ints accepted),
``str``, ``bool``, ``Any``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``
and nested schema dataclasses. Bounds and choices go in the field's metadata via ``fld``
and apply to the value, or to every item of a list/tuple.

Example::

    @dataclass(frozen=True)
    class Camera:
        name: str = fld()
        height: int = fld(ge=1, le=8192)

    cam = parse(Camera, {"name": "front", "height": 480}, "bundle.yaml", "camera")
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from theia_ros.errors import TheiaError

T = TypeVar("T")


def fld(default: Any = dataclasses.MISSING, *, ge: float | None = None,
        gt: float | None = None, le: float | None = None,
        choices: tuple | None = None, min_len: int | None = None,
        max_len: int | None = None) -> Any:
    """A dataclass field with the bounds ``parse`` checks (``default`` omitted: required).

    A mutable default (list/dict) is copied per instance.
    """
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("choices", choices),
                              ("min_len", min_len), ("max_len", max_len)) if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Bad(Exception):
    """A field-level problem; ``parse`` adds the file and the dotted path."""

    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or (dataclasses.is_dataclass(tp)):
        return "a mapping"
    return str(tp)


def _convert(tp: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    """``value`` checked against type ``tp`` and the bounds in ``meta``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"schema: unsupported union {tp}")
        return _convert(inner[0], value, path, meta)
    if value is None:
        raise _Bad(path, f"must be {_type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        return _parse_into(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Bad(path, f"must be a list, got {_short(value)}")
        n = len(value)
        if n < meta.get("min_len", 0) or n > meta.get("max_len", math.inf):
            lo, hi = meta.get("min_len", 0), meta.get("max_len", "any")
            raise _Bad(path, f"must have {lo}..{hi} items, got {n}")
        item = args[0]
        items = [_convert(item, v, f"{path}[{i}]", meta) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Bad(path, f"must be a mapping, got {_short(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Bad(path, f"keys must be strings, got {_short(k)}")
            out[k] = _convert(args[1], v, f"{path}.{k}", meta)
        return out
    return _scalar(tp, value, path, meta)


def _scalar(tp: type, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}
    if tp not in ok:
        raise TypeError(f"schema: unsupported field type {tp}")
    if not ok[tp]:
        raise _Bad(path, f"must be {_type_name(tp)}, got {_short(value)}")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise _Bad(path, f"must be a finite number, got {value}")
    if "choices" in meta and value not in meta["choices"]:
        raise _Bad(path, f"{_short(value)} unknown; expected one of {list(meta['choices'])}")
    if tp in (int, float):
        lo, lo_open, hi = meta.get("gt", meta.get("ge")), "gt" in meta, meta.get("le")
        if (lo is not None and (value <= lo if lo_open else value < lo)) or (
                hi is not None and value > hi):
            left = "(" if lo_open else "["
            raise _Bad(path, f"must be in {left}{lo if lo is not None else '-inf'}, "
                             f"{hi if hi is not None else 'inf'}], got {value}")
    return value


def _parse_into(cls: type[T], data: Any, path: str) -> T:
    if not isinstance(data, Mapping):
        raise _Bad(path or "(top level)", f"must be a mapping, got {_short(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    dot = f"{path}." if path else ""
    unknown = [k for k in data if k not in known]
    if unknown:
        raise _Bad(f"{dot}{unknown[0]}", f"unknown field (known: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Bad(f"{dot}{name}", "missing")
            continue
        values[name] = _convert(hints[name], data[name], f"{dot}{name}", f.metadata)
    try:
        return cls(**values)
    except _Bad:
        raise
    except TheiaError as exc:  # a cross-field check in __post_init__
        raise _Bad(path or "(top level)", str(exc)) from None


def parse(cls: type[T], data: Any, where: str | object, path: str = "") -> T:
    """``data`` (a mapping) as a ``cls`` instance, or one ``TheiaError`` naming ``where``
    (the file) and the dotted field ``path`` of the first problem."""
    try:
        return _parse_into(cls, data, path)
    except _Bad as bad:
        raise TheiaError(f"{where}: {bad.path}: {bad.problem}") from None


def check(where: str | object, path: str, ok: bool, problem: str) -> None:
    """Raise the ``parse``-style one-liner for a cross-field rule that ``ok`` says is broken."""
    if not ok:
        raise TheiaError(f"{where}: {path}: {problem}")


def check_positive_ints(obj: object, names: tuple[str, ...], where: str) -> None:
    """For a config built directly (not through ``parse``): each named field is an int >= 1
    (bools refused)."""
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TheiaError(f"{where}: {name} must be a positive int, got {value!r}")


# ----------------------------------------------------------------------------- metadata files

MAX_METADATA_BYTES = 4 << 20  # bundle.yaml / config.json / policy.json are a few KB


def read_text(path: Path, max_bytes: int = MAX_METADATA_BYTES) -> str:
    """A small UTF-8 text file, or one ``TheiaError`` line (missing, too big, not UTF-8)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise TheiaError(f"{path}: {size / 1e6:.1f} MB; a metadata file is a few KB "
                             f"(limit {max_bytes / 1e6:.0f} MB)")
        data = path.read_bytes()
    except OSError as exc:
        raise TheiaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TheiaError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start})") from None


def load_mapping(path: Path, max_bytes: int = MAX_METADATA_BYTES) -> dict[str, Any]:
    """A YAML or JSON file (by suffix) whose top level is a mapping; else one error line."""
    import json

    import yaml

    text = read_text(path, max_bytes)
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError is a ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise TheiaError(f"{path}: not valid {kind} ({first})") from None
    except RecursionError:
        raise TheiaError(f"{path}: nested too deeply to be metadata") from None
    if not isinstance(data, dict):
        raise TheiaError(f"{path}: expected a mapping at the top level, got "
                         f"{type(data).__name__}")
    return data
