"""The policy bundle on disk: ``bundle.yaml``, ONNX graphs, a torch copy, and ``SHA256SUMS``.

Layout (format version 1)::

    bundle/
      bundle.yaml          what the graphs are and how to feed them (see BundleMeta)
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

Torch-free: the robot reads this with only numpy and pyyaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from theia_ros.atomic import atomic_write_text
from theia_ros.checksums import sha256_file
from theia_ros.errors import TheiaError
from theia_ros.runtime.resize_weights import LEGACY_RESIZE, check_resize_mode

BUNDLE_YAML = "bundle.yaml"
SUMS_FILE = "SHA256SUMS"
FORMAT = "theia-ros-bundle"
FORMAT_VERSION = 1
POLICY_TYPES = ("cnn_mlp", "diffusion")
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
ACTION_UNITS = ("m", "m", "m", "rad", "rad", "rad", "open_fraction")


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
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or os.path.isabs(name) or ".." in name:
            raise TheiaError(f"{path}:{i}: expected '<64 hex digits>  <relative path>', "
                             f"got {line[:80]!r}")
        sums[name.strip()] = digest.lower()
    return sums


def verify_files(root: Path, names: list[str] | None = None) -> None:
    """Check the SHA-256 of ``names`` (default: every listed file) against ``SHA256SUMS``."""
    sums = read_sums(root)
    for name in names if names is not None else sorted(sums):
        if name not in sums:
            raise TheiaError(f"{root / SUMS_FILE}: does not list {name!r}")
        path = root / name
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


def _get(d: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise TheiaError(f"{where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TheiaError(f"{where}: field {key!r} should be {kind}, got {value!r}")
    return value


def _norm(d: dict, where: str, dim: int) -> Normalization:
    offset = np.asarray(_get(d, "offset", where, list), dtype=np.float32)
    scale = np.asarray(_get(d, "scale", where, list), dtype=np.float32)
    if offset.shape != (dim,) or scale.shape != (dim,):
        raise TheiaError(f"{where}: offset/scale must have {dim} numbers, got "
                         f"{offset.shape[0]}/{scale.shape[0]}")
    if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise TheiaError(f"{where}: offset must be finite and scale finite and > 0")
    return Normalization(offset, scale)


def _resize_mode(enc: dict, where: str) -> str:
    """``encoder.preprocess.resize_mode``, else the encoder config's, else the legacy mode."""
    pre = enc.get("preprocess") if isinstance(enc.get("preprocess"), dict) else {}
    cfg = enc.get("config") if isinstance(enc.get("config"), dict) else {}
    mode = pre.get("resize_mode", cfg.get("resize", LEGACY_RESIZE))
    return check_resize_mode(mode, f"{where}: encoder.preprocess.resize_mode")


