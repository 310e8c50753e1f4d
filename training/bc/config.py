"""Typed training configuration of ``theia train-policy``, with per-policy paper defaults.

``None`` means "the default for this policy type" (Theia paper Table 9 for CNN-MLP, Table 10
for diffusion); ``resolved()`` fills them in, and the resolved config is what gets saved
beside the output (``train_config.json``) and checked on resume.

Example::

    cfg = TrainConfig(dataset="ds", out="runs/door", policy="cnn_mlp").resolved()
    cfg.epochs, cfg.batch_size, cfg.lr   # 400, 16, 1e-4
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind

# Paper defaults: CNN-MLP = Table 9 (WidowX), diffusion = Table 10 (Spot).
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn_mlp": {"horizon": 10, "epochs": 400, "batch_size": 16, "lr": 1e-4,
                "weight_decay": 0.01, "optimizer": "adamw", "lr_schedule": "constant",
                "norm_mode": "mean_std"},
    "diffusion": {"horizon": 4, "iters": 3000, "batch_size": 32, "lr": 3e-4,
                  "weight_decay": 0.0, "optimizer": "adam", "lr_schedule": "cosine",
                  "norm_mode": "min_max"},
}
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
        camera: dataset camera (default: the dataset's first camera).
        horizon: action chunk length H.
        epochs / iters: training length; ``iters`` wins when both are set.
        batch_size, lr, weight_decay, optimizer, lr_schedule: optimisation.
        encoder_lr: fine-tuning LR of the encoder (default lr / 10).
        augment: random-shift augmentation (default: on when fine-tuning).
        shift_px: maximum shift in pixels of the 224 x 224 input.
        norm_mode: ``mean_std`` or ``min_max`` state/action normalisation.
        mask_padding: leave padded chunk steps (repeated last action) out of the loss.
        val_fraction: share of episodes held out for validation.
        val_every / checkpoint_every: in optimiser steps (0 = automatic / end only).
        ema_power, ema_max_decay: EMA warm-up (used by diffusion).
        cache_features: cache frozen-encoder features on disk (frozen, no augmentation).
        cache_dir: feature cache root (default ~/.cache/theia-ros/features).
        cache_dtype: ``float16`` or ``float32``.
        head: head config overrides (e.g. ``{"down_dims": [128, 256]}``).
        seed, device: reproducibility and placement (``cpu``, ``cuda``, ``auto``).
        action_kind: what the dataset's actions are (``ee_delta`` | ``ee_absolute``); needed
            when the dataset does not say (LeRobot's own datasets), else must agree with it.
    """

    dataset: str
    out: str
    policy: str = "cnn_mlp"
    encoder: str = "theia_tiny"
    finetune: bool = False
    camera: str | None = None
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
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    cache_features: bool = True
    cache_dir: str | None = None
    cache_dtype: str = "float16"
    head: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    action_kind: str | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICY_DEFAULTS:
            raise TheiaError(f"policy {self.policy!r} unknown; choose one of "
                             f"{sorted(POLICY_DEFAULTS)}")
        for name in ("horizon", "epochs", "iters", "batch_size"):
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
        if self.shift_px < 0 or self.val_every < 0 or self.checkpoint_every < 0:
            raise TheiaError("train config: shift_px, val_every, checkpoint_every must be >= 0")
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
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise TheiaError(f"train config: unknown fields {sorted(unknown)}")
        return cls(**d)
