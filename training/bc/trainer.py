"""Behaviour-cloning trainer for both heads (CNN-MLP and diffusion), frozen or fine-tuned encoder.

One loop, counted in optimiser steps: an epoch is one pass over the training frames in an
order drawn from ``(seed, epoch)``, so a run resumed from ``train_state.safetensors`` sees the
same batches as an uninterrupted one (with the torch RNG restored, the same noise and shifts
too). The output directory is the policy directory::

    out/policy.json, out/model.safetensors   the policy (EMA weights for diffusion)
    out/train_config.json                    the effective (resolved) configuration
    out/train_state.safetensors              resumable state (model, optimiser, scheduler, RNG)
    out/metrics.jsonl                        train / validation losses

Example::

    result = train_policy(TrainConfig(dataset="ds", out="runs/door", policy="cnn_mlp"))
    print(result.val_loss)
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from policies.checkpoint import load_encoder
from policies.normalize import Normalizer
from policies.policy import HEADS, Policy, PolicyConfig, build_policy, save_policy
from policies.preprocess import preprocess
from theia_ros.atomic import atomic_write_json
from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind
from training.bc.augment import random_shift
from training.bc.config import TrainConfig
from training.bc.data import ChunkDataset, EpisodeSource, load_demos, split_episodes
from training.bc.ema import Ema
from training.bc.feature_cache import cached_features, default_cache_root
from training.bc.train_state import load_train_state, save_train_state

CONFIG_FILE = "train_config.json"
STATE_FILE = "train_state.safetensors"
METRICS_FILE = "metrics.jsonl"
VAL_MAX_FRAMES = 1024  # held-out frames for the validation loss
VAL_SAMPLE_FRAMES = 256  # of which these also get a predicted chunk (action MSE)
# Changing these between a run and its resume is fine (longer training, other cadence).
RESUMABLE_CHANGES = {"epochs", "iters", "val_every", "checkpoint_every", "device", "cache_dir"}
PATH_FIELDS = {"dataset", "encoder"}  # the encoder may also be a hub id or a size name


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    step: int
    total_steps: int
    train_loss: float
    val_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _camera(source: EpisodeSource, wanted: str | None) -> str:
    cams = list(source.cameras)
    if wanted:
        if cams and wanted not in cams:
            raise TheiaError(f"camera {wanted!r} not in the dataset (cameras: {cams})")
        return wanted
    return cams[0] if cams else "front"


def _same_setting(name: str, old: Any, new: Any) -> bool:
    """Equal settings, paths compared where they point (``runs/door`` == ``/abs/runs/door``).

    ``out`` always matches: the saved config was read from inside it.
    """
    if name == "out" or old == new:
        return True
    if name in PATH_FIELDS and isinstance(old, str) and isinstance(new, str):
        return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()
    return False


def _lr_lambda(schedule: str, total_steps: int):
    def constant(step: int) -> float:
        return 1.0

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))

    return cosine if schedule == "cosine" else constant


class BCTrainer:
    """Sets up data, policy and optimiser from a ``TrainConfig``; ``run()`` trains."""

    def __init__(self, config: TrainConfig, source: EpisodeSource | None = None,
                 show_progress: bool = True, resume: bool = True):
        self.cfg = cfg = config.resolved()
        self.show_progress = show_progress
        self.resume = resume
        self.out = Path(cfg.out)
        if source is None:  # a missing dataset is reported as such, before any resume check
            from theia_ros.dataset import EpisodeDataset  # torch-free reader (DATA area)
            source = EpisodeDataset(cfg.dataset)
        if resume:
            self._check_resume_config()
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if cfg.device == "auto" else cfg.device))
        camera = _camera(source, cfg.camera)
        train_eps, val_eps = split_episodes(source.num_episodes, cfg.val_fraction, cfg.seed)
        self.train_demos = load_demos(source, train_eps, camera)
        self.val_demos = load_demos(source, val_eps, camera) if val_eps else None

        torch.manual_seed(cfg.seed)
        encoder = load_encoder(cfg.encoder, seed=cfg.seed)
        normalizer = Normalizer.from_data(cfg.norm_mode, self.train_demos.states,
                                          self.train_demos.actions)
        state_dim = self.train_demos.states.shape[1]
        action_dim = self.train_demos.actions.shape[1]
        head_cfg_cls, _ = HEADS[cfg.policy]
        head_cfg = head_cfg_cls.from_dict({
            "feature_dim": encoder.embed_dim, "state_dim": state_dim, "action_dim": action_dim,
            "horizon": cfg.horizon, "grid": encoder.config.grid, **cfg.head})
        if cfg.norm_mode == "mean_std" and getattr(head_cfg, "clip_sample", False):
            raise TheiaError("diffusion with --norm-mode mean_std needs the head's clip_sample "
                             "off (--head '{\"clip_sample\": false}'): clipping assumes "
                             "min_max-normalised actions in [-1, 1]")
        action_kind = source.action_kind or ActionKind.EE_DELTA
        pcfg = PolicyConfig(
            type=cfg.policy, action_kind=action_kind.value,
            state_dim=state_dim, horizon=cfg.horizon, fps=float(source.fps),
            camera=camera, action_dim=action_dim, encoder_frozen=not cfg.finetune,
            encoder_source=str(cfg.encoder))
        self.policy: Policy = build_policy(pcfg, encoder, head_cfg, normalizer).to(self.device)
        self.policy.encoder.requires_grad_(cfg.finetune)
        self.policy.encoder.train(cfg.finetune)

        self.train_data, self.val_data = self._datasets()
        n = len(self.train_data)
        self.steps_per_epoch = math.ceil(n / cfg.batch_size)
        self.total_steps = cfg.iters if cfg.iters is not None else (
            cfg.epochs * self.steps_per_epoch)

        groups = [{"params": list(self.policy.head.parameters()), "lr": cfg.lr}]
        if cfg.finetune:
            groups.append({"params": list(self.policy.encoder.parameters()),
                           "lr": cfg.encoder_lr})
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(groups, lr=cfg.lr, betas=(0.9, 0.999),
                                 weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(cfg.lr_schedule, self.total_steps))
        self.ema = (Ema(self.policy, cfg.ema_power, cfg.ema_max_decay)
                    if cfg.policy == "diffusion" else None)
        self.step = 0
        self.history: list[dict[str, Any]] = []

    # --- setup helpers ----------------------------------------------------------------------
    def _check_resume_config(self) -> None:
        saved = self.out / CONFIG_FILE
        if not (self.out / STATE_FILE).exists() or not saved.exists():
            return
        old = json.loads(saved.read_text())
        new = self.cfg.to_dict()
        diff = sorted(k for k in new if k not in RESUMABLE_CHANGES
                      and not _same_setting(k, old.get(k), new[k]))
        if diff:
            raise TheiaError(f"{saved}: resuming with a different config ({diff}); use a new "
                             "--out or delete train_state.safetensors to start over")

    def _datasets(self) -> tuple[ChunkDataset, ChunkDataset | None]:
        cfg = self.cfg
        deltas = self.policy.config.action_kind == "ee_delta"
        if not cfg.uses_cache:
            val = (ChunkDataset(self.val_demos, cfg.horizon, deltas=deltas) if self.val_demos
                   else None)
            return ChunkDataset(self.train_demos, cfg.horizon, deltas=deltas), val
        root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root()
        out = []
        for demos in (self.train_demos, self.val_demos):
            if demos is None:
                out.append(None)
                continue
            feats = cached_features(self.policy.encoder, demos, root, cfg.cache_dtype,
                                    device=self.device, show_progress=self.show_progress)
            demos.images = None  # features replace them; frees memory
            out.append(ChunkDataset(demos, cfg.horizon, feats, deltas=deltas))
        return out[0], out[1]

    # --- batches ----------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.train_data))

    def _batch_indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        bs = self.cfg.batch_size
        return self._epoch_order(epoch)[pos * bs:(pos + 1) * bs]

    def _tensors(self, batch: dict[str, Any], train: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> feature map ``[B, C, 14, 14]``, state ``[B, S]``, actions ``[B, H, A]``, and the
        mask ``[B, H]`` when padded steps are left out of the loss (else None)."""
        dev = self.device
        obs = batch["obs"]
        if obs.dtype == np.uint8:
            x = preprocess(obs, size=self.policy.encoder.config.img_size).to(dev)
            if train and self.cfg.augment:
                x = random_shift(x, self.cfg.shift_px)
            with torch.set_grad_enabled(train and self.cfg.finetune):
                fmap = self.policy.encoder.forward_spatial(x)
        else:
            fmap = Policy.as_map(torch.from_numpy(np.asarray(obs)).to(dev, torch.float32))
        state = torch.from_numpy(batch["state"]).to(dev)
        actions = torch.from_numpy(batch["action"]).to(dev)
        mask = torch.from_numpy(batch["mask"]).to(dev) if self.cfg.mask_padding else None
        return fmap, state, actions, mask

    def train_step(self, step: int) -> float:
        self.policy.head.train()
        fmap, state, actions, mask = self._tensors(self.train_data.batch(
            self._batch_indices(step)), train=True)
        loss = self.policy.compute_loss(fmap, state, actions, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.policy)
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out loss and action error (physical units, MSE) with fixed noise."""
        if self.val_data is None:
            return {}
        n = len(self.val_data)
        idx = np.linspace(0, n - 1, min(n, VAL_MAX_FRAMES)).round().astype(np.int64)
        self.policy.eval()
        losses, errs, weights = [], [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed + 1)
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2)
            for start in range(0, len(idx), 64):
                fmap, state, actions, _ = self._tensors(
                    self.val_data.batch(idx[start:start + 64]), train=False)
                losses.append(float(self.policy.compute_loss(fmap, state, actions)) * len(fmap))
                weights.append(len(fmap))
                if start < VAL_SAMPLE_FRAMES:  # sampling (10 DDIM steps) costs more
                    pred = self.policy.predict_from_features(fmap, state, gen)
                    errs.append(float(((pred - actions) ** 2).mean()) * len(fmap))
        n_err = sum(weights[:len(errs)])
        self.policy.encoder.train(self.cfg.finetune)
        return {"val_loss": sum(losses) / sum(weights), "val_action_mse": sum(errs) / n_err}

    # --- checkpoints ------------------------------------------------------------------------
    def save_state(self) -> None:
        save_train_state(self.out / STATE_FILE, self.policy, self.optimizer, self.scheduler,
                         self.ema, self.step, {"total_steps": self.total_steps})

    def try_resume(self) -> bool:
        path = self.out / STATE_FILE
        if not path.exists():
            return False
        self.step, _ = load_train_state(path, self.policy, self.optimizer, self.scheduler,
                                        self.ema)
        return True

    def save_policy(self) -> None:
        self.policy.eval()
        if self.ema is not None:
            with self.ema.applied(self.policy):
                save_policy(self.policy, self.out)
        else:
            save_policy(self.policy, self.out)

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        with open(self.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    # --- main loop --------------------------------------------------------------------------
    def run(self, stop_at_step: int | None = None) -> TrainResult:
        """Train to ``total_steps`` (or ``stop_at_step``), checkpointing along the way."""
        created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            return self._run(stop_at_step)
        except Exception:
            if created:
                _remove_if_nothing_saved(self.out)
            raise

    def _run(self, stop_at_step: int | None) -> TrainResult:
        cfg = self.cfg
        if not (self.resume and self.try_resume()):
            (self.out / METRICS_FILE).unlink(missing_ok=True)
        atomic_write_json(self.out / CONFIG_FILE, cfg.to_dict())
        end = self.total_steps if stop_at_step is None else min(stop_at_step, self.total_steps)
        val_every = cfg.val_every or max(1, self.total_steps // 10)
        last_loss, val = float("nan"), {}
        window: list[float] = []
        bar = tqdm(total=end, initial=self.step, desc=f"train {cfg.policy}", unit="step",
                   disable=not self.show_progress)
        try:
            while self.step < end:
                last_loss = self.train_step(self.step)
                window.append(last_loss)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}",
                                **{k: f"{v:.4f}" for k, v in val.items()})
                if self.step % val_every == 0 or self.step == self.total_steps:
                    val = self._validate_with_ema()
                    self._log({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                               "train_loss": float(np.mean(window)),
                               "lr": self.scheduler.get_last_lr()[0], **val})
                    window = []
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_state()
        except KeyboardInterrupt:
            self.save_state()
            raise
        finally:
            bar.close()
        self.save_state()
        self.save_policy()
        return TrainResult(self.out, self.step, self.total_steps, last_loss,
                           val.get("val_loss"), self.history)

    def _validate_with_ema(self) -> dict[str, float]:
        if self.ema is None:
            return self.validate()
        with self.ema.applied(self.policy):
            return self.validate()


def _remove_if_nothing_saved(out: Path) -> None:
    """Remove a folder this run created when it holds no state or policy yet (a failed
    start leaves no empty or config-only output folder behind)."""
    if (out / STATE_FILE).exists() or any(out.glob("model*.safetensors")):
        return
    for name in (CONFIG_FILE, METRICS_FILE):
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else was put there meanwhile: leave it
        out.rmdir()


def train_policy(config: TrainConfig, source: EpisodeSource | None = None,
                 show_progress: bool = True, resume: bool = True,
                 stop_at_step: int | None = None) -> TrainResult:
    """Build a ``BCTrainer`` and run it (see the module docstring for the outputs)."""
    return BCTrainer(config, source, show_progress, resume).run(stop_at_step)
