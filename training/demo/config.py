"""Settings of ``theia demo`` with its two presets (default and ``--quick``).

Each stage's output is keyed by the settings that decide it (``stage_keys``): a stage whose
output exists under ``--out`` with the same key is skipped; the same output with another key
is an error (never silently mixed).

Defaults were chosen on the shared 2-core CPUs (see ``docs/demo.md`` for the measurements):
40 scripted demos (~1 min), 30 epochs of the CNN-MLP head on cached frozen-encoder
features (~8 min), export (~10 s), 20 held-out episodes at 5 Hz (~2.5 min).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from theia_ros.errors import TheiaError

EVAL_FIRST_SEED = 10_000  # held-out scenes: demos use seeds 0 .. demos-1


@dataclass(frozen=True)
class DemoConfig:
    """Everything ``theia demo`` does.

    Args:
        demos: scripted demonstrations to record (successful ones kept).
        demo_seed: scene seed of the first demonstration.
        noise: jitter the expert's commands (more varied demonstrations).
        encoder: registry name (random init), checkpoint directory or hub id.
        finetune: train the encoder too (much slower on a CPU: no feature cache).
        epochs, batch_size, lr, horizon: BC training (CNN-MLP head, chunk horizon H).
        iters: optimiser steps instead of epochs (fine-tuning budgets).
        train_seed: seed of the head initialisation, the random encoder and the batch order.
        eval_episodes: held-out episodes run closed-loop.
        eval_seed: scene seed of the first held-out episode.
        max_steps: ticks per evaluation episode (12 s at 5 Hz).
        replan_every, temporal_ensemble, ensemble_m: chunk execution (see theia_ros.control).
        fast: evaluate without real-time pacing (latency then not measured).
        video_episodes: held-out episodes drawn into the rollout video.
        backend: runtime backend for the evaluation (onnxruntime: the deploy path).
        threads: CPU threads for training and inference.
        cameras: sim cameras recorded and looked through (``front``, ``wrist``), in the
            policy's order.
        n_obs_steps: observation steps the policy conditions on.
    """

    demos: int = 40
    demo_seed: int = 0
    noise: bool = True
    encoder: str = "theia_tiny"
    finetune: bool = False
    epochs: int = 30
    iters: int | None = None
    batch_size: int = 32
    lr: float = 3e-4
    horizon: int = 10
    train_seed: int = 0
    eval_episodes: int = 20
    eval_seed: int = EVAL_FIRST_SEED
    max_steps: int = 60
    replan_every: int = 1
    temporal_ensemble: bool = True
    ensemble_m: float = 0.1
    fast: bool = False
    video_episodes: int = 2
    backend: str = "onnxruntime"
    threads: int = 2
    cameras: tuple[str, ...] = ("front",)
    n_obs_steps: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        from theia_ros.sim.scene import CAMERA_NAMES

        bad = [c for c in self.cameras if c not in CAMERA_NAMES]
        if not self.cameras or bad or len(set(self.cameras)) != len(self.cameras):
            raise TheiaError(f"demo config: cameras {list(self.cameras)}: choose distinct ones "
                             f"of {list(CAMERA_NAMES)}")
        if not isinstance(self.n_obs_steps, int) or self.n_obs_steps < 1:
            raise TheiaError(f"demo config: n_obs_steps must be an integer >= 1, got "
                             f"{self.n_obs_steps!r}")
        for name in ("demos", "epochs", "batch_size", "horizon", "eval_episodes", "max_steps",
                     "replan_every", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TheiaError(f"demo config: {name} must be an integer >= 1, got {value!r}")
        if self.iters is not None and self.iters < 1:
            raise TheiaError(f"demo config: iters must be >= 1, got {self.iters}")
        if not self.lr > 0:
            raise TheiaError(f"demo config: lr must be > 0, got {self.lr}")
        if self.replan_every > self.horizon:
            raise TheiaError(f"demo config: replan_every ({self.replan_every}) must not exceed "
                             f"the chunk horizon ({self.horizon})")
        if self.video_episodes < 0:
            raise TheiaError("demo config: video_episodes must be >= 0")
        demo_end = self.demo_seed + 2 * self.demos + 11  # exclusive: the recorder's attempt cap
        if self.eval_seed < demo_end and self.demo_seed < self.eval_seed + self.eval_episodes:
            raise TheiaError(f"demo config: evaluation seeds from {self.eval_seed} overlap the "
                             f"demonstration seeds from {self.demo_seed}; held-out means unseen")

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """Smoke-test preset: about a minute end to end (the policy will mostly fail)."""
        base = {"demos": 8, "epochs": 8, "eval_episodes": 3, "max_steps": 40,
                "video_episodes": 1}
        return cls(**{**base, **overrides})

    def with_overrides(self, **overrides: Any) -> DemoConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


DATASET_FIELDS = ("demos", "demo_seed", "noise", "cameras")
POLICY_FIELDS = (*DATASET_FIELDS, "encoder", "finetune", "epochs", "iters", "batch_size",
                 "lr", "horizon", "train_seed", "n_obs_steps")
BUNDLE_FIELDS = POLICY_FIELDS  # export has no settings of its own here


def stage_keys(config: DemoConfig) -> dict[str, dict[str, Any]]:
    """Stage name -> the settings its output depends on."""
    d = config.to_dict()
    return {
        "dataset": {k: d[k] for k in DATASET_FIELDS},
        "policy": {k: d[k] for k in POLICY_FIELDS},
        "bundle": {k: d[k] for k in BUNDLE_FIELDS},
    }


def key_hash(key: dict[str, Any]) -> str:
    """Short stable hash of a stage key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
