"""Train a behaviour-cloning policy (CNN-MLP or diffusion) on a demonstration dataset.

The output directory becomes the policy (``policy.json`` + ``model.safetensors``, ready for
``theia export``), with ``train_config.json`` (effective configuration), ``metrics.jsonl``
(train / validation losses) and ``train_state.safetensors`` beside it. Running the same
command again resumes from ``train_state.safetensors``; raise ``--epochs``/``--iters`` to
train longer. Defaults follow the Theia paper: CNN-MLP = Table 9 (AdamW 1e-4, wd 0.01,
batch 16, 400 epochs, SmoothL1, horizon 10); diffusion = Table 10 (Adam 3e-4 cosine,
batch 32, 3000 iterations, MSE, horizon 4). With a frozen encoder the image features are
computed once and cached (``--cache-dir``), so training a head on a CPU is quick.

Several cameras: repeat ``--camera`` (each goes through the same encoder; the order is the
head's). ``--n-obs-steps`` stacks the last frames (default 1 for CNN-MLP, 2 for diffusion).
Any config field can also be set as ``key=value`` (``head.<field>=value`` for the head); the
saved ``train_config.json`` fed back with ``--config`` reproduces the run. Beside the policy:
``best/`` (lowest validation loss), ``checkpoints/step_<n>/`` and ``tensorboard/``
(``tensorboard --logdir <out>/tensorboard``).

Example::

    theia train-policy --dataset data/door --policy cnn_mlp \\
        --encoder theaiinstitute/theia-tiny-patch16-224-cddsv --horizon 10 --out runs/door
    theia train-policy --dataset data/drawer --policy diffusion --encoder ckpt/theia_small \\
        --finetune --iters 3000 --out runs/drawer
    theia train-policy --dataset data/door --camera front --camera wrist n_obs_steps=2 \
        lr=3e-4 head.hidden_dim=512 --out runs/door2
"""

from __future__ import annotations

import argparse
import json
import sys

from theia_ros.errors import TheiaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset directory (LeRobot v3 layout)")
    # No argparse defaults below: a flag left out must not override the --config file.
    parser.add_argument("--policy", choices=["cnn_mlp", "diffusion"], default=None,
                        help="head type (default cnn_mlp)")
    parser.add_argument("--encoder", default=None,
                        help="checkpoint dir, hub id, or registry name (theia_tiny|small|base: "
                             "random init with --seed; default theia_tiny)")
    parser.add_argument("--out", default=None, help="output/policy dir (default runs/<policy>)")
    parser.add_argument("--config", default=None,
                        help="YAML/JSON file of TrainConfig fields; command-line flags win")
    parser.add_argument("--finetune", action="store_true", default=None,
                        help="train the encoder too (lower LR, random-shift augmentation)")
    parser.add_argument("--camera", dest="cameras", action="append", default=None,
                        help="dataset camera (default: the first); repeat for several, in "
                             "the order the head concatenates them")
    parser.add_argument("--n-obs-steps", type=int, default=None,
                        help="observation history length (default 1 cnn_mlp, 2 diffusion)")
    parser.add_argument("--horizon", type=int, default=None, help="action chunk length")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None)
    length.add_argument("--iters", type=int, default=None, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--encoder-lr", type=float, default=None, help="default lr / 10")
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random-shift augmentation (default: on with --finetune)")
    parser.add_argument("--shift-px", type=int, default=None)
    parser.add_argument("--norm-mode", choices=["mean_std", "min_max"], default=None)
    parser.add_argument("--mask-padding", action="store_true", default=None,
                        help="ignore padded (repeated last action) steps in the loss")
    parser.add_argument("--val-fraction", type=float, default=None)
    parser.add_argument("--val-every", type=int, default=None, help="steps (0 = auto)")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="steps between resumable state + policy snapshots")
    parser.add_argument("--keep-checkpoints", type=int, default=None,
                        help="policy snapshots kept under checkpoints/ (default 3)")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                        help="TensorBoard logs in <out>/tensorboard (default on)")
    parser.add_argument("--head", default=None,
                        help='head config overrides as JSON, e.g. \'{"down_dims": [128, 256]}\'')
    parser.add_argument("--cache-dir", default=None, help="feature cache root")
    parser.add_argument("--no-cache", dest="cache_features", action="store_false",
                        default=None, help="recompute features every step")
    parser.add_argument("--action-kind", choices=["ee_delta", "ee_absolute"], default=None,
                        help="what the dataset's actions are; required when the dataset does "
                             "not say (LeRobot's own datasets), else checked against it")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None,
                        help="auto (default: CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch)")
    parser.add_argument("--no-resume", action="store_true", help="ignore train_state")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides (YAML values), e.g. lr=3e-4 head.hidden_dim=512")


FLAG_FIELDS = ("dataset", "policy", "encoder", "out", "finetune", "cameras", "n_obs_steps",
               "horizon", "epochs", "iters", "batch_size", "lr", "encoder_lr", "weight_decay",
               "augment", "shift_px", "norm_mode", "mask_padding", "val_fraction", "val_every",
               "checkpoint_every", "keep_checkpoints", "tensorboard", "cache_dir",
               "cache_features", "seed", "device", "action_kind")


def config_from_args(args: argparse.Namespace):
    """Config file (optional), then ``key=value`` overrides, then every flag that was given."""
    from training.bc.config import TrainConfig, apply_overrides

    values: dict = {}
    if args.config:
        values.update(_read_config(args.config))
    apply_overrides(values, list(getattr(args, "overrides", None) or []))
    for name in FLAG_FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    if args.head:
        try:
            values["head"] = {**(values.get("head") or {}), **json.loads(args.head)}
        except json.JSONDecodeError as exc:
            raise TheiaError(f"--head: not valid JSON ({exc})") from exc
    if args.iters is not None:
        values.pop("epochs", None)
    if args.epochs is not None:
        values.pop("iters", None)
    values.setdefault("out", f"runs/{values.get('policy', 'cnn_mlp')}")
    return TrainConfig.from_dict(values)


def _read_config(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise TheiaError(f"{path}: cannot read config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise TheiaError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise TheiaError(f"{path}: expected a mapping of TrainConfig fields")
    return data


def main(args: argparse.Namespace) -> int:
    import torch

    from training.bc.trainer import train_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    from policies.checkpoint import is_registry_name

    if is_registry_name(cfg.encoder):
        print(f"note: encoder {cfg.encoder!r} is RANDOMLY initialised (a size name, not a "
              "checkpoint); pass --encoder <checkpoint or hub id> for a trained Theia",
              file=sys.stderr)
    result = train_policy(cfg, show_progress=not args.quiet, resume=not args.no_resume)
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a (no held-out)"
    print(f"policy written to {result.out} after {result.step}/{result.total_steps} steps; "
          f"train loss {result.train_loss:.4f}, val loss {val}")
    return 0
