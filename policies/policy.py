"""A behaviour-cloning policy = Theia encoder + action head + state/action normalisers.

The checkpoint is a directory (the Policy-checkpoint contract that export reads):

- ``model.safetensors``: every weight, the encoder's included even when it was frozen during
  training (so an exported bundle never needs the encoder checkpoint it started from), and
  the normaliser buffers (``normalizer.{state,action}.{offset,scale}``);
- ``policy.json``: ``type`` (``cnn_mlp|diffusion``), ``encoder`` (EncoderConfig), ``head``
  (head config), ``action_kind``, ``horizon``, ``fps``, ``cameras`` (names, in the order the
  head concatenates them), ``n_obs_steps``, ``state_dim``, ``normalization`` (raw stats and
  offset/scale) and the SHA-256 of ``model.safetensors``. Files from before several cameras
  (a single ``camera`` field) load as ``cameras: [camera]``, ``n_obs_steps: 1``.

Views: the head takes ``V = len(cameras) * n_obs_steps`` feature maps, time-major (oldest
observation step first; within a step, cameras in ``cameras`` order), each from the same
(shared) encoder, and ``n_obs_steps`` joint states.

Both files are written atomically (``theia_ros.atomic``), weights first, JSON last; a
checksum mismatch on load means a save was interrupted, and is reported as such.

Example::

    policy = Policy(PolicyConfig("cnn_mlp", "ee_delta", state_dim=7, horizon=10),
                    encoder, CnnMlpHead(CnnMlpConfig(192, 7)), normalizer)
    save_policy(policy, "runs/door")
    policy = load_policy("runs/door")
    chunk = policy.predict_action_chunk(image_u8, state)   # [1, 10, 7] physical units
    chunk = policy.predict_action_chunk({"front": img_f, "wrist": img_w}, state)  # 2 cameras
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from policies.cnn_mlp import CnnMlpConfig, CnnMlpHead
from policies.diffusion import DiffusionConfig, DiffusionHead
from policies.encoder import EncoderConfig, TheiaEncoder, tokens_to_map
from policies.normalize import NORM_MODES, Normalizer
from policies.preprocess import preprocess
from policies.weights import build_checked, header_shapes
from theia_ros.atomic import atomic_write, atomic_write_bytes
from theia_ros.checksums import sha256_file
from theia_ros.errors import TheiaError
from theia_ros.runtime.resize_weights import LEGACY_RESIZE
from theia_ros.schema import check, fld, load_mapping, parse
from theia_ros.types import ACTION_DIM, ActionKind

POLICY_JSON = "policy.json"
MODEL_FILE = "model.safetensors"
FORMAT = "theia-ros-policy"
FORMAT_VERSION = 1

# policy type -> (head config class, head class)
HEADS: dict[str, tuple[type, type[nn.Module]]] = {
    "cnn_mlp": (CnnMlpConfig, CnnMlpHead),
    "diffusion": (DiffusionConfig, DiffusionHead),
}


@dataclass(frozen=True)
class PolicyConfig:
    """What a policy is, apart from its networks' hyper-parameters.

    Args:
        type: head type, a key of ``HEADS``.
        action_kind: ``ee_delta`` (WidowX) or ``ee_absolute`` (Spot), see ActionKind.
        state_dim: joint-state length S.
        horizon: actions per predicted chunk H.
        fps: control rate the demonstrations were recorded at (Hz).
        cameras: dataset cameras the policy looks through, in the head's order.
        n_obs_steps: observation steps per prediction (current frame and the ones before).
        action_dim: numbers per action (7).
        encoder_frozen: whether the encoder was frozen while training.
        encoder_source: the checkpoint path / hub id / registry name it started from.
        robot_type: the robot the demonstrations came from (the dataset's ``robot_type``).
    """

    type: str = fld(choices=tuple(HEADS))
    action_kind: str = fld(choices=tuple(k.value for k in ActionKind))
    state_dim: int = fld(ge=1, le=64)
    horizon: int = fld(ge=1, le=1000)
    fps: float = fld(5.0, gt=0, le=1000)
    cameras: tuple[str, ...] = fld(("front",), min_len=1)
    n_obs_steps: int = fld(1, ge=1, le=64)
    action_dim: int = fld(ACTION_DIM, ge=1, le=64)
    encoder_frozen: bool = True
    encoder_source: str = "theia_tiny"
    robot_type: str | None = None  # the training dataset's robot_type (None: not recorded)

    def __post_init__(self) -> None:
        cams = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)
        object.__setattr__(self, "cameras", cams)
        if not cams or not all(isinstance(c, str) and c for c in cams) \
                or len(set(cams)) != len(cams):
            raise TheiaError(f"policy config: cameras must be distinct names, got {cams!r}")
        if not isinstance(self.n_obs_steps, int) or self.n_obs_steps < 1:
            raise TheiaError(f"policy config: n_obs_steps must be an int >= 1, got "
                             f"{self.n_obs_steps!r}")
        if self.type not in HEADS:
            raise TheiaError(f"policy type {self.type!r} unknown; choose one of {sorted(HEADS)}")
        kinds = [k.value for k in ActionKind]
        if self.action_kind not in kinds:
            raise TheiaError(f"action_kind {self.action_kind!r} unknown; choose one of {kinds}")
        for name in ("state_dim", "horizon", "action_dim"):
            if int(getattr(self, name)) < 1:
                raise TheiaError(f"policy config: {name} must be >= 1")
        if not self.fps > 0:
            raise TheiaError(f"policy config: fps must be > 0, got {self.fps}")

    @property
    def camera(self) -> str:
        """The first (main) camera."""
        return self.cameras[0]

    @property
    def num_views(self) -> int:
        """Feature maps per prediction: cameras x observation steps."""
        return len(self.cameras) * self.n_obs_steps


class Policy(nn.Module):
    """Encoder + head + normaliser; inputs and outputs in physical units."""

    def __init__(self, config: PolicyConfig, encoder: TheiaEncoder, head: nn.Module,
                 normalizer: Normalizer):
        super().__init__()
        hc = head.config
        if hc.feature_dim != encoder.embed_dim:
            raise TheiaError(f"head feature_dim {hc.feature_dim} != encoder width "
                             f"{encoder.embed_dim}")
        if (hc.state_dim, hc.horizon, hc.action_dim) != (
                config.state_dim, config.horizon, config.action_dim):
            want = (config.state_dim, config.horizon, config.action_dim)
            raise TheiaError("head config (state_dim, horizon, action_dim) = "
                             f"{(hc.state_dim, hc.horizon, hc.action_dim)} disagrees with the "
                             f"policy config {want}")
        views = (getattr(hc, "num_views", 1), getattr(hc, "n_obs_steps", 1))
        if views != (config.num_views, config.n_obs_steps):
            raise TheiaError(f"head config (num_views, n_obs_steps) = {views} disagrees with "
                             f"{len(config.cameras)} camera(s) x {config.n_obs_steps} step(s)")
        if (normalizer.state.dim, normalizer.action.dim) != (config.state_dim, config.action_dim):
            raise TheiaError(f"normalisation stats have (state, action) dims "
                             f"{(normalizer.state.dim, normalizer.action.dim)}, expected "
                             f"{(config.state_dim, config.action_dim)}")
        self.config = config
        self.encoder = encoder
        self.head = head
        self.normalizer = normalizer

    # --- features ---------------------------------------------------------------------------
    def encode(self, images_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images (any layout ``policies.preprocess`` accepts) -> ``[B, C, 14, 14]``."""
        cfg = self.encoder.config
        x = preprocess(images_u8, size=cfg.img_size, resize=cfg.resize)
        return self.encoder.forward_spatial(x.to(self._device()))

    def encode_views(self, images: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """{camera: uint8 ``[B, T, H, W, 3]`` (or ``[B, H, W, 3]`` when T = 1)} -> maps
        ``[B, V, C, 14, 14]`` in the head's time-major view order."""
        cfg = self.config
        missing = [c for c in cfg.cameras if c not in images]
        if missing:
            raise TheiaError(f"policy needs cameras {list(cfg.cameras)}; missing {missing}")
        per_cam = []
        for cam in cfg.cameras:
            x = torch.as_tensor(np.asarray(images[cam]) if not isinstance(images[cam],
                                torch.Tensor) else images[cam])
            if x.ndim == 4 and cfg.n_obs_steps == 1:
                x = x[:, None]
            if x.ndim != 5 or x.shape[1] != cfg.n_obs_steps:
                raise TheiaError(f"camera {cam!r}: expected uint8 [B, {cfg.n_obs_steps}, H, W, "
                                 f"3], got {tuple(x.shape)}")
            b, t = x.shape[:2]
            per_cam.append(self.encode(x.flatten(0, 1)).unflatten(0, (b, t)))
        return torch.stack(per_cam, dim=2).flatten(1, 2)  # [B, T, K, ...] -> [B, T*K, ...]

    def as_map(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens ``[..., 196, C]`` -> maps ``[..., C, 14, 14]``; maps pass through."""
        enc = self.encoder.config
        if tuple(features.shape[-2:]) == (enc.num_spatial_tokens, enc.embed_dim):
            lead = features.shape[:-2]
            return tokens_to_map(features.reshape(-1, *features.shape[-2:])).reshape(
                *lead, enc.embed_dim, enc.grid, enc.grid)
        return features

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_action_chunk(self, images_u8: np.ndarray | torch.Tensor | Mapping,
                             state: np.ndarray | torch.Tensor,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images (one camera's ``[B, H, W, 3]``, or {camera: ``[B, T, H, W, 3]``})
        + joint state ``[B, S]`` / ``[S]`` / ``[B, T, S]`` -> actions ``[B, H, 7]``."""
        if isinstance(images_u8, Mapping):
            return self.predict_from_features(self.encode_views(images_u8), state, generator)
        if self.config.num_views != 1:
            raise TheiaError(f"this policy looks through {list(self.config.cameras)} x "
                             f"{self.config.n_obs_steps} step(s): pass {{camera: images}}")
        return self.predict_from_features(self.encode(images_u8), state, generator)

    @torch.no_grad()
    def predict_from_features(self, features: torch.Tensor, state: np.ndarray | torch.Tensor,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokens ``[B, (V,) 196, C]`` or maps ``[B, (V,) C, 14, 14]`` + state -> ``[B, H, 7]``
        physical (the V axis may be left out for a one-view policy)."""
        fmap = self.as_map(features.to(self._device(), torch.float32))
        s = self._state_tensor(state, fmap.shape[0])
        chunk_n = self.head.predict(fmap, self.normalizer.state.normalize(s), generator)
        return self.normalizer.action.unnormalize(chunk_n)

    # --- training ---------------------------------------------------------------------------
    def compute_loss(self, features: torch.Tensor, state: torch.Tensor, actions: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """Head loss from features, physical state ``[B, S]`` and target chunk ``[B, H, 7]``."""
        norm = self.normalizer
        return self.head.compute_loss(self.as_map(features), norm.state.normalize(state),
                                      norm.action.normalize(actions), mask)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _state_tensor(self, state: np.ndarray | torch.Tensor, batch: int) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(state) if not isinstance(state, torch.Tensor) else state)
        s = s.to(self._device(), torch.float32)
        dim, steps = self.config.state_dim, self.config.n_obs_steps
        if s.ndim == 1:
            s = s[None]
        if s.ndim == 2 and steps > 1 and s.shape == (steps, dim):
            s = s[None]
        if s.ndim == 2:
            s = s[:, None]
        if s.ndim != 3 or s.shape[1:] != (steps, dim):
            raise TheiaError(f"state must be [B, {steps}, {dim}] (or [B, {dim}] for one step), "
                             f"got {tuple(s.shape)}")
        if s.shape[0] != batch:
            if s.shape[0] != 1:
                raise TheiaError(f"state batch {s.shape[0]} != image batch {batch}")
            s = s.expand(batch, -1, -1)
        return s

    def describe(self) -> dict[str, Any]:
        """The ``policy.json`` content (without the weights checksum)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **asdict(self.config),
            "cameras": list(self.config.cameras),
            "encoder": self.encoder.config.to_dict(),
            "head": self.head.config.to_dict(),
            "normalization": self.normalizer.to_dict(),
        }


def build_policy(config: PolicyConfig, encoder: TheiaEncoder, head_config: Any,
                 normalizer: Normalizer) -> Policy:
    """Policy with a freshly initialised head of ``config.type``."""
    _, head_cls = HEADS[config.type]
    return Policy(config, encoder, head_cls(head_config), normalizer)


def save_policy(policy: Policy, out_dir: str | os.PathLike) -> Path:
    """Write ``policy.json`` + ``model.safetensors`` into ``out_dir`` (atomically, each)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    atomic_write(model_path, lambda tmp: save_file(
        tensors, str(tmp), metadata={"format": FORMAT, "type": policy.config.type}))
    meta = policy.describe()
    meta["model_sha256"] = sha256_file(model_path)
    atomic_write_bytes(out / POLICY_JSON, (json.dumps(meta, indent=2) + "\n").encode())
    return out


@dataclass(frozen=True)
class _Stats:
    """One field's normalisation statistics in ``policy.json``."""

    mean: list[float] = fld(min_len=1, max_len=64)
    std: list[float] = fld(ge=0, min_len=1, max_len=64)
    min: list[float] = fld(min_len=1, max_len=64)
    max: list[float] = fld(min_len=1, max_len=64)
    mode: str | None = fld(None, choices=NORM_MODES)
    offset: list[float] | None = None
    scale: list[float] | None = fld(None, gt=0)


@dataclass(frozen=True)
class _Normalization:
    mode: str = fld(choices=NORM_MODES)
    state: _Stats = fld()
    action: _Stats = fld()


@dataclass(frozen=True)
class PolicyFile:
    """``policy.json``: the ``PolicyConfig`` fields (top level) plus these."""

    format: str = fld(choices=(FORMAT,))
    format_version: int = fld(choices=(FORMAT_VERSION,))
    encoder: EncoderConfig = fld()
    head: dict[str, Any] = fld()
    normalization: _Normalization = fld()
    model_sha256: str | None = None


@dataclass(frozen=True)
class PolicyMeta:
    """A checked ``policy.json``: every part typed, bounded and consistent with the others."""

    path: Path
    config: PolicyConfig
    encoder: EncoderConfig
    head: Any  # the head config of ``config.type``
    normalization: dict[str, Any]
    model_sha256: str | None


def read_policy_json(path: str | os.PathLike) -> PolicyMeta:
    """Parsed and checked ``policy.json`` of a policy directory (one error line per problem)."""
    p = Path(path)
    p = p / POLICY_JSON if p.is_dir() else p
    if not p.is_file():
        raise TheiaError(f"{p}: no policy.json (expected a policy directory from train-policy)")
    raw = load_mapping(p)
    if raw.get("format") != FORMAT:
        raise TheiaError(f"{p}: format is {raw.get('format')!r}, expected {FORMAT!r}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise TheiaError(f"{p}: format_version {raw.get('format_version')!r} unsupported "
                         f"(this code reads {FORMAT_VERSION})")
    if "cameras" not in raw and "camera" in raw:  # written before several cameras existed
        camera = raw["camera"]
        raw = {k: v for k, v in raw.items() if k != "camera"}
        raw["cameras"] = [camera]
    if isinstance(raw.get("encoder"), dict) and "resize" not in raw["encoder"]:
        raw = {**raw, "encoder": {"resize": LEGACY_RESIZE, **raw["encoder"]}}  # predates it
    own = set(PolicyConfig.__dataclass_fields__)
    known = [*own, *PolicyFile.__dataclass_fields__]
    unknown = [k for k in raw if k not in known]
    check(p, unknown[0] if unknown else "", not unknown, f"unknown field (known: {known})")
    config = parse(PolicyConfig, {k: v for k, v in raw.items() if k in own}, p)
    rest = parse(PolicyFile, {k: v for k, v in raw.items() if k not in own}, p)
    head_cls, _ = HEADS[config.type]
    head = parse(head_cls, rest.head, p, "head")
    enc = rest.encoder
    for name in ("state_dim", "horizon", "action_dim"):
        check(p, f"head.{name}", getattr(head, name) == getattr(config, name),
              f"{getattr(head, name)} disagrees with {name} {getattr(config, name)}")
    check(p, "head.feature_dim", head.feature_dim == enc.embed_dim,
          f"{head.feature_dim} disagrees with encoder.embed_dim {enc.embed_dim}")
    check(p, "head.grid", head.grid == enc.grid,
          f"{head.grid} disagrees with the encoder's token grid {enc.grid} "
          f"(img_size {enc.img_size} / patch_size {enc.patch_size})")
    norm = rest.normalization
    for part, dim in (("state", config.state_dim), ("action", config.action_dim)):
        stats = getattr(norm, part)
        for key in ("mean", "std", "min", "max", "offset", "scale"):
            values = getattr(stats, key)
            check(p, f"normalization.{part}.{key}", values is None or len(values) == dim,
                  f"has {len(values or [])} numbers, expected {dim}")
    return PolicyMeta(p, config, enc, head, raw["normalization"], rest.model_sha256)


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu",
                verify: bool = True) -> Policy:
    """Policy directory -> ``Policy`` in eval mode (safetensors only, no pickle).

    ``policy.json`` is checked on its own, then against the shapes in the weights file's
    header on a ``meta``-device twin; only then is the network built and the weights read.
    """
    root = Path(path)
    meta = read_policy_json(root)
    model_path = root / MODEL_FILE
    if not model_path.is_file():
        raise TheiaError(f"{model_path}: missing (policy.json without its weights)")
    if verify and meta.model_sha256 and sha256_file(model_path) != meta.model_sha256:
        raise TheiaError(f"{model_path}: checksum differs from policy.json (interrupted save?)")
    _, head_cls = HEADS[meta.config.type]

    def make() -> Policy:
        return Policy(meta.config, TheiaEncoder(meta.encoder), head_cls(meta.head),
                      Normalizer.from_dict(meta.normalization))

    policy = build_checked(make, header_shapes(model_path), str(model_path),
                           config=str(meta.path))
    state = load_file(str(model_path))
    for part in ("state", "action"):  # the host-side copy (policy.json) must be these numbers
        for key in ("offset", "scale"):
            name = f"normalizer.{part}.{key}"
            ours = getattr(getattr(policy.normalizer, part), key)
            if not torch.allclose(state[name].float(), ours, rtol=1e-5, atol=0):
                raise TheiaError(f"{model_path}: {name} disagrees with {meta.path} "
                                 f"normalization.{part}")
    policy.load_state_dict(state, strict=True)
    return policy.to(device).eval()
