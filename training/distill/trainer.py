"""The distillation trainer: Theia encoder + translators learning normalised teacher features.

One process per GPU under ``torchrun`` (DDP; NCCL on GPU, gloo on CPU), or a single
process. Targets come from the feature cache (fast path) or from teachers run inside the
step (bf16 autocast on GPU, no grad). The optimiser, schedule and loss are the paper's
(``training.distill.config`` has the numbers, ``training.distill.loss`` the objective).

Exact resume: a checkpoint holds the model, the AdamW state, the scheduler, every rank's
RNG states and the data position (epoch, step within the epoch). Batches are a pure
function of ``(seed, epoch, step, rank)`` (``training.distill.loader``), so a run killed at
any point and resumed from its last checkpoint replays exactly the steps it lost and ends
with the same weights as an uninterrupted run (bitwise on CPU; GPU kernels may differ in
the last bits). Checkpoints are written to a temporary folder and renamed; ``LATEST`` names
the newest complete one. Multi-node runs need ``train.out`` on a shared filesystem.

Outputs under ``train.out``: ``config.yaml`` (effective config), ``checkpoints/``,
``tb/`` (TensorBoard scalars), ``eval.jsonl`` (held-out per-teacher cosine similarity) and
``final/`` (``save_theia`` format: ``theia encode --checkpoint <out>/final`` loads it).

Example::

    torchrun --nproc-per-node 8 -m training.cli.distill train \\
        --config training/configs/distill_cdiv_base.yaml data.images=/data/in1k_224
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from policies.checkpoint import save_theia
from policies.encoder import ENCODERS, TheiaEncoder
from policies.preprocess import normalize_uint8
from policies.teacher_specs import TEACHERS
from policies.translators import TheiaModel
from theia_ros.atomic import atomic_write_text
from theia_ros.errors import TheiaError
from training.distill.cache import FeatureCache
from training.distill.config import DistillConfig, save_config
from training.distill.images import ImageShards
from training.distill.loader import (
    BatchPlan,
    BatchReader,
    contiguous_ranges,
    iterate_batches,
    prefetch,
    to_device,
)
from training.distill.loss import distill_loss, token_cosine
from training.distill.stats import TeacherStats, load_stats
from training.distill.teachers import (
    Teacher,
    build_teachers,
    resolve_teacher_set,
    run_teachers,
    teacher_shapes_of,
)


@dataclass
class DistEnv:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; init NCCL (GPU) or gloo (CPU) if > 1."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise TheiaError("train.device=cuda but no CUDA device is available")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistEnv(rank, world, local, dev)


def build_student(cfg: DistillConfig, shapes: Mapping[str, tuple[int, int, int]],
                  stats: TeacherStats) -> TheiaModel:
    """Encoder of the configured size (optionally shrunk) + one translator per teacher."""
    m = cfg.model
    if m.encoder not in ENCODERS:
        raise TheiaError(f"config model.encoder: {m.encoder!r} not in {sorted(ENCODERS)}")
    enc_kwargs = {k: v for k, v in (("embed_dim", m.embed_dim), ("depth", m.depth),
                                    ("num_heads", m.num_heads)) if v is not None}
    enc_cfg = ENCODERS[m.encoder](num_reg_tokens=m.num_reg_tokens, **enc_kwargs)
    torch.manual_seed(cfg.train.seed)
    stats_t = {h: (torch.from_numpy(mu), torch.from_numpy(sd))
               for h, (mu, sd) in stats.mean_std().items() if h in shapes}
    return TheiaModel(TheiaEncoder(enc_cfg), shapes, m.translator_hidden_factor, stats=stats_t)


def param_groups(model: TheiaModel, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices/kernels only.

    No decay on biases and 1-D parameters (the paper's Table 5), and also none on the
    translators' LayerNorm gains (shape ``[C, H, W]``: norm parameters despite not being
    1-D) and on the position embedding / CLS / register tokens (timm's no-weight-decay set).
    """
    no_decay_names = {f"encoder.backbone.{n}" for n in model.encoder.backbone.no_weight_decay()}
    norm_params = {id(p) for mod in model.modules() if isinstance(mod, nn.LayerNorm)
                   for p in mod.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if (p.ndim <= 1 or name.endswith(".bias") or id(p) in norm_params
                or name in no_decay_names):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup_steps: int, start: float) -> float:
    """Linear warm-up from ``start`` to 1 over ``warmup_steps`` optimiser steps, then 1."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start + (1.0 - start) * step / warmup_steps


# ------------------------------------------------------------------ checkpoints


def _latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "LATEST"
    if not pointer.is_file():
        return None
    path = ckpt_root / pointer.read_text(encoding="utf-8").strip()
    if not (path / "trainer.json").is_file():
        raise TheiaError(f"{pointer}: names {path.name}, which is missing or incomplete")
    return path


def _rng_tensors() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py = random.getstate()
    meta = {"numpy": json.dumps([np_state[0], int(np_state[2]), int(np_state[3]),
                                 float(np_state[4])]),
            "python": json.dumps([py[0], list(py[1]), py[2]])}
    return tensors, meta


def _set_rng(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    t = load_file(str(path))
    torch.set_rng_state(t["torch_cpu"])
    if "torch_cuda" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state(t["torch_cuda"])
    name, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((name, t["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         cached))
    version, state, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(state), gauss))


def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, extra = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                extra[f"{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "extra": extra}


def _optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                          meta: dict, device: torch.device) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value if name == "step" else value.to(device)
    for key, value in meta["extra"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(ckpt_root: Path, env: DistEnv, model: TheiaModel,
                    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
                    position: dict, keep: int) -> Path:
    """Write a complete checkpoint atomically (tmp folder + rename) from every rank."""
    name = f"step_{position['global_step']:09d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp"
    if env.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier(env)
    rng, rng_meta = _rng_tensors()
    save_file(rng, str(tmp / f"rng_rank{env.rank}.safetensors"), metadata=rng_meta)
    if env.is_main:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _optimizer_to_files(opt)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
        meta = {"position": position, "optimizer": opt_meta, "scheduler": sched_state,
                "world_size": env.world_size}
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    _barrier(env)
    if env.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(ckpt_root / "LATEST", name + "\n")
        # only older steps: a fresh run (resume off) in an old folder keeps what it just wrote
        done = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir() and p.name <= name)
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(env)
    return final


def load_checkpoint(path: Path, env: DistEnv, model: TheiaModel, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LambdaLR) -> dict:
    """Restore model, optimiser, scheduler and this rank's RNG; returns the data position."""
    meta = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    state = load_file(str(path / "model.safetensors"), device=str(env.device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise TheiaError(f"{path}/model.safetensors: does not match this model (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}); same config needed")
    _optimizer_from_files(opt, load_file(str(path / "optimizer.safetensors")),
                          meta["optimizer"], env.device)
    sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(opt.param_groups)})
    rng_path = path / f"rng_rank{env.rank}.safetensors"
    if rng_path.is_file():
        _set_rng(rng_path)
    return meta["position"]


