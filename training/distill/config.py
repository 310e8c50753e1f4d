"""Distillation run configuration: YAML + ``key=value`` overrides, typed and validated.

Four sections (``data``, ``model``, ``optim``, ``train``); every field can be set in the
YAML file or on the command line as ``section.field=value`` (values are parsed as YAML, so
``train.epochs=3``, ``data.cache=null``, ``optim.betas=[0.9,0.95]``). Unknown keys and
wrongly typed values are one-line ``TheiaError``s naming the key. The effective config is
saved as ``<train.out>/config.yaml`` by the trainer.

Defaults are the paper's recipe (Table 5): AdamW (0.9, 0.999), weight decay 0.01, LR 5e-4
at a global batch of 128 (scaled linearly), 5 warm-up epochs from 0.01 x LR, then constant,
50 epochs, 16 images per GPU, cdiv teachers.

Example::

    cfg = load_config("training/configs/distill_cdiv_tiny.yaml", ["train.epochs=1"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from theia_ros.atomic import atomic_write_text
from theia_ros.errors import TheiaError


@dataclass
class DataConfig:
    """Where the data are.

    Args:
        images: prepared image shards (``theia distill prepare``).
        stats: teacher feature statistics: a ``theia distill stats`` file, a folder of the
            statistics the Theia authors publish, or ``published`` to download those
            (no ImageNet pass needed; they match ``model.teacher_inputs=published``).
        cache: feature cache (``theia distill extract``); null = teachers run on the fly.
        val_images: images held out at the end of the image index for evaluation.
        chunk: consecutive images per shuffled chunk (see ``loader.BatchPlan``).
        prefetch: batches read ahead.
        read_workers: reader threads.
    """

    images: str = ""
    stats: str = ""
    cache: str | None = None
    val_images: int = 0
    chunk: int = 16
    prefetch: int = 4
    read_workers: int = 2

    def __post_init__(self) -> None:
        _require(bool(self.images), "data.images", "a prepared image-shard folder")
        _require(bool(self.stats), "data.stats", "a statistics file (theia distill stats), a "
                 "folder of published statistics, or 'published'")
        _require(self.val_images >= 0, "data.val_images", ">= 0")
        _require(self.chunk >= 1, "data.chunk", ">= 1")
        _require(self.prefetch >= 0 and self.read_workers >= 1, "data.prefetch/read_workers",
                 "prefetch >= 0 and read_workers >= 1")


@dataclass
class ModelConfig:
    """Student and teachers.

    Args:
        encoder: encoder size (``theia_tiny|small|base``).
        embed_dim, depth, num_heads: optional overrides of that size (small test students).
        num_reg_tokens: extra register tokens after CLS.
        teachers: teacher set (``cdiv``, ``cddsv``, letters, or comma-separated names).
        tiny_teachers: random-weight small teachers (tests and CPU benchmarks only).
        translator_hidden_factor: translator width factor (1.0 published).
        teacher_inputs: ``published`` (each teacher's hub processor, as the released targets
            and statistics were made: DINOv2 sees a zoomed centre crop) or ``aligned`` (every
            teacher sees the student's whole view). See ``training.distill.teachers``.
    """

    encoder: str = "theia_tiny"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    num_reg_tokens: int = 0
    teachers: str = "cdiv"
    tiny_teachers: bool = False
    translator_hidden_factor: float = 1.0
    teacher_inputs: str = "published"

    def __post_init__(self) -> None:
        _require(self.teacher_inputs in ("published", "aligned"), "model.teacher_inputs",
                 "'published' or 'aligned'")


@dataclass
class OptimConfig:
    """Optimiser, schedule and loss.

    Args:
        lr: learning rate at a global batch of ``lr_batch`` (scaled linearly).
        lr_batch: reference global batch of ``lr``.
        weight_decay: AdamW decay (not on biases, 1-D params, norm gains, pos-embed/CLS).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_epochs: linear warm-up length.
        warmup_start: warm-up starts at this fraction of the LR.
        cosine: ``token`` (per-token cosine, ours) or ``map`` (flattened, published).
        cosine_weight: beta of Eq. 1.
    """

    lr: float = 5e-4
    lr_batch: int = 128
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_epochs: float = 5.0
    warmup_start: float = 0.01
    cosine: str = "token"
    cosine_weight: float = 0.9

    def __post_init__(self) -> None:
        _require(self.lr > 0 and self.lr_batch >= 1, "optim.lr/lr_batch", "> 0")
        _require(self.warmup_epochs >= 0 and 0 < self.warmup_start <= 1,
                 "optim.warmup_epochs/warmup_start", "warmup_epochs >= 0, 0 < start <= 1")
        _require(self.cosine in ("token", "map"), "optim.cosine", "'token' or 'map'")
        _require(0 <= self.cosine_weight <= 1, "optim.cosine_weight", "in [0, 1]")


@dataclass
class TrainConfig:
    """The run.

    Args:
        out: output folder (checkpoints, TensorBoard, final encoder, config.yaml).
        epochs: passes over the training images.
        batch_size: images per process per step.
        seed: model-init and data-order seed.
        max_steps: stop (with a checkpoint) after this many steps in total; null = all.
        ckpt_every_steps: checkpoint period (also written at every epoch end).
        keep_checkpoints: how many recent checkpoints to keep.
        eval_every_steps: held-out evaluation period (0 = only at the end).
        log_every_steps: TensorBoard/progress period.
        device: ``auto`` | ``cpu`` | ``cuda``.
        amp: bf16 autocast; null = on for CUDA, off on CPU.
        compile: ``torch.compile`` the student.
        progress: tqdm bar on rank 0.
        tensorboard: write TensorBoard scalars on rank 0.
        resume: continue from the latest checkpoint in ``out`` if there is one.
    """

    out: str = "runs/distill"
    epochs: int = 50
    batch_size: int = 16
    seed: int = 0
    max_steps: int | None = None
    ckpt_every_steps: int = 1000
    keep_checkpoints: int = 2
    eval_every_steps: int = 0
    log_every_steps: int = 50
    device: str = "auto"
    amp: bool | None = None
    compile: bool = False
    progress: bool = True
    tensorboard: bool = True
    resume: bool = True

    def __post_init__(self) -> None:
        _require(self.epochs >= 1 and self.batch_size >= 1, "train.epochs/batch_size", ">= 1")
        _require(self.ckpt_every_steps >= 1 and self.keep_checkpoints >= 1,
                 "train.ckpt_every_steps/keep_checkpoints", ">= 1")
        _require(self.device in ("auto", "cpu", "cuda"), "train.device", "auto|cpu|cuda")


@dataclass
class DistillConfig:
    """A whole distillation run (see the module docstring)."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["optim"]["betas"] = list(self.optim.betas)
        return d

    def checkpoint_record(self) -> dict:
        """What the final checkpoint's ``config.json["training"]`` says about its targets."""
        return {"method": "theia distillation", "teachers": self.model.teachers,
                "teacher_inputs": self.model.teacher_inputs, "feature_stats": self.data.stats}


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
             "train": TrainConfig}


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise TheiaError(f"config {key}: expected {expected}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value against a field type (int, float, str, bool, X | None,
    tuple[float, float])."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_null = value is None or (isinstance(value, str)
                                    and value.lower() in ("null", "none"))
        if is_null and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TheiaError(f"config {key}: expected a list of {len(args)} values, got "
                             f"{value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TheiaError(f"config {key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TheiaError(f"config {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise TheiaError(f"config {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise TheiaError(f"config {key}: expected a string, got {value!r}")
    raise TheiaError(f"config {key}: unsupported field type {tp}")


def _build(cls: type, values: dict, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TheiaError(f"config {section}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``["train.epochs=3", ...]`` -> nested dict updated in place (values parsed as YAML)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or parts[0] not in _SECTIONS or not parts[1]:
            raise TheiaError(f"override {item!r}: expected section.key=value with section in "
                             f"{sorted(_SECTIONS)}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise TheiaError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        raw.setdefault(parts[0], {})
        if not isinstance(raw[parts[0]], dict):
            raise TheiaError(f"config {parts[0]}: expected a mapping")
        raw[parts[0]][parts[1]] = value
    return raw


def config_from_dict(raw: dict) -> DistillConfig:
    """Nested dict -> validated :class:`DistillConfig`."""
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise TheiaError(f"config: unknown section(s) {unknown}; known: {sorted(_SECTIONS)}")
    built = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise TheiaError(f"config {name}: expected a mapping, got {values!r}")
        built[name] = _build(cls, values, name)
    return DistillConfig(**built)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> DistillConfig:
    """YAML file (or None for defaults) + overrides -> validated config."""
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as exc:
            raise TheiaError(f"{path}: config file not found") from exc
        except yaml.YAMLError as exc:
            raise TheiaError(f"{path}: not valid YAML ({exc})".splitlines()[0]) from exc
        if not isinstance(raw, dict):
            raise TheiaError(f"{path}: expected a mapping of sections {sorted(_SECTIONS)}")
    return config_from_dict(apply_overrides(raw, list(overrides or [])))


def save_config(cfg: DistillConfig, path: str | Path) -> None:
    """Write the effective config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
