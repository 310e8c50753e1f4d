"""Policy checkpoint -> policy bundle (ONNX graphs, torch copy, bundle.yaml, SHA256SUMS).

Steps: load the checkpoint (checksum-verified) -> build the graph modules
(``theia_ros.runtime.torch_modules``) -> export each to ONNX and ``onnx.checker`` it -> copy
the checkpoint to ``torch/`` -> write ``bundle.yaml`` and ``SHA256SUMS`` -> parity vs torch
(``parity``) -> record the parity numbers in ``bundle.yaml`` -> move the finished directory
into place. Everything is built in a temporary sibling directory and renamed at the end, so
an interrupted or failed export never leaves a half bundle at ``out``.

Example::

    export_bundle("runs/door", "bundles/door", ExportOptions(image_hw=(480, 640)))
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from policies.policy import MODEL_FILE, POLICY_JSON, Policy, PolicyConfig, load_policy
from theia_ros import __version__
from theia_ros.atomic import atomic_write_text
from theia_ros.errors import TheiaError
from theia_ros.robots.robot_types import check_same_robot
from theia_ros.runtime.bundle import (
    ACTION_UNITS,
    BUNDLE_YAML,
    FORMAT,
    FORMAT_VERSION,
    GRAPH_FILES,
    GRAPH_IO,
    SUMS_FILE,
    write_sums,
)
from theia_ros.runtime.bundle_schema import BundleDoc, state_units
from theia_ros.runtime.resize_weights import RESIZE_MODES
from theia_ros.runtime.torch_modules import build_graphs, example_inputs, input_shapes
from theia_ros.schema import parse
from training.export import parity, trt_support
from training.export.onnx_export import DEFAULT_OPSET, export_graph

TORCH_DIR = "torch"


@dataclass(frozen=True)
class ExportOptions:
    """How to export.

    Args:
        image_hw: camera image size the encoder graph takes (default: the dataset's camera
            size, else the encoder's input size, 224 x 224).
        fused: also write one fused encoder+head graph.
        dataset: a demo dataset whose frames (and states) join the parity check.
        dataset_frames: how many dataset (image, state) pairs to check.
        opset: ONNX opset.
        exporter: ``dynamo`` (default) or ``torchscript``.
        torch_copy: keep a copy of the checkpoint in ``torch/`` (the torch backend needs it).
        topics: expected ROS input topics, recorded for the nodes.
        overwrite: replace an existing bundle at ``out``.
        seed: seed of the random parity inputs.
        trt: TensorRT versions to check every graph against statically (``auto``: each
            pinned version that reads the opset; ``none``; or e.g. ``8.6,10.3``).
    """

    image_hw: tuple[int, int] | None = None
    fused: bool = False
    dataset: str | None = None
    dataset_frames: int = 4
    opset: int = DEFAULT_OPSET
    exporter: str = "dynamo"
    torch_copy: bool = True
    topics: dict[str, str] = field(default_factory=dict)
    overwrite: bool = False
    seed: int = 0
    trt: str = "auto"


Sample = tuple[dict[str, np.ndarray], np.ndarray]  # {camera: [T, H, W, 3] u8}, states [T, S]


def dataset_pairs(root: str, cameras: str | tuple[str, ...], n: int, n_obs_steps: int = 1
                  ) -> tuple[tuple[int, int], list[Sample]]:
    """Up to ``n`` samples spread over the dataset's episodes: every camera's last
    ``n_obs_steps`` frames (the episode's first repeated before its start) and states."""
    from theia_ros.dataset import STATE_KEY, EpisodeDataset, image_key

    cameras = (cameras,) if isinstance(cameras, str) else tuple(cameras)
    ds = EpisodeDataset(root)
    missing = [c for c in cameras if c not in ds.cameras]
    if missing:
        raise TheiaError(f"{root}: dataset has cameras {ds.cameras}, the policy looks through "
                         f"{list(cameras)}")
    if ds.num_episodes == 0:
        raise TheiaError(f"{root}: dataset has no episodes")
    pairs: list[Sample] = []
    episodes = np.unique(np.linspace(0, ds.num_episodes - 1, min(n, ds.num_episodes)).astype(int))
    per = max(1, -(-n // len(episodes)))
    for e in episodes:
        ep = ds.episode(int(e))
        states = ep[STATE_KEY].astype(np.float32)
        sizes = {c: tuple(ep[image_key(c)].shape[1:3]) for c in cameras}
        if len(set(sizes.values())) != 1:
            raise TheiaError(f"{root}: cameras have different image sizes {sizes}; one bundle "
                             "takes one size for every camera")
        for t in np.unique(np.linspace(0, len(states) - 1, per).astype(int)):
            rows = np.maximum(np.arange(t - n_obs_steps + 1, t + 1), 0)
            pairs.append(({c: np.ascontiguousarray(ep[image_key(c)][rows]) for c in cameras},
                          states[rows]))
    pairs = pairs[:n]
    first = pairs[0][0][cameras[0]]
    return (int(first.shape[1]), int(first.shape[2])), pairs


def _random_pairs(policy: Policy, image_hw: tuple[int, int], n: int, seed: int
                  ) -> list[Sample]:
    """Random images and states around the training distribution (offset +- 2 scales)."""
    rng = np.random.default_rng(seed)
    cfg = policy.config
    norm = policy.normalizer.state
    offset, scale = norm.offset.numpy(), norm.scale.numpy()
    steps = cfg.n_obs_steps
    return [({c: rng.integers(0, 256, (steps, *image_hw, 3), dtype=np.uint8)
              for c in cfg.cameras},
             (offset + scale * rng.uniform(-2, 2, (steps, *offset.shape))).astype(np.float32))
            for _ in range(n)]


def _bundle_yaml(policy: Policy, image_hw: tuple[int, int], files: dict[str, str],
                 opts: ExportOptions, source: Path, parity_rows: list[dict] | None
                 ) -> dict[str, Any]:
    cfg, enc = policy.config, policy.encoder.config
    norm = policy.normalizer.to_dict()
    head_in = input_shapes(policy)
    shapes = {"image": [1, *image_hw, 3], "tokens": list(head_in["tokens"]),
              "state": list(head_in["state"]), "actions": [1, cfg.horizon, cfg.action_dim],
              "noisy": [1, cfg.horizon, cfg.action_dim], "timestep": [1],
              "model_output": [1, cfg.horizon, cfg.action_dim]}
    if cfg.type == "diffusion":
        shapes["cond"] = [1, policy.head.config.cond_dim]
        shapes["output"] = shapes["cond"]
    else:
        shapes["output"] = shapes["actions"]

    def io(name: str) -> dict[str, Any]:
        ins, out = GRAPH_IO[name]
        own = dict(shapes)
        if name == "encoder":  # one image in, one view's tokens out (run once per view)
            own["tokens"] = [1, enc.num_spatial_tokens, enc.embed_dim]
        return {"file": files[name],
                "inputs": {i: {"shape": own[i], "dtype": "uint8" if i == "image"
                               else "float32"} for i in ins},
                "output": {out: {"shape": own[out], "dtype": "float32"}}}

    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"theia-ros {__version__}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "policy": {
            "type": cfg.type,
            "action_kind": cfg.action_kind,
            "action_dim": cfg.action_dim,
            "action_units": list(ACTION_UNITS),
            "horizon": cfg.horizon,
            "n_obs_steps": cfg.n_obs_steps,
            "control_rate_hz": float(cfg.fps),
            "state_dim": cfg.state_dim,
            "robot_type": cfg.robot_type,
            "state_units": list(state_units(cfg.state_dim)),
            "state_layout": "arm joint positions (rad), then gripper open fraction",
            "source": str(source),
        },
        "camera": {"name": cfg.camera, "height": image_hw[0], "width": image_hw[1],
                   "encoding": "rgb8"},
        "cameras": list(cfg.cameras),
        "encoder": {
            "id": cfg.encoder_source,
            "config": enc.to_dict(),
            "embed_dim": enc.embed_dim,
            "num_tokens": enc.num_spatial_tokens,
            "image_size": enc.img_size,
            "preprocess": {"resize_mode": enc.resize,
                           "resize": f"{RESIZE_MODES[enc.resize]} (in graph)",
                           "scale": "1/255", "mean": 0.5, "std": 0.5},
        },
        "normalization": {
            "where": "host (numpy): state_n = (state - offset) / scale; "
                     "action = action_n * scale + offset",
            "mode": norm["mode"],
            "state": norm["state"],
            "action": norm["action"],
        },
        "inputs": {"topics": {"image": f"/{cfg.camera}/image_raw", "state": "/joint_states",
                              **{f"image.{c}": f"/{c}/image_raw" for c in cfg.cameras},
                              **opts.topics}},
        "graphs": {name: io(name) for name in files},
        "export": {"opset": opts.opset, "exporter": opts.exporter,
                   "torch": str(torch.__version__), "parity_tolerance": parity.TOLERANCE,
                   "tensorrt_static_check": trt_support.resolve_targets(opts.trt,
                                                                        opts.opset)[0]},
    }
    if cfg.type == "diffusion":
        from policies.diffusion import make_sample_scheduler

        sched = make_sample_scheduler(policy.head.config)
        doc["diffusion"] = {
            "sampler": "DDIM, eta=0, loop on the host (theia_ros.runtime.ddim)",
            "num_inference_steps": policy.head.config.num_inference_steps,
            "cond_dim": policy.head.config.cond_dim,
            "scheduler": {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in dict(sched.config).items() if not k.startswith("_")},
        }
    if opts.torch_copy:
        doc["torch"] = TORCH_DIR
    if parity_rows is not None:
        doc["export"]["parity"] = parity_rows
    return doc


def _write_yaml(path: Path, doc: dict[str, Any]) -> None:
    parse(BundleDoc, doc, path)  # what we write is what the runtime reads (one schema)
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False, width=99))


