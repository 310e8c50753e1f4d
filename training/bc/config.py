"""Typed training configuration of ``theia train-policy``, with per-policy paper defaults.

``None`` means "the default for this policy type" (Theia paper Table 9 for CNN-MLP, Table 10
for diffusion); ``resolved()`` fills them in, and the resolved config is what gets saved
beside the output (``train_config.json``) and checked on resume.

Values from YAML, JSON or ``key=value`` overrides are checked and converted against the
field types (``from_dict``): PyYAML reads ``lr: 3e-4`` as the *string* "3e-4", which becomes
the float here, and a saved ``train_config.json`` fed back with ``--config`` gives the same
run.

Example::

    cfg = TrainConfig(dataset="ds", out="runs/door", policy="cnn_mlp").resolved()
    cfg.epochs, cfg.batch_size, cfg.lr   # 400, 16, 1e-4
    cfg = TrainConfig.from_dict(apply_overrides({"dataset": "ds", "out": "o"},
                                                ["lr=3e-4", "head.hidden_dim=128"]))
"""

from __future__ import annotations

import re
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import yaml

from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind
from training.distill.config import _coerce as coerce_value

# Paper defaults: CNN-MLP = Table 9 (WidowX), diffusion = Table 10 (Spot).
# Observation history: 1 step for CNN-MLP (the paper), 2 for diffusion (Chi et al. 2023).
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn_mlp": {"horizon": 10, "epochs": 400, "batch_size": 16, "lr": 1e-4,
                "weight_decay": 0.01, "optimizer": "adamw", "lr_schedule": "constant",
                "norm_mode": "mean_std", "n_obs_steps": 1},
    "diffusion": {"horizon": 4, "iters": 3000, "batch_size": 32, "lr": 3e-4,
                  "weight_decay": 0.0, "optimizer": "adam", "lr_schedule": "cosine",
                  "norm_mode": "min_max", "n_obs_steps": 2},
}
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run.

    Args:
        dataset: dataset directory (LeRobot v3 layout, ``theia_ros.dataset``).
        out: output directory; becomes the policy directory (policy.json, model.safetensors).
        policy: ``cnn_mlp`` or ``diffusion``.
        encoder: checkpoint path, hub id or registry name (registry name = random init).
        finetune: train the encoder too (with ``encoder_lr``) instead of freezing it.
        cameras: dataset cameras, in the order the head concatenates them (default: the
            dataset's first camera). Each goes through the same encoder.
        n_obs_steps: observation steps per sample (current frame and the ones before it).
        horizon: action chunk length H.
        epochs / iters: training length; ``iters`` wins when both are set.
        batch_size, lr, weight_decay, optimizer, lr_schedule: optimisation.
        encoder_lr: fine-tuning LR of the encoder (default lr / 10).
        augment: random-shift augmentation (default: on when fine-tuning).
        shift_px: maximum shift in pixels of the 224 x 224 input.
        norm_mode: ``mean_std`` or ``min_max`` state/action normalisation.
        mask_padding: leave padded chunk steps (repeated last action) out of the loss.
        val_fraction: share of episodes held out for validation.
        val_every / checkpoint_every: in optimiser steps (0 = automatic / end only); every
            checkpoint also keeps a policy snapshot in ``checkpoints/step_<n>/``.
        keep_checkpoints: periodic policy snapshots kept (oldest deleted; 0 = none).
        tensorboard: write TensorBoard logs to ``<out>/tensorboard``.
        ema_power, ema_max_decay: EMA warm-up (used by diffusion).
        cache_features: cache frozen-encoder features on disk (frozen, no augmentation).
        cache_dir: feature cache root (default ~/.cache/theia-ros/features).
        cache_dtype: ``float16`` or ``float32``.
        head: head config overrides (e.g. ``{"down_dims": [128, 256]}``).
        seed, device: reproducibility and placement (``auto`` = CUDA when present, ``cpu``,
            ``cuda``, ``cuda:N``).
        action_kind: what the dataset's actions are (``ee_delta`` | ``ee_absolute``); needed
            when the dataset does not say (LeRobot's own datasets), else must agree with it.
    """

    dataset: str
    out: str
    policy: str = "cnn_mlp"
    encoder: str = "theia_tiny"
    finetune: bool = False
    cameras: tuple[str, ...] | None = None
    n_obs_steps: int | None = None
    horizon: int | None = None
    epochs: int | None = None
    iters: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    lr_schedule: str | None = None
    encoder_lr: float | None = None
    augment: bool | None = None
    shift_px: int = 8
    norm_mode: str | None = None
    mask_padding: bool = False
    val_fraction: float = 0.1
    val_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    tensorboard: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    cache_features: bool = True
    cache_dir: str | None = None
    cache_dtype: str = "float16"
    head: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    action_kind: str | None = None

    def __post_init__(self) -> None:
        if self.cameras is not None:
            cams = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)
            if not cams or not all(isinstance(c, str) and c for c in cams) \
                    or len(set(cams)) != len(cams):
                raise TheiaError(f"train config: cameras must be distinct names, got {cams!r}")
            object.__setattr__(self, "cameras", cams)
        if not DEVICE_RE.match(str(self.device)):
            raise TheiaError(f"train config: device must be auto, cpu, cuda or cuda:N, got "
                             f"{self.device!r}")
        if self.policy not in POLICY_DEFAULTS:
            raise TheiaError(f"policy {self.policy!r} unknown; choose one of "
                             f"{sorted(POLICY_DEFAULTS)}")
        for name in ("horizon", "epochs", "iters", "batch_size", "n_obs_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise TheiaError(f"train config: {name} must be a positive int, got {v!r}")
        for name in ("lr", "encoder_lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise TheiaError(f"train config: {name} must be > 0, got {v!r}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise TheiaError(f"train config: optimizer must be one of {OPTIMIZERS}")
        if self.lr_schedule is not None and self.lr_schedule not in SCHEDULES:
            raise TheiaError(f"train config: lr_schedule must be one of {SCHEDULES}")
        if self.norm_mode is not None and self.norm_mode not in ("mean_std", "min_max"):
            raise TheiaError("train config: norm_mode must be mean_std or min_max")
        if self.cache_dtype not in ("float16", "float32"):
            raise TheiaError("train config: cache_dtype must be float16 or float32")
        if not 0.0 <= self.val_fraction < 1.0:
            raise TheiaError(f"train config: val_fraction must be in [0, 1), "
                             f"got {self.val_fraction}")
        if min(self.shift_px, self.val_every, self.checkpoint_every, self.keep_checkpoints) < 0:
            raise TheiaError("train config: shift_px, val_every, checkpoint_every, "
                             "keep_checkpoints must be >= 0")
        kinds = [k.value for k in ActionKind]
        if self.action_kind is not None and self.action_kind not in kinds:
            raise TheiaError(f"train config: action_kind {self.action_kind!r} unknown; choose "
                             f"one of {kinds}")
        if not isinstance(self.head, dict):
            raise TheiaError("train config: head must be a mapping of head-config overrides")

    def resolved(self) -> TrainConfig:
        """Copy with every ``None`` replaced by this policy type's default."""
        d = POLICY_DEFAULTS[self.policy]
        updates: dict[str, Any] = {k: v for k, v in d.items()
                                   if k in {f.name for f in fields(self)}
                                   and getattr(self, k) is None}
        if self.iters is None and self.epochs is None:
            updates["epochs" if "epochs" in d else "iters"] = d.get("epochs", d.get("iters"))
        lr = updates.get("lr", self.lr)
        if self.encoder_lr is None:
            updates["encoder_lr"] = lr / 10
        if self.augment is None:
            updates["augment"] = self.finetune
        return replace(self, **updates)

    @property
    def uses_cache(self) -> bool:
        """Features can be cached: frozen encoder and no image augmentation."""
        return self.cache_features and not self.finetune and not self.augment

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.cameras is not None:
            d["cameras"] = list(self.cameras)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Checked and type-converted (YAML's ``"3e-4"`` -> 3e-4); a legacy single
        ``camera`` becomes ``cameras``."""
        d = dict(d)
        if "camera" in d:  # configs written before several cameras
            cam = d.pop("camera")
            if cam is not None and d.get("cameras") is None:
                d["cameras"] = [cam]
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise TheiaError(f"train config: unknown fields {sorted(unknown)}")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in d.items():
            if key == "head":
                if value is None:
                    value = {}
                if not isinstance(value, dict):
                    raise TheiaError(f"train config head: expected a mapping, got {value!r}")
                values[key] = dict(value)
            elif key == "cameras":
                if isinstance(value, str):
                    value = [c.strip() for c in value.split(",") if c.strip()]
                if value is not None and not isinstance(value, (list, tuple)):
                    raise TheiaError(f"train config cameras: expected a list, got {value!r}")
                values[key] = None if value is None else tuple(str(c) for c in value)
            else:
                values[key] = coerce_value(value, hints[key], f"train config {key}")
        return cls(**values)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["lr=3e-4", "head.down_dims=[128, 256]"]`` -> ``values`` updated (values are YAML;
    ``head.<key>`` sets one head-config field)."""
    names = {f.name for f in fields(TrainConfig)}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        ok = sep and all(parts) and (
            (len(parts) == 1 and parts[0] in names) or (len(parts) == 2 and parts[0] == "head"))
        if not ok:
            raise TheiaError(f"override {item!r}: expected key=value with key a TrainConfig "
                             f"field or head.<field>; fields: {sorted(names)}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise TheiaError(f"override {item!r}: value is not valid YAML "
                             f"({str(exc).splitlines()[0]})") from exc
        if len(parts) == 2:
            head = values.get("head") or {}
            if not isinstance(head, dict):
                raise TheiaError("train config head: expected a mapping")
            values["head"] = {**head, parts[1]: value}
        else:
            values[parts[0]] = value
    return values
