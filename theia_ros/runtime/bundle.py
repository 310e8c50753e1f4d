"""The policy bundle on disk: ``bundle.yaml``, ONNX graphs, a torch copy, and ``SHA256SUMS``.

Layout (format version 1)::

    bundle/
      bundle.yaml          what the graphs are and how to feed them (fields: bundle_schema)
      encoder.onnx         uint8 image [1, H, W, 3] -> tokens [1, 196, C]   (preprocess inside)
      head.onnx            cnn_mlp: tokens + normalised state -> normalised actions [1, H, 7]
      condition.onnx       diffusion: tokens + normalised state -> condition [1, D]
      denoiser.onnx        diffusion: (noisy [1, H, 7], timestep [1] float, cond) -> [1, H, 7]
      fused.onnx           optional: image + normalised state -> head/condition output
      torch/policy.json, torch/model.safetensors   the policy checkpoint (torch backend)
      SHA256SUMS           ``sha256sum -c`` format, one line per file above

Cameras: ``cameras`` lists the camera names in the order the head concatenates their
features (every camera through the one encoder graph, all at the ``camera`` section's size);
``policy.n_obs_steps`` is the observation history length T. With V = cameras x T > 1 the
head/condition graphs take ``tokens`` ``[1, V, 196, C]`` (time-major) and, with T > 1,
``state`` ``[1, T, S]``. Bundles without ``cameras`` are one-camera bundles (``camera.name``)
with T = 1.

Normalisation (state in, actions out) and the DDIM loop are *not* in the graphs: they run in
numpy from the statistics and scheduler config in ``bundle.yaml``. One host-side code path
serves every backend and both policy types, the statistics stay readable, and the graphs see
O(1) values only (kind to TensorRT fp16).

Nothing in a bundle is trusted: every field is typed and bounded (``bundle_schema``), the
dims must agree across sections, with the torch copy's ``policy.json`` and (in the backends)
with the graphs' real input/output shapes, and no file may live outside the bundle. The
robot type, action kind and units say which robots may run it (``robots.robot_types``).

Torch-free: the robot reads this with only numpy and pyyaml.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from theia_ros.atomic import atomic_write_text
from theia_ros.checksums import sha256_file
from theia_ros.errors import TheiaError
from theia_ros.runtime.bundle_schema import (  # noqa: F401 (re-exported for the writer)
    ACTION_UNITS,
    FORMAT,
    FORMAT_VERSION,
    POLICY_TYPES,
    BundleDoc,
    GraphSpec,
    NormStats,
    state_units,
)
from theia_ros.runtime.resize_weights import LEGACY_RESIZE, check_resize_mode
from theia_ros.schema import check, load_mapping, parse, read_text

log = logging.getLogger(__name__)

BUNDLE_YAML = "bundle.yaml"
SUMS_FILE = "SHA256SUMS"
# graph name -> file; which graphs a policy type needs.
GRAPH_FILES = {"encoder": "encoder.onnx", "head": "head.onnx", "condition": "condition.onnx",
               "denoiser": "denoiser.onnx", "fused": "fused.onnx"}
REQUIRED_GRAPHS = {"cnn_mlp": ("encoder", "head"),
                   "diffusion": ("encoder", "condition", "denoiser")}
# graph name -> (input names, output name): the contract between export and the runtime.
GRAPH_IO: dict[str, tuple[tuple[str, ...], str]] = {
    "encoder": (("image",), "tokens"),
    "head": (("tokens", "state"), "actions"),
    "condition": (("tokens", "state"), "cond"),
    "denoiser": (("noisy", "timestep", "cond"), "model_output"),
    "fused": (("image", "state"), "output"),
}
# the torch copy of the policy (torch backend), relative to the ``torch:`` directory
TORCH_FILES = ("policy.json", "model.safetensors")


def write_sums(root: Path, names: list[str]) -> Path:
    """Write ``SHA256SUMS`` (``sha256sum -c`` compatible) for ``names`` relative to ``root``."""
    lines = [f"{sha256_file(root / n)}  {n}\n" for n in sorted(names)]
    return atomic_write_text(root / SUMS_FILE, "".join(lines))


def read_sums(root: Path) -> dict[str, str]:
    """``SHA256SUMS`` -> {relative path: hex digest}; a clear error when absent or malformed."""
    path = root / SUMS_FILE
    if not path.is_file():
        raise TheiaError(f"{path}: missing; a bundle lists every file's SHA-256 there "
                         "(re-export it with 'theia export')")
    sums: dict[str, str] = {}
    for i, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or os.path.isabs(name) or ".." in name:
            raise TheiaError(f"{path}:{i}: expected '<64 hex digits>  <relative path>', "
                             f"got {line[:80]!r}")
        sums[name.strip()] = digest.lower()
    return sums


def inside(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` when it stays inside the bundle once links are followed, else an error
    naming ``what`` (a symlink out of the bundle could point anywhere: /dev/zero, a FIFO)."""
    if os.path.isabs(rel) or ".." in Path(rel).parts:
        raise TheiaError(f"{root / BUNDLE_YAML}: {what} {rel!r} must be a path inside the "
                         "bundle")
    path = root / rel
    real, base = path.resolve(), root.resolve()
    if real != base and base not in real.parents:
        raise TheiaError(f"{path}: a link to {real}, outside the bundle; bundles must hold "
                         "their files (copy the file in)")
    return path