def check_dataset_fits(root: str, cfg: PolicyConfig) -> None:
    """Refuse (one line) a dataset from another robot or action space than the policy's:
    its camera size would be written into the bundle and its frames used as references."""
    from theia_ros.dataset import EpisodeDataset

    ds = EpisodeDataset(root)
    where = f"--dataset {root}"
    if ds.action_kind is not None and ds.action_kind.value != cfg.action_kind:
        raise TheiaError(f"{where}: actions are {ds.action_kind.value}, the policy outputs "
                         f"{cfg.action_kind} (a dataset from another robot?)")
    check_same_robot(ds.robot_type, cfg.robot_type, where)
    if ds.state_dim != cfg.state_dim:
        raise TheiaError(f"{where}: state has {ds.state_dim} numbers, the policy takes "
                         f"{cfg.state_dim}")


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name != SUMS_FILE and not p.name.startswith("."))


def export_bundle(policy_dir: str | os.PathLike, out: str | os.PathLike,
                  opts: ExportOptions | None = None, log: Any = print
                  ) -> tuple[Path, list[parity.ParityResult]]:
    """Export the policy at ``policy_dir`` to a bundle at ``out``; -> (out, parity results).

    Raises ``TheiaError`` on bad input and ``parity.ParityError`` (with the numbers) when the
    exported graphs disagree with torch; ``out`` is then left as it was.
    """
    opts = opts or ExportOptions()
    src, out = Path(policy_dir), Path(out)
    if out.exists() and not out.is_dir():
        raise TheiaError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not opts.overwrite:
        raise TheiaError(f"{out}: exists and is not empty; pass --force to replace it")
    trt_versions, trt_notes = trt_support.resolve_targets(opts.trt, opts.opset)
    for note in trt_notes:
        log(note)
    policy = load_policy(src).float().eval()
    cfg = policy.config

    data_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    image_hw = opts.image_hw
    if opts.dataset:
        check_dataset_fits(opts.dataset, cfg)
        data_hw, data_pairs = dataset_pairs(opts.dataset, cfg.cameras, opts.dataset_frames,
                                            cfg.n_obs_steps)
        if image_hw is not None and tuple(image_hw) != data_hw:
            raise TheiaError(f"--image-size {image_hw} disagrees with the dataset's "
                             f"{cfg.camera!r} camera size {data_hw}")
        image_hw = data_hw
    if image_hw is None:
        image_hw = (policy.encoder.config.img_size,) * 2
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    if min(image_hw) < 1:
        raise TheiaError(f"image size must be positive, got {image_hw}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        modules = build_graphs(policy, image_hw, fused=opts.fused)
        examples = example_inputs(policy, image_hw, seed=opts.seed)
        files: dict[str, str] = {}
        for name, module in modules.items():
            t0 = time.perf_counter()
            export_graph(module, examples[name], GRAPH_IO[name][1], tmp / GRAPH_FILES[name],
                         opset=opts.opset, exporter=opts.exporter)
            trt_support.check_graph_file(tmp / GRAPH_FILES[name], trt_versions)
            files[name] = GRAPH_FILES[name]
            size_mb = (tmp / files[name]).stat().st_size / 1e6
            log(f"exported {files[name]} ({size_mb:.1f} MB, {time.perf_counter() - t0:.1f} s)")
        if opts.torch_copy:
            (tmp / TORCH_DIR).mkdir()
            for f in (POLICY_JSON, MODEL_FILE):
                shutil.copy2(src / f, tmp / TORCH_DIR / f)
        _write_yaml(tmp / BUNDLE_YAML, _bundle_yaml(policy, image_hw, files, opts, src, None))
        write_sums(tmp, _all_files(tmp))

        # parity: every graph vs its module, then the runtime vs the policy
        input_sets: dict[str, list] = {}
        for name in modules:
            sets = [("random#0", examples[name]),
                    ("random#1", example_inputs(policy, image_hw, seed=opts.seed + 1)[name])]
            if name in ("encoder", "fused"):
                for i, (views, states) in enumerate(data_pairs[:2]):
                    x = {"image": torch.from_numpy(views[cfg.camera][-1][None])}
                    if name == "fused":
                        x["state"] = policy.normalizer.state.normalize(
                            torch.from_numpy(states[-1])[None])
                    sets.append((f"dataset#{i}", x))
            input_sets[name] = sets
        results = parity.graph_parity(tmp, modules, input_sets)
        pairs = [(f"random#{i}", img, s) for i, (img, s)
                 in enumerate(_random_pairs(policy, image_hw, 2, opts.seed))]
        pairs += [(f"dataset#{i}", img, s) for i, (img, s) in enumerate(data_pairs)]
        results += parity.end_to_end_parity(tmp, policy, pairs, seed=opts.seed)
        for r in results:
            log(r.line())
        parity.check(results)

        rows = [{"check": r.check, "inputs": r.inputs, "max_abs_err": float(r.max_abs_err)}
                for r in results]
        _write_yaml(tmp / BUNDLE_YAML, _bundle_yaml(policy, image_hw, files, opts, src, rows))
        write_sums(tmp, _all_files(tmp))
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, results
