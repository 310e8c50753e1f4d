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
from training.distill.stats import TeacherStats
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


def train(cfg: DistillConfig) -> Path | None:
    """Run (or resume) distillation; returns ``<out>/final`` when finished (on every rank,
    once the main one has written it), None if stopped early by ``train.max_steps``."""
    t = cfg.train
    env = setup_distributed(t.device)
    amp = env.device.type == "cuda" if t.amp is None else t.amp
    out = Path(t.out)
    ckpt_root = out / "checkpoints"
    if env.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    _barrier(env)

    images = ImageShards(cfg.data.images)
    num_train = images.num_images - cfg.data.val_images
    if num_train <= 0:
        raise TheiaError(f"data.val_images={cfg.data.val_images} leaves no training images "
                         f"(of {images.num_images})")
    teachers = None
    if cfg.data.cache is None:
        teachers = build_teachers(cfg.model.teachers, pretrained=not cfg.model.tiny_teachers,
                                  tiny=cfg.model.tiny_teachers, device=env.device)
    shapes = _expected_shapes(cfg, teachers)
    stats = TeacherStats.load(cfg.data.stats)
    stats.check(shapes, cfg.data.stats)
    stats = stats.subset(shapes)
    cache = (FeatureCache(cfg.data.cache, shapes, images, stats.hash())
             if cfg.data.cache is not None else None)
    norm = stats.torch_mean_std(env.device)

    model = build_student(cfg, shapes, stats).to(env.device).train()
    plan = BatchPlan(num_train, t.batch_size, env.world_size, env.rank, cfg.data.chunk, t.seed)
    lr = cfg.optim.lr * plan.global_batch / cfg.optim.lr_batch
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=lr,
                            betas=cfg.optim.betas, eps=cfg.optim.eps)
    warmup_steps = round(cfg.optim.warmup_epochs * plan.steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup_steps, cfg.optim.warmup_start))

    position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0,
                "global_batch": plan.global_batch}
    latest = _latest_checkpoint(ckpt_root) if t.resume else None
    if latest is not None:
        position = load_checkpoint(latest, env, model, opt, sched)
        if position["global_batch"] != plan.global_batch:
            raise TheiaError(f"{latest}: saved with a global batch of "
                             f"{position['global_batch']}, this run has {plan.global_batch} "
                             "(batch_size x processes must match to resume)")
        if env.is_main:  # steps after the checkpoint are replayed: drop their records
            for name in ("train_log.jsonl", "eval.jsonl"):
                _truncate_jsonl(out / name, position["global_step"])
    net: nn.Module = model
    if t.compile:
        net = torch.compile(net)
    if env.distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[env.device.index] if env.device.type == "cuda" else None)

    reader = BatchReader(images, cache, pin=env.device.type == "cuda")
    val_ranges = contiguous_ranges(num_train, images.num_images, env.rank, env.world_size,
                                   t.batch_size)
    writer = _tensorboard(out, position["global_step"]) if (t.tensorboard and env.is_main) \
        else None
    total_steps = t.epochs * plan.steps_per_epoch
    bar = tqdm(total=total_steps, initial=position["global_step"], unit="step",
               desc="distill", disable=not (t.progress and env.is_main), dynamic_ncols=True)
    step = position["global_step"]
    t_log, n_log = time.perf_counter(), 0
    stopped = False
    for epoch in range(position["epoch"], t.epochs):
        start = position["step_in_epoch"] if epoch == position["epoch"] else 0
        for s, batch in iterate_batches(plan, reader, epoch, start, cfg.data.prefetch,
                                        cfg.data.read_workers):
            images_u8, targets = to_device(batch, env.device)
            if teachers is not None:
                targets = normalised_targets(teachers, images_u8, norm)
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=amp):
                preds = net(normalize_uint8(images_u8))
            loss, parts = distill_loss(preds, targets, cfg.optim.cosine,
                                       cfg.optim.cosine_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            n_log += batch["n"]
            position = {"epoch": epoch, "step_in_epoch": s + 1, "global_step": step,
                        "global_batch": plan.global_batch}
            if s + 1 == plan.steps_per_epoch:
                position.update(epoch=epoch + 1, step_in_epoch=0)
            bar.update(1)
            if step % t.log_every_steps == 0 or step == total_steps:
                ips = n_log * env.world_size / max(time.perf_counter() - t_log, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{ips:.0f}")
                if env.is_main:
                    _append_jsonl(out / "train_log.jsonl", {
                        "step": step, "epoch": epoch, "loss": loss.item(),
                        "lr": opt.param_groups[0]["lr"], "images_per_s": ips,
                        "teachers": {h: v.item() for h, v in parts.items()}})
                if writer is not None:
                    writer.add_scalar("train/loss", loss.item(), step)
                    writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)
                    writer.add_scalar("train/images_per_s", ips, step)
                    for hub, v in parts.items():
                        writer.add_scalar(f"train/loss/{hub}", v.item(), step)
                t_log, n_log = time.perf_counter(), 0
            if (t.eval_every_steps and step % t.eval_every_steps == 0
                    and cfg.data.val_images):
                _log_eval(evaluate(model, env, reader, val_ranges, teachers, norm, amp),
                          out, step, writer, env)
            stop_now = t.max_steps is not None and step >= t.max_steps
            if step % t.ckpt_every_steps == 0 or stop_now or s + 1 == plan.steps_per_epoch:
                save_checkpoint(ckpt_root, env, model, opt, sched, position, t.keep_checkpoints)
            if stop_now:
                stopped = True
                break
        if stopped:
            break
    bar.close()
    result = None
    if not stopped:
        if cfg.data.val_images:
            _log_eval(evaluate(model, env, reader, val_ranges, teachers, norm, amp), out,
                      step, writer, env)
        if env.is_main:
            result = save_theia(model, out / "final")
    if writer is not None:
        writer.close()
    _barrier(env)
    return None if stopped else (result or out / "final")


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