def verify_files(root: Path, names: list[str] | None = None) -> None:
    """Check the SHA-256 of ``names`` (default: every listed file) against ``SHA256SUMS``."""
    sums = read_sums(root)
    for name in names if names is not None else sorted(sums):
        if name not in sums:
            raise TheiaError(f"{root / SUMS_FILE}: does not list {name!r}")
        path = inside(root, name, f"{SUMS_FILE} entry")
        if not path.is_file():
            raise TheiaError(f"{path}: missing from the bundle (listed in {SUMS_FILE})")
        if sha256_file(path) != sums[name]:
            raise TheiaError(f"{path}: SHA-256 differs from {SUMS_FILE} (corrupt or modified "
                             "file; re-copy or re-export the bundle)")


@dataclass(frozen=True)
class Normalization:
    """Affine per-dimension map ``normalised = (x - offset) / scale`` (``[D]`` float32 each)."""

    offset: np.ndarray
    scale: np.ndarray

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.offset) / self.scale).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.offset).astype(np.float32)


@dataclass(frozen=True)
class BundleMeta:
    """Parsed ``bundle.yaml``. Attribute names are the Runtime contract (``.meta.horizon`` ...)."""

    root: Path
    policy_type: str
    action_kind: str
    action_dim: int
    horizon: int
    control_rate_hz: float
    state_dim: int
    camera: str  # the first camera
    image_hw: tuple[int, int]  # the camera size the encoder graph takes (every camera)
    embed_dim: int
    num_tokens: int
    graphs: dict[str, str]  # graph name -> file name (relative to root)
    state_norm: Normalization
    action_norm: Normalization
    scheduler: dict[str, Any] = field(default_factory=dict)  # diffusion only
    num_inference_steps: int = 0  # diffusion only
    cond_dim: int = 0  # diffusion only
    topics: dict[str, str] = field(default_factory=dict)
    # how the encoder graph resizes camera frames (``policies.preprocess``); bundles that
    # do not say were exported with ``bilinear``
    resize_mode: str = LEGACY_RESIZE
    raw: dict[str, Any] = field(default_factory=dict)  # the whole bundle.yaml
    robot_type: str | None = None  # the training data's robot (None: not recorded)
    action_units: tuple[str, ...] = ACTION_UNITS
    cameras: tuple[str, ...] = ()  # every camera, in the head's order ((camera,) if one)
    n_obs_steps: int = 1  # observation history length T

    def __post_init__(self) -> None:
        if not self.cameras:
            object.__setattr__(self, "cameras", (self.camera,))

    @property
    def num_views(self) -> int:
        """Feature maps per prediction: cameras x observation steps."""
        return len(self.cameras) * self.n_obs_steps

    @property
    def tokens_shape(self) -> tuple[int, ...]:
        """The head/condition graphs' ``tokens`` input shape."""
        one = (self.num_tokens, self.embed_dim)
        return (1, self.num_views, *one) if self.num_views > 1 else (1, *one)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The head/condition graphs' ``state`` input shape."""
        if self.n_obs_steps > 1:
            return (1, self.n_obs_steps, self.state_dim)
        return (1, self.state_dim)

    def graph_path(self, name: str) -> Path:
        if name not in self.graphs:
            raise TheiaError(f"{self.root / BUNDLE_YAML}: no {name!r} graph in this bundle "
                             f"(has {sorted(self.graphs)})")
        return self.root / self.graphs[name]

    @property
    def torch_dir(self) -> Path | None:
        rel = self.raw.get("torch")
        return None if rel is None else self.root / rel

    def tensor_specs(self, graph: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """{tensor name: (shape, dtype)} of ``graph``'s inputs and output, from the metadata:
        what a backend checks the real graph against before running it."""
        h, w = self.image_hw
        chunk = (1, self.horizon, self.action_dim)
        shapes = {"image": (1, h, w, 3), "tokens": self.tokens_shape,
                  "state": self.state_shape, "actions": chunk, "noisy": chunk,
                  "timestep": (1,), "model_output": chunk, "cond": (1, self.cond_dim)}
        shapes["output"] = shapes["cond"] if self.policy_type == "diffusion" else chunk
        if graph == "encoder":  # one image in, one view's tokens out (run once per view)
            shapes["tokens"] = (1, self.num_tokens, self.embed_dim)
        ins, out = GRAPH_IO[graph]
        return {n: (shapes[n], "uint8" if n == "image" else "float32") for n in (*ins, out)}


def _norm(stats: NormStats, where: Path, path: str, dim: int, dim_name: str) -> Normalization:
    for key in ("offset", "scale", "mean", "std", "min", "max"):
        values = getattr(stats, key)
        check(where, f"{path}.{key}", values is None or len(values) == dim,
              f"has {len(values or [])} numbers, expected {dim} (policy.{dim_name})")
    return Normalization(np.asarray(stats.offset, np.float32),
                         np.asarray(stats.scale, np.float32))


def _check_graph(meta: BundleMeta, name: str, spec: GraphSpec, where: Path) -> None:
    """The graph's declared inputs/output agree with the policy's dims."""
    path = f"graphs.{name}"
    check(where, path, name in GRAPH_FILES,
          f"unknown graph; expected one of {list(GRAPH_FILES)}")
    ins, out = GRAPH_IO[name]
    check(where, f"{path}.inputs", set(spec.inputs) == set(ins),
          f"names {sorted(spec.inputs)}, expected {sorted(ins)}")
    check(where, f"{path}.output", set(spec.output) == {out},
          f"names {sorted(spec.output)}, expected [{out!r}]")
    declared = {**spec.inputs, **spec.output}
    for tensor, (shape, dtype) in meta.tensor_specs(name).items():
        got = declared[tensor]
        part = "inputs" if tensor in ins else "output"
        check(where, f"{path}.{part}.{tensor}.shape", tuple(got.shape) == shape,
              f"{list(got.shape)} disagrees with the policy's dims (expected {list(shape)})")
        check(where, f"{path}.{part}.{tensor}.dtype", got.dtype == dtype,
              f"{got.dtype!r}, expected {dtype!r}")


def _check_units(doc: BundleDoc, where: Path) -> tuple[str, ...]:
    pol = doc.policy
    if pol.action_units is None:
        log.warning("%s: no policy.action_units (exported before units were recorded); "
                    "assuming %s", where, list(ACTION_UNITS))
    units = tuple(pol.action_units or ACTION_UNITS)
    check(where, "policy.action_units", units == ACTION_UNITS,
          f"{list(units)}; the robots take {list(ACTION_UNITS)} (xyz, rpy, gripper) and "
          "nothing converts units")
    want = state_units(pol.state_dim)
    got = tuple(pol.state_units or want)
    check(where, "policy.state_units", got == want,
          f"{list(got)}; the robots report {list(want)} (joints, then gripper)")
    return units


def _check_torch_copy(meta: BundleMeta, doc: BundleDoc, where: Path) -> None:
    """The bundle's policy checkpoint says what ``bundle.yaml`` says (torch-free: JSON only)."""
    root = meta.torch_dir
    assert root is not None
    policy_json = root / TORCH_FILES[0]
    pj = load_mapping(policy_json)
    pol = doc.policy
    for key, value in (("type", pol.type), ("action_kind", pol.action_kind),
                       ("horizon", pol.horizon), ("state_dim", pol.state_dim),
                       ("action_dim", pol.action_dim)):
        check(where, f"policy.{key}", pj.get(key) == value,
              f"{value!r} disagrees with {policy_json} ({pj.get(key)!r})")
    cams = pj.get("cameras") or [pj.get("camera", "front")]
    check(where, "cameras", list(meta.cameras) == list(cams),
          f"{list(meta.cameras)} disagrees with {policy_json} ({cams!r})")
    check(where, "policy.n_obs_steps", pj.get("n_obs_steps", 1) == meta.n_obs_steps,
          f"{meta.n_obs_steps} disagrees with {policy_json} ({pj.get('n_obs_steps', 1)!r})")
    if pol.robot_type is not None and pj.get("robot_type") is not None:
        check(where, "policy.robot_type", pj["robot_type"] == pol.robot_type,
              f"{pol.robot_type!r} disagrees with {policy_json} ({pj['robot_type']!r})")
    enc = pj.get("encoder")
    if isinstance(enc, dict):
        check(where, "encoder.embed_dim", enc.get("embed_dim") == meta.embed_dim,
              f"{meta.embed_dim} disagrees with {policy_json} ({enc.get('embed_dim')!r})")
    norm = pj.get("normalization")
    for part, ours in (("state", meta.state_norm), ("action", meta.action_norm)):
        theirs = norm.get(part) if isinstance(norm, dict) else None
        for key in ("offset", "scale"):
            try:
                value = np.asarray(theirs[key], np.float64)  # type: ignore[index]
            except (TypeError, KeyError, ValueError):
                raise TheiaError(f"{policy_json}: normalization.{part}.{key} missing or not "
                                 "numbers") from None
            mine = getattr(ours, key)
            same = value.shape == mine.shape and np.allclose(value, mine, rtol=1e-5, atol=0)
            check(where, f"normalization.{part}.{key}", same,
                  f"disagrees with {policy_json} (the policy the graphs came from)")


def _resize_mode(enc: dict, where: str) -> str:
    """``encoder.preprocess.resize_mode``, else the encoder config's, else the legacy mode."""
    pre = enc.get("preprocess") if isinstance(enc.get("preprocess"), dict) else {}
    cfg = enc.get("config") if isinstance(enc.get("config"), dict) else {}
    mode = pre.get("resize_mode", cfg.get("resize", LEGACY_RESIZE))
    return check_resize_mode(mode, f"{where}: encoder.preprocess.resize_mode")


def read_bundle(root: str | os.PathLike, verify: bool = True) -> BundleMeta:
    """Parse and check ``root/bundle.yaml``; with ``verify``, check every file's SHA-256 too.

    Every field is typed and bounded (``bundle_schema``); dims, declared graph shapes,
    units and the torch copy of the policy must agree with each other. Each problem is one
    ``TheiaError`` line naming the file and the field.
    """
    root = Path(root)
    path = root / BUNDLE_YAML
    if not root.is_dir():
        raise TheiaError(f"{root}: not a directory (expected a policy bundle from 'theia export')")
    if not path.is_file():
        raise TheiaError(f"{path}: missing (expected a policy bundle from 'theia export')")
    inside(root, BUNDLE_YAML, "bundle file")
    if verify:
        verify_files(root)
    raw = load_mapping(path)
    if raw.get("format") != FORMAT:
        raise TheiaError(f"{path}: format is {raw.get('format')!r}, expected {FORMAT!r}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise TheiaError(f"{path}: format_version {raw.get('format_version')!r} unsupported "
                         f"(this runtime reads {FORMAT_VERSION})")
    doc = parse(BundleDoc, raw, path)
    pol, enc = doc.policy, doc.encoder
    for name in REQUIRED_GRAPHS[pol.type]:
        check(path, f"graphs.{name}", name in doc.graphs,
              f"missing (a {pol.type} bundle needs {list(REQUIRED_GRAPHS[pol.type])})")
    check(path, "encoder.num_tokens", math.isqrt(enc.num_tokens) ** 2 == enc.num_tokens,
          f"{enc.num_tokens} is not a square grid of tokens")
    diff = doc.diffusion
    check(path, "diffusion", (diff is not None) == (pol.type == "diffusion"),
          "missing (a diffusion bundle needs its sampler settings)" if diff is None
          else f"present in a {pol.type} bundle")
    graph_files = {name: g.file for name, g in doc.graphs.items()}
    for name, rel in graph_files.items():
        file = inside(root, rel, f"graphs.{name}.file")
        if not file.is_file():
            raise TheiaError(f"{file}: missing from the bundle (graphs.{name} in {BUNDLE_YAML})")
    torch_rel = doc.torch
    if torch_rel is not None:
        for f in TORCH_FILES:
            if not inside(root, f"{torch_rel}/{f}", "torch").is_file():
                raise TheiaError(f"{root / torch_rel / f}: missing from the bundle (torch: in "
                                 f"{BUNDLE_YAML}; re-export, or delete that line)")
    if verify:  # what this bundle runs must be listed, not merely "whatever is listed"
        torch_files = [f"{torch_rel}/{f}" for f in TORCH_FILES] if torch_rel else []
        verify_files(root, [BUNDLE_YAML, *dict.fromkeys(graph_files.values()), *torch_files])
    if diff is not None:
        from theia_ros.runtime.ddim import DDIMConfig, DDIMSampler

        DDIMSampler(DDIMConfig.from_dict(diff.scheduler, path), diff.num_inference_steps, path)
    cameras = tuple(doc.cameras) if doc.cameras is not None else (doc.camera.name,)
    check(path, "cameras", len(set(cameras)) == len(cameras) and all(cameras),
          f"{list(cameras)}: expected distinct camera names")
    check(path, "cameras", cameras[0] == doc.camera.name,
          f"cameras[0] is {cameras[0]!r} but camera.name is {doc.camera.name!r}")
    meta = BundleMeta(
        root=root,
        policy_type=pol.type,
        action_kind=pol.action_kind,
        action_dim=pol.action_dim,
        horizon=pol.horizon,
        control_rate_hz=pol.control_rate_hz,
        state_dim=pol.state_dim,
        camera=doc.camera.name,
        image_hw=(doc.camera.height, doc.camera.width),
        embed_dim=enc.embed_dim,
        num_tokens=enc.num_tokens,
        graphs=graph_files,
        state_norm=_norm(doc.normalization.state, path, "normalization.state",
                         pol.state_dim, "state_dim"),
        action_norm=_norm(doc.normalization.action, path, "normalization.action",
                          pol.action_dim, "action_dim"),
        scheduler=dict(diff.scheduler) if diff else {},
        num_inference_steps=diff.num_inference_steps if diff else 0,
        cond_dim=diff.cond_dim if diff else 0,
        topics=dict(doc.inputs.topics),
        resize_mode=_resize_mode(raw["encoder"], str(path)),
        raw=raw,
        cameras=cameras,
        n_obs_steps=pol.n_obs_steps,
        robot_type=pol.robot_type,
        action_units=_check_units(doc, path),
    )
    for name, spec in doc.graphs.items():
        _check_graph(meta, name, spec, path)
    if torch_rel is not None:
        _check_torch_copy(meta, doc, path)
    return meta
