"""Build a network only after its config has been checked against the weights file.

A config that disagrees with its ``model.safetensors`` (edited, or from another model) must
fail with one line naming the key, never by constructing a network it describes: a tampered
width or depth can ask for tens of GB. So the network is first built on torch's ``meta``
device (shapes only, no memory), its parameter shapes are compared with the shapes in the
safetensors header (no tensor data read), and only then is it built for real.

Example::

    encoder = build_checked(lambda: TheiaEncoder(cfg), header_shapes(path), str(path),
                            config="config.json")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from safetensors import safe_open
from torch import nn

from theia_ros.errors import TheiaError

M = TypeVar("M", bound=nn.Module)


def header_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """{key: shape} from a safetensors file's header, without reading any tensor."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for bad files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise TheiaError(f"{path}: not a readable safetensors file ({first})") from None


def check_shapes(expected: Mapping[str, torch.Size | tuple[int, ...]],
                 actual: Mapping[str, tuple[int, ...]], source: str, prefix: str = "",
                 config: str = "the config") -> None:
    """One line naming the first key missing from, shaped unlike, or extra in ``actual``."""
    for key, shape in expected.items():
        if key not in actual:
            raise TheiaError(f"{source}: missing key {prefix + key!r} (that {config} needs)")
        if tuple(actual[key]) != tuple(shape):
            raise TheiaError(f"{source}: key {prefix + key!r} has shape {list(actual[key])}, "
                             f"{config} says {list(shape)}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise TheiaError(f"{source}: unexpected key {prefix + extra[0]!r} (not in a model "
                         f"built from {config})")


def build_checked(make: Callable[[], M], actual: Mapping[str, tuple[int, ...]], source: str,
                  config: str, prefix: str = "",
                  finish: Callable[[M], None] | None = None) -> M:
    """``make()`` once its ``meta``-device twin's state-dict shapes equal ``actual``.

    ``config`` names the file the architecture came from (for errors); ``finish`` runs on
    the twin and then on the real module (e.g. attaching buffers that come from the file)
    before the shapes are compared.
    """
    try:
        with torch.device("meta"):
            probe = make()
        if finish is not None:
            finish(probe)
    except (TheiaError, ValueError, RuntimeError) as exc:  # a config no network can have
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise TheiaError(f"{config}: {first}") from None
    check_shapes({k: v.shape for k, v in probe.state_dict().items()}, actual, source, prefix,
                 config)
    module = make()
    if finish is not None:
        finish(module)
    return module
