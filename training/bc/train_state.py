"""Resumable training state in ONE safetensors file (tensors) with JSON in its metadata.

Holds the model weights, the EMA shadow, the optimiser state (tensors flattened to
``optim.<param>.<key>``, the rest as JSON), the LR scheduler state, the step counter and the
torch RNG state. Written to a temporary file and ``os.replace``d, so a kill mid-write leaves
the previous checkpoint intact. No pickle anywhere.

Example::

    save_train_state(path, model, optimizer, scheduler, ema, step=120, extra={...})
    step, extra = load_train_state(path, model, optimizer, scheduler, ema)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from theia_ros.atomic import atomic_write
from theia_ros.errors import TheiaError
from training.bc.ema import Ema


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def save_train_state(path: str | os.PathLike, model: nn.Module,
                     optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, ema: Ema | None,
                     step: int, extra: dict[str, Any]) -> None:
    """Everything needed to continue training exactly where it stopped."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    if ema is not None:
        for k, v in ema.shadow.items():
            tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    opt_plain: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                opt_plain.setdefault(str(pid), {})[key] = val
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "step": step,
        "param_groups": _jsonable(opt["param_groups"]),
        "optim_plain": _jsonable(opt_plain),
        "scheduler": _jsonable(scheduler.state_dict()),
        "ema_step": ema.step if ema is not None else None,
        "extra": _jsonable(extra),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp),
                                             metadata={"train_state": json.dumps(meta)}))


def load_train_state(path: str | os.PathLike, model: nn.Module,
                     optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, ema: Ema | None
                     ) -> tuple[int, dict[str, Any]]:
    """Restore everything ``save_train_state`` wrote; returns (step, extra)."""
    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("train_state")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as exc:  # safetensors raises its own error types
        raise TheiaError(f"{p}: unreadable training checkpoint ({exc})") from exc
    if raw is None:
        raise TheiaError(f"{p}: not a theia training checkpoint (no train_state metadata)")
    meta = json.loads(raw)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(model_sd, strict=False)
    if missing or unexpected:
        raise TheiaError(f"{p}: checkpoint does not fit this model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for pid, vals in meta["optim_plain"].items():
        state.setdefault(int(pid), {}).update(vals)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if ema is not None:
        for k in ema.shadow:
            ema.shadow[k].copy_(tensors[f"ema.{k}"])
        ema.step = int(meta["ema_step"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), meta["extra"]
