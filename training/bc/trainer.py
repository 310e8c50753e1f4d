"""Behaviour-cloning trainer for both heads (CNN-MLP and diffusion), frozen or fine-tuned encoder.

One loop, counted in optimiser steps: an epoch is one pass over the training frames in an
order drawn from ``(seed, epoch)``, so a run resumed from ``train_state.safetensors`` sees the
same batches as an uninterrupted one (with the torch RNG restored, the same noise and shifts
too). The output directory is the policy directory::

    out/policy.json, out/model.safetensors   the policy (EMA weights for diffusion)
    out/train_config.json                    the effective (resolved) configuration
    out/train_state.safetensors              resumable state (model, optimiser, scheduler, RNG)
    out/metrics.jsonl                        train / validation losses
    out/best/                                the policy at the lowest validation loss so far
    out/checkpoints/step_<n>/                periodic policy snapshots (the newest few kept)
    out/tensorboard/                         losses, learning rate, validation action plots

Several cameras go through the one encoder each; ``n_obs_steps`` frames per camera are
stacked time-major (see ``policies.policy``), padded at episode starts by repeating the
first frame.

Example::

    result = train_policy(TrainConfig(dataset="ds", out="runs/door", policy="cnn_mlp"))
    print(result.val_loss)
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
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
VAL_PLOTS = 3  # validation samples whose predicted vs true chunks go to TensorBoard
BEST_DIR = "best"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
# Changing these between a run and its resume is fine (longer training, other cadence).
RESUMABLE_CHANGES = {"epochs", "iters", "val_every", "checkpoint_every", "device", "cache_dir",
                     "keep_checkpoints", "tensorboard"}
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


def _cameras(source: EpisodeSource, wanted: tuple[str, ...] | None) -> list[str]:
    cams = list(source.cameras)
    if wanted:
        missing = [c for c in wanted if cams and c not in cams]
        if missing:
            raise TheiaError(f"camera(s) {missing} not in the dataset (cameras: {cams})")
        return list(wanted)
    return [cams[0] if cams else "front"]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; CUDA asked for and absent -> a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TheiaError(f"--device {device}: CUDA is not available here (no GPU or a "
                             "CPU-only torch); use --device cpu or auto")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise TheiaError(f"--device {device}: only {torch.cuda.device_count()} CUDA "
                             "device(s) here")
    return torch.device(device)


def _action_kind(source: EpisodeSource, cfg: TrainConfig) -> ActionKind:
    """The dataset's action kind, or the one the user named; never a guess (EE deltas and
    absolute poses look alike as numbers but move the robot very differently)."""
    given = ActionKind(cfg.action_kind) if cfg.action_kind else None
    if source.action_kind is None and given is None:
        raise TheiaError(f"{cfg.dataset}: the dataset does not say what its actions are (no "
                         "action_kind in meta/info.json, as in datasets LeRobot writes); pass "
                         "--action-kind ee_delta (end-effector deltas, WidowX) or "
                         "--action-kind ee_absolute (absolute end-effector poses, Spot)")
    if source.action_kind is not None and given is not None and given is not source.action_kind:
        raise TheiaError(f"{cfg.dataset}: --action-kind {given.value} contradicts the dataset's "
                         f"action_kind {source.action_kind.value}")
    return source.action_kind or given  # type: ignore[return-value]


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
        self.device = resolve_device(cfg.device)
        cameras = _cameras(source, cfg.cameras)
        train_eps, val_eps = split_episodes(source.num_episodes, cfg.val_fraction, cfg.seed)
        self.train_demos = load_demos(source, train_eps, cameras)
        self.val_demos = load_demos(source, val_eps, cameras) if val_eps else None

        torch.manual_seed(cfg.seed)
        encoder = load_encoder(cfg.encoder, seed=cfg.seed)
        normalizer = Normalizer.from_data(cfg.norm_mode, self.train_demos.states,
                                          self.train_demos.actions)
        state_dim = self.train_demos.states.shape[1]
        action_dim = self.train_demos.actions.shape[1]
        head_cfg_cls, _ = HEADS[cfg.policy]
        head_cfg = head_cfg_cls.from_dict({
            "feature_dim": encoder.embed_dim, "state_dim": state_dim, "action_dim": action_dim,
            "horizon": cfg.horizon, "grid": encoder.config.grid,
            "num_views": len(cameras) * cfg.n_obs_steps, "n_obs_steps": cfg.n_obs_steps,
            **cfg.head})
        if cfg.norm_mode == "mean_std" and getattr(head_cfg, "clip_sample", False):
            raise TheiaError("diffusion with --norm-mode mean_std needs the head's clip_sample "
                             "off (--head '{\"clip_sample\": false}'): clipping assumes "
                             "min_max-normalised actions in [-1, 1]")
        action_kind = _action_kind(source, cfg)
        pcfg = PolicyConfig(
            type=cfg.policy, action_kind=action_kind.value,
            state_dim=state_dim, horizon=cfg.horizon, fps=float(source.fps),
            cameras=tuple(cameras), n_obs_steps=cfg.n_obs_steps, action_dim=action_dim,
            encoder_frozen=not cfg.finetune, encoder_source=str(cfg.encoder),
            robot_type=source.robot_type)
        self.policy: Policy = build_policy(pcfg, encoder, head_cfg, normalizer).to(self.device)
        self.policy.encoder.requires_grad_(cfg.finetune)
        self.policy.encoder.train(cfg.finetune)

        self.train_data, self.val_data = self._datasets()
        n = len(self.train_data)
        self.steps_per_epoch = math.ceil(n / cfg.batch_size)
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its shuffle)
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
        self.best_val: float | None = None
        self.history: list[dict[str, Any]] = []
        self._tb = None
        self._val_plot: tuple[np.ndarray, np.ndarray] | None = None

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
        kw = {"deltas": self.policy.config.action_kind == "ee_delta",
              "n_obs_steps": cfg.n_obs_steps}
        if not cfg.uses_cache:
            val = (ChunkDataset(self.val_demos, cfg.horizon, **kw) if self.val_demos
                   else None)
            return ChunkDataset(self.train_demos, cfg.horizon, **kw), val
        root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root()
        out = []
        for demos in (self.train_demos, self.val_demos):
            if demos is None:
                out.append(None)
                continue
            feats = cached_features(self.policy.encoder, demos, root, cfg.cache_dtype,
                                    device=self.device, show_progress=self.show_progress)
            demos.images = None  # features replace them; frees memory
            out.append(ChunkDataset(demos, cfg.horizon, feats, **kw))
        return out[0], out[1]

    # --- batches ----------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The epoch's shuffle (seeded by epoch, so a resume gets the same one); computed
        once per epoch, not once per step."""
        if self._order is None or self._order[0] != epoch:
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(
                len(self.train_data))
            self._order = (epoch, order)
        return self._order[1]

    def _batch_indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        bs = self.cfg.batch_size
        return self._epoch_order(epoch)[pos * bs:(pos + 1) * bs]

    def _tensors(self, batch: dict[str, Any], train: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> feature maps ``[B, V, C, 14, 14]``, state ``[B, T, S]``, actions ``[B, H, A]``,
        and the mask ``[B, H]`` when padded steps are left out of the loss (else None)."""
        dev = self.device
        obs = batch["obs"]
        if isinstance(obs, dict):  # {camera: [B, T, H, W, 3] u8}: encode every view
            per_cam = []
            for cam in self.policy.config.cameras:
                frames = obs[cam]
                b, t = frames.shape[:2]
                enc_cfg = self.policy.encoder.config
                x = preprocess(frames.reshape(b * t, *frames.shape[2:]),
                               size=enc_cfg.img_size, resize=enc_cfg.resize).to(dev)
                if train and self.cfg.augment:
                    x = random_shift(x, self.cfg.shift_px)
                with torch.set_grad_enabled(train and self.cfg.finetune):
                    per_cam.append(self.policy.encoder.forward_spatial(x).unflatten(0, (b, t)))
            fmap = torch.stack(per_cam, dim=2).flatten(1, 2)  # time-major views
        else:
            fmap = self.policy.as_map(torch.from_numpy(np.asarray(obs)).to(dev, torch.float32))
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
                if start == 0:
                    self._val_plot = (pred[:VAL_PLOTS].cpu().numpy(),
                                      actions[:VAL_PLOTS].cpu().numpy())
        n_err = sum(weights[:len(errs)])
        self.policy.encoder.train(self.cfg.finetune)
        return {"val_loss": sum(losses) / sum(weights), "val_action_mse": sum(errs) / n_err}

    # --- checkpoints ------------------------------------------------------------------------
    def save_state(self) -> None:
        save_train_state(self.out / STATE_FILE, self.policy, self.optimizer, self.scheduler,
                         self.ema, self.step, {"total_steps": self.total_steps,
                                               "best_val": self.best_val})

    def try_resume(self) -> bool:
        path = self.out / STATE_FILE
        if not path.exists():
            return False
        self.step, extra = load_train_state(path, self.policy, self.optimizer, self.scheduler,
                                            self.ema)
        best = extra.get("best_val") if isinstance(extra, dict) else None
        self.best_val = float(best) if best is not None else None
        return True

    def save_policy(self, out: Path | None = None) -> None:
        """The policy (EMA weights for diffusion) into ``out`` (default: the run directory)."""
        self.policy.eval()
        target = self.out if out is None else out
        if self.ema is not None:
            with self.ema.applied(self.policy):
                save_policy(self.policy, target)
        else:
            save_policy(self.policy, target)
        self.policy.encoder.train(self.cfg.finetune)

    def _checkpoint(self) -> None:
        """Resumable state plus a policy snapshot; only the newest ``keep_checkpoints`` stay."""
        self.save_state()
        keep = self.cfg.keep_checkpoints
        if not keep:
            return
        root = self.out / CHECKPOINTS_DIR
        self.save_policy(root / f"step_{self.step:07d}")
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _maybe_save_best(self, val: dict[str, float]) -> None:
        loss = val.get("val_loss")
        if loss is None or not math.isfinite(loss):
            return
        if self.best_val is None or loss < self.best_val:
            self.best_val = loss
            self.save_policy(self.out / BEST_DIR)
            atomic_write_json(self.out / BEST_DIR / "best.json",
                              {"step": self.step, **val})

    # --- TensorBoard ------------------------------------------------------------------------
    def _writer(self):
        if not self.cfg.tensorboard:
            return None
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / TENSORBOARD_DIR), purge_step=self.step)
        return self._tb

    def _tb_scalars(self, record: dict[str, Any]) -> None:
        tb = self._writer()
        if tb is None:
            return
        for key in ("train_loss", "lr", "val_loss", "val_action_mse"):
            if key in record and record[key] is not None:
                group = "val" if key.startswith("val") else "train"
                tb.add_scalar(f"{group}/{key}", float(record[key]), record["step"])
        plot = getattr(self, "_val_plot", None)
        if plot is not None:
            tb.add_figure("val/action_chunks", action_figure(*plot), record["step"])
            self._val_plot = None
        tb.flush()

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
                    record = {"step": self.step, "epoch": self.step / self.steps_per_epoch,
                              "train_loss": float(np.mean(window)),
                              "lr": self.scheduler.get_last_lr()[0], **val}
                    self._log(record)
                    self._tb_scalars(record)
                    self._maybe_save_best(val)
                    window = []
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self._checkpoint()
        except KeyboardInterrupt:
            self.save_state()
            raise
        finally:
            bar.close()
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        self.save_state()
        self.save_policy()
        return TrainResult(self.out, self.step, self.total_steps, last_loss,
                           val.get("val_loss"), self.history)

    def _validate_with_ema(self) -> dict[str, float]:
        if self.ema is None:
            return self.validate()
        with self.ema.applied(self.policy):
            return self.validate()


def action_figure(pred: np.ndarray, true: np.ndarray):
    """Predicted (dashed) vs demonstrated chunks ``[N, H, A]``: one row per sample, xyz and
    gripper columns (what a reviewer checks first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = [(0, "x"), (1, "y"), (2, "z"), (pred.shape[-1] - 1, "gripper")]
    n = len(pred)
    fig, axes = plt.subplots(n, len(dims), figsize=(3 * len(dims), 2 * n), squeeze=False)
    for i in range(n):
        for j, (d, name) in enumerate(dims):
            ax = axes[i][j]
            ax.plot(true[i, :, d], "k-", label="demo")
            ax.plot(pred[i, :, d], "C1--", label="policy")
            if i == 0:
                ax.set_title(name)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


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