def _barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


# ------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate(model: TheiaModel, env: DistEnv, reader: BatchReader, ranges: list,
             teachers: list[Teacher] | None, norm: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
             amp: bool) -> dict[str, float]:
    """Held-out mean per-token cosine similarity per teacher (all ranks together)."""
    model.eval()
    sums = torch.zeros(len(model.shapes) + 1, dtype=torch.float64, device=env.device)
    for batch in prefetch(reader, iter(ranges), depth=2):
        images, targets = to_device(batch, env.device)
        if teachers is not None:
            targets = normalised_targets(teachers, images, norm)
        with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=amp):
            preds = model(normalize_uint8(images))
        for i, hub in enumerate(model.shapes):
            sums[i] += token_cosine(preds[hub], targets[hub]).double().sum()
        sums[-1] += images.shape[0]
    if env.distributed:
        dist.all_reduce(sums)
    model.train()
    n = max(float(sums[-1]), 1.0)
    return {hub: float(sums[i]) / n for i, hub in enumerate(model.shapes)}


def normalised_targets(teachers: list[Teacher], images_u8: torch.Tensor,
                       norm: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
                       ) -> dict[str, torch.Tensor]:
    """On-the-fly targets: teachers (bf16 autocast on GPU, no grad), then (x - mean) / std."""
    raw = run_teachers(teachers, images_u8)
    return {h: (x - norm[h][0]) / norm[h][1] for h, x in raw.items()}


# ------------------------------------------------------------------ training


def _expected_shapes(cfg: DistillConfig, teachers: list[Teacher] | None
                     ) -> dict[str, tuple[int, int, int]]:
    if teachers is not None:
        return teacher_shapes_of(teachers)
    specs = resolve_teacher_set(cfg.model.teachers)
    if cfg.model.tiny_teachers:  # tiny shapes exist only as built models
        return teacher_shapes_of(build_teachers(cfg.model.teachers, pretrained=False,
                                                tiny=True))
    return {s.hub_id: TEACHERS[s.hub_id].shape for s in specs}