def read_bundle(root: str | os.PathLike, verify: bool = True) -> BundleMeta:
    """Parse and check ``root/bundle.yaml``; with ``verify``, check every file's SHA-256 too."""
    root = Path(root)
    path = root / BUNDLE_YAML
    if not root.is_dir():
        raise TheiaError(f"{root}: not a directory (expected a policy bundle from 'theia export')")
    if not path.is_file():
        raise TheiaError(f"{path}: missing (expected a policy bundle from 'theia export')")
    if verify:
        verify_files(root)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TheiaError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise TheiaError(f"{path}: expected a mapping at the top level")
    where = str(path)
    if raw.get("format") != FORMAT:
        raise TheiaError(f"{path}: format is {raw.get('format')!r}, expected {FORMAT!r}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise TheiaError(f"{path}: format_version {raw.get('format_version')!r} unsupported "
                         f"(this runtime reads {FORMAT_VERSION})")
    pol = _get(raw, "policy", where, dict)
    ptype = _get(pol, "type", f"{where}: policy", str)
    if ptype not in POLICY_TYPES:
        raise TheiaError(f"{where}: policy.type {ptype!r} unknown; expected one of {POLICY_TYPES}")
    cam = _get(raw, "camera", where, dict)
    enc = _get(raw, "encoder", where, dict)
    graphs = _get(raw, "graphs", where, dict)
    for name in REQUIRED_GRAPHS[ptype]:
        if name not in graphs:
            raise TheiaError(f"{where}: graphs.{name} missing (a {ptype} bundle needs "
                             f"{list(REQUIRED_GRAPHS[ptype])})")
    graph_files = {}
    for name, g in graphs.items():
        graph_files[name] = _get(g, "file", f"{where}: graphs.{name}", str)
        if os.path.isabs(graph_files[name]) or ".." in Path(graph_files[name]).parts:
            raise TheiaError(f"{where}: graphs.{name}.file {graph_files[name]!r} must be a "
                             "path inside the bundle")
        if not (root / graph_files[name]).is_file():
            raise TheiaError(f"{root / graph_files[name]}: missing from the bundle "
                             f"(graphs.{name} in {BUNDLE_YAML})")
    if verify:  # what this bundle runs must be listed, not merely "whatever is listed"
        verify_files(root, [BUNDLE_YAML, *dict.fromkeys(graph_files.values())])
    state_dim = _get(pol, "state_dim", f"{where}: policy", int)
    action_dim = _get(pol, "action_dim", f"{where}: policy", int)
    norm = _get(raw, "normalization", where, dict)
    resize_mode = _resize_mode(enc, where)
    diff = raw.get("diffusion") or {}
    camera = _get(cam, "name", f"{where}: camera", str)
    cameras = _cameras(raw.get("cameras", [camera]), camera, where)
    n_obs_steps = pol.get("n_obs_steps", 1)
    if not isinstance(n_obs_steps, int) or isinstance(n_obs_steps, bool) or n_obs_steps < 1:
        raise TheiaError(f"{where}: policy.n_obs_steps must be an integer >= 1, got "
                         f"{n_obs_steps!r}")
    if ptype == "diffusion":
        for key in ("scheduler", "num_inference_steps", "cond_dim"):
            if not diff.get(key):  # diffusers' defaults would sample with the wrong schedule
                raise TheiaError(f"{where}: diffusion.{key} missing (a diffusion bundle needs "
                                 "it)")
    return BundleMeta(
        root=root,
        policy_type=ptype,
        action_kind=_get(pol, "action_kind", f"{where}: policy", str),
        action_dim=action_dim,
        horizon=_get(pol, "horizon", f"{where}: policy", int),
        control_rate_hz=float(_get(pol, "control_rate_hz", f"{where}: policy", (int, float))),
        state_dim=state_dim,
        camera=camera,
        image_hw=(_get(cam, "height", f"{where}: camera", int),
                  _get(cam, "width", f"{where}: camera", int)),
        embed_dim=_get(enc, "embed_dim", f"{where}: encoder", int),
        num_tokens=_get(enc, "num_tokens", f"{where}: encoder", int),
        graphs=graph_files,
        state_norm=_norm(_get(norm, "state", f"{where}: normalization", dict),
                         f"{where}: normalization.state", state_dim),
        action_norm=_norm(_get(norm, "action", f"{where}: normalization", dict),
                          f"{where}: normalization.action", action_dim),
        scheduler=dict(diff.get("scheduler") or {}),
        num_inference_steps=int(diff.get("num_inference_steps") or 0),
        cond_dim=int(diff.get("cond_dim") or 0),
        topics=dict(raw.get("inputs", {}).get("topics") or {}),
        resize_mode=resize_mode,
        raw=raw,
        cameras=cameras,
        n_obs_steps=n_obs_steps,
    )


def _cameras(value: Any, first: str, where: str) -> tuple[str, ...]:
    """The ``cameras`` list: distinct non-empty names, the first one ``camera.name``."""
    if not isinstance(value, list) or not value or not all(
            isinstance(c, str) and c for c in value) or len(set(value)) != len(value):
        raise TheiaError(f"{where}: cameras must be a list of distinct camera names, got "
                         f"{value!r}")
    if value[0] != first:
        raise TheiaError(f"{where}: cameras[0] is {value[0]!r} but camera.name is {first!r}")
    return tuple(value)