class DistillTrainer:
    """Distillation shaped like ``BCTrainer``: construction sets everything up (data,
    teachers or cache, student, optimiser, resume), :meth:`step` trains one batch,
    :meth:`log` and :meth:`checkpoint` write what a step produced, :meth:`run` loops."""

    def __init__(self, cfg: DistillConfig) -> None:
        self.cfg = cfg
        t = self.t = cfg.train
        self.env = env = setup_distributed(t.device)
        self.amp = env.device.type == "cuda" if t.amp is None else t.amp
        self.out = Path(t.out)
        self.ckpt_root = self.out / "checkpoints"
        if env.is_main:
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        _barrier(env)
        self._setup_data()
        self._setup_model()
        self._resume()
        self.net: nn.Module = self.model
        if t.compile:
            self.net = torch.compile(self.net)
        if env.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        self.writer = (_tensorboard(self.out, self.position["global_step"])
                       if (t.tensorboard and env.is_main) else None)
        self.total_steps = t.epochs * self.plan.steps_per_epoch

    # -- set-up ----------------------------------------------------------------------------
    def _setup_data(self) -> None:
        cfg, env = self.cfg, self.env
        self.images = images = ImageShards(cfg.data.images)
        self.num_train = images.num_images - cfg.data.val_images
        if self.num_train <= 0:
            raise TheiaError(f"data.val_images={cfg.data.val_images} leaves no training images "
                             f"(of {images.num_images})")
        self.teachers = None
        if cfg.data.cache is None:
            self.teachers = build_teachers(cfg.model.teachers,
                                           pretrained=not cfg.model.tiny_teachers,
                                           tiny=cfg.model.tiny_teachers, device=env.device,
                                           inputs=cfg.model.teacher_inputs)
        self.shapes = shapes = _expected_shapes(cfg, self.teachers)
        stats = load_stats(cfg.data.stats, cfg.model.teacher_inputs, list(shapes))
        stats.check(shapes, cfg.data.stats)
        self.stats = stats = stats.subset(shapes)
        cache = (FeatureCache(cfg.data.cache, shapes, images, stats.hash(),
                              cfg.model.teacher_inputs)
                 if cfg.data.cache is not None else None)
        self.norm = stats.torch_mean_std(env.device)
        self.plan = BatchPlan(self.num_train, self.t.batch_size, env.world_size, env.rank,
                              cfg.data.chunk, self.t.seed)
        self.reader = BatchReader(images, cache, pin=env.device.type == "cuda")
        self.val_ranges = contiguous_ranges(self.num_train, images.num_images, env.rank,
                                            env.world_size, self.t.batch_size)

    def _setup_model(self) -> None:
        cfg, plan = self.cfg, self.plan
        self.model = build_student(cfg, self.shapes, self.stats).to(self.env.device).train()
        lr = cfg.optim.lr * plan.global_batch / cfg.optim.lr_batch
        self.opt = torch.optim.AdamW(param_groups(self.model, cfg.optim.weight_decay), lr=lr,
                                     betas=cfg.optim.betas, eps=cfg.optim.eps)
        warmup_steps = round(cfg.optim.warmup_epochs * plan.steps_per_epoch)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, warmup_steps, cfg.optim.warmup_start))

    def _resume(self) -> None:
        global_batch = self.plan.global_batch
        self.position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0,
                         "global_batch": global_batch}
        latest = _latest_checkpoint(self.ckpt_root) if self.t.resume else None
        if latest is None:
            return
        self.position = load_checkpoint(latest, self.env, self.model, self.opt, self.sched)
        if self.position["global_batch"] != global_batch:
            raise TheiaError(f"{latest}: saved with a global batch of "
                             f"{self.position['global_batch']}, this run has {global_batch} "
                             "(batch_size x processes must match to resume)")
        if self.env.is_main:  # steps after the checkpoint are replayed: drop their records
            for name in ("train_log.jsonl", "eval.jsonl"):
                _truncate_jsonl(self.out / name, self.position["global_step"])

    # -- one step --------------------------------------------------------------------------
    def step(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward the student (and the teachers, when not cached), backward, update."""
        images_u8, targets = to_device(batch, self.env.device)
        if self.teachers is not None:
            targets = normalised_targets(self.teachers, images_u8, self.norm)
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=self.amp):
            preds = self.net(normalize_uint8(images_u8))
        loss, parts = distill_loss(preds, targets, self.cfg.optim.cosine,
                                   self.cfg.optim.cosine_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss, parts

    def log(self, step: int, epoch: int, loss: torch.Tensor, parts: dict[str, torch.Tensor],
            images_per_s: float) -> None:
        """Training scalars to ``train_log.jsonl`` and TensorBoard (main process only)."""
        lr = self.opt.param_groups[0]["lr"]
        if self.env.is_main:
            _append_jsonl(self.out / "train_log.jsonl", {
                "step": step, "epoch": epoch, "loss": loss.item(), "lr": lr,
                "images_per_s": images_per_s,
                "teachers": {h: v.item() for h, v in parts.items()}})
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss.item(), step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/images_per_s", images_per_s, step)
            for hub, v in parts.items():
                self.writer.add_scalar(f"train/loss/{hub}", v.item(), step)

    def evaluate(self, step: int) -> None:
        result = evaluate(self.model, self.env, self.reader, self.val_ranges, self.teachers,
                          self.norm, self.amp)
        _log_eval(result, self.out, step, self.writer, self.env)

    def checkpoint(self) -> None:
        save_checkpoint(self.ckpt_root, self.env, self.model, self.opt, self.sched,
                        self.position, self.t.keep_checkpoints)

    # -- the loop --------------------------------------------------------------------------
    def _advance(self, epoch: int, s: int) -> int:
        """Record that batch ``s`` of ``epoch`` is done; returns the new global step."""
        step = self.position["global_step"] + 1
        self.position = {"epoch": epoch, "step_in_epoch": s + 1, "global_step": step,
                         "global_batch": self.plan.global_batch}
        if s + 1 == self.plan.steps_per_epoch:
            self.position.update(epoch=epoch + 1, step_in_epoch=0)
        return step

    def run(self) -> Path | None:
        """Train to the end (``<out>/final``, on every rank once the main one has written
        it) or to ``train.max_steps`` (None)."""
        t, cfg, plan = self.t, self.cfg, self.plan
        start_pos = dict(self.position)
        bar = tqdm(total=self.total_steps, initial=start_pos["global_step"], unit="step",
                   desc="distill", disable=not (t.progress and self.env.is_main),
                   dynamic_ncols=True)
        t_log, n_log = time.perf_counter(), 0
        stopped = False
        step = start_pos["global_step"]
        for epoch in range(start_pos["epoch"], t.epochs):
            first = start_pos["step_in_epoch"] if epoch == start_pos["epoch"] else 0
            for s, batch in iterate_batches(plan, self.reader, epoch, first, cfg.data.prefetch,
                                            cfg.data.read_workers):
                loss, parts = self.step(batch)
                step = self._advance(epoch, s)
                n_log += batch["n"]
                bar.update(1)
                if step % t.log_every_steps == 0 or step == self.total_steps:
                    ips = n_log * self.env.world_size / max(time.perf_counter() - t_log, 1e-9)
                    bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{ips:.0f}")
                    self.log(step, epoch, loss, parts, ips)
                    t_log, n_log = time.perf_counter(), 0
                if t.eval_every_steps and step % t.eval_every_steps == 0 and cfg.data.val_images:
                    self.evaluate(step)
                stopped = t.max_steps is not None and step >= t.max_steps
                if step % t.ckpt_every_steps == 0 or stopped or s + 1 == plan.steps_per_epoch:
                    self.checkpoint()
                if stopped:
                    break
            if stopped:
                break
        bar.close()
        result = None
        if not stopped:
            if cfg.data.val_images:
                self.evaluate(step)
            if self.env.is_main:
                result = save_theia(self.model, self.out / "final",
                                    training=self.cfg.checkpoint_record())
        if self.writer is not None:
            self.writer.close()
        _barrier(self.env)
        return None if stopped else (result or self.out / "final")


def train(cfg: DistillConfig) -> Path | None:
    """Run (or resume) distillation; returns ``<out>/final`` when finished (on every rank,
    once the main one has written it), None if stopped early by ``train.max_steps``."""
    return DistillTrainer(cfg).run()


def _tensorboard(out: Path, step: int) -> object:
    """A TensorBoard writer (imported lazily: tensorboard is slow to import)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"), purge_step=step)


def _log_eval(result: dict[str, float], out: Path, step: int, writer, env: DistEnv) -> None:
    if not env.is_main:
        return
    _append_jsonl(out / "eval.jsonl", {"step": step, "cosine": result})
    if writer is not None:
        for hub, v in result.items():
            writer.add_scalar(f"val/cosine/{hub}", v, step)


def _append_jsonl(path: Path, record: dict) -> None:
    """One JSON line per record (machine-readable log beside TensorBoard)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only whole records with ``step <= last_step`` (atomically)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):  # a line cut by the kill
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
