"""Teacher vision foundation models: how to load each one and which activation is its target.

The facts every module needs without torch (hub ids, published feature shapes, teacher sets)
live in ``policies.teacher_specs``; this module adds what only distillation needs: the timm /
transformers source of each teacher, its own input preprocessing and the feature hook.

Teachers (letter, hub id = translator key, source, target feature):

- c  ``openai/clip-vit-large-patch14``: timm ``vit_large_patch14_clip_224.openai``; last
  block's patch tokens without the post-LN: 1024x16x16.
- di ``facebook/dinov2-large``: timm ``vit_large_patch14_dinov2.lvd142m`` at 224; last hidden
  state (after the final LN): 1024x16x16.
- v  ``google/vit-huge-patch14-224-in21k``: timm ``vit_huge_patch14_224.orig_in21k``; last
  hidden state (after the final LN): 1280x16x16.
- s  ``facebook/sam-vit-huge``: transformers ``SamVisionModel`` at 1024; image embeddings
  (after the neck): 256x64x64.
- de ``LiheYoung/depth-anything-large-hf``: transformers ``DepthAnythingForDepthEstimation``
  at 518; head conv2 + ReLU (before the last conv), resized to 64x64: 32x64x64.

Every teacher takes the same uint8 ``[B, 3, 224, 224]`` images (the prepared shards) and makes
its own input from them, so one image pass feeds all. Two ways (``teacher_inputs``):

- ``published`` (default): what each teacher's Hugging Face image processor does with its hub
  defaults (:class:`HubProcessor`), as the released targets and the published statistics
  were made: resize with the processor's antialiased kernel on uint8 (rounded), crop, scale,
  normalise, pad. DINOv2 sees the centre 224 of a 256 resize, i.e. a zoomed centre crop.
- ``aligned``: the same kernel and normalisation, but the whole image stretched to the
  teacher's input side, no crop and no padding: every teacher sees exactly the student's
  field of view.

``build_teacher(hub_id, pretrained=False, overrides=TINY_OVERRIDES[hub_id])`` builds a small
random-weight model of the *same* architecture through the same code path: that is how the
tests and the CPU benchmark run without downloads.

Example::

    teachers = build_teachers("cdiv", pretrained=True, device="cuda")
    feats = {t.hub_id: t(images_u8) for t in teachers}    # {id: [B, H*W, C] float32}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policies.teacher_specs import TEACHER_SETS, TEACHERS, TeacherSpec, resolve_teachers
from theia_ros.errors import TheiaError
from theia_ros.runtime.torch_resize import resize_uint8
from training.hub import hub_online

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
TEACHER_INPUTS = ("published", "aligned")
DEFAULT_TEACHER_INPUTS = "published"


def check_teacher_inputs(mode: object, where: str = "teacher inputs") -> str:
    if mode not in TEACHER_INPUTS:
        raise TheiaError(f"{where}: {mode!r} unknown; expected one of {TEACHER_INPUTS}")
    return str(mode)


@dataclass(frozen=True)
class HubProcessor:
    """A teacher's hub image processor, reduced to its ``preprocessor_config.json`` facts.

    Exactly one resize rule is set. The resize is antialiased with ``kernel`` on uint8 and
    rounded (transformers' torchvision and PIL backends both do that); crop and padding
    follow it, padding with zeros after normalisation.

    Args:
        name: the transformers processor class.
        kernel: ``bilinear`` or ``bicubic`` (the config's ``resample`` 2 or 3).
        shortest_edge: resize the shorter side to this, keeping the aspect ratio.
        longest_edge: resize the longer side to this, keeping the aspect ratio (SAM).
        height_width: resize to this ``(height, width)``.
        multiple_of: with ``height_width``: keep the aspect ratio, sides a multiple of this
            (DPT's ``keep_aspect_ratio`` + ``ensure_multiple_of``).
        crop: centre crop side.
        pad: pad bottom/right to this square side.
    """

    name: str
    kernel: str
    shortest_edge: int | None = None
    longest_edge: int | None = None
    height_width: tuple[int, int] | None = None
    multiple_of: int | None = None
    crop: int | None = None
    pad: int | None = None

    def resize_hw(self, h: int, w: int) -> tuple[int, int]:
        """The resized ``(height, width)`` of an ``h x w`` image, by transformers' formulas."""
        if self.shortest_edge is not None:
            short, long = min(h, w), max(h, w)
            new_long = int(self.shortest_edge * long / short)
            return (new_long, self.shortest_edge) if w <= h else (self.shortest_edge, new_long)
        if self.longest_edge is not None:
            scale = self.longest_edge / max(h, w)
            return int(h * scale + 0.5), int(w * scale + 0.5)
        out_h, out_w = self.height_width  # type: ignore[misc]
        if self.multiple_of is None:
            return out_h, out_w
        scale_h, scale_w = out_h / h, out_w / w
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
        return _multiple(scale_h * h, self.multiple_of), _multiple(scale_w * w, self.multiple_of)


def _multiple(value: float, multiple: int) -> int:
    """DPT's ``constrain_to_multiple_of`` (no bounds): the nearest multiple, at least 0."""
    x = round(value / multiple) * multiple
    return x if x >= 0 else math.ceil(value / multiple) * multiple


@dataclass(frozen=True)
class TeacherSource:
    """How one teacher is built and fed.

    Args:
        hub_id: the teacher's hub id (key of ``policies.teacher_specs.TEACHERS``).
        letter: the paper's letter for it (c, di, v, s, de).
        family: ``timm_vit`` | ``sam`` | ``depth_anything``.
        name: timm model name (with pretrained tag) or hub id to load.
        input_size: square input side in pixels the teacher sees.
        mean: per-channel mean on the 0..1 scale.
        std: per-channel std on the 0..1 scale.
        processor: the hub processor the published targets were made with.
        final_norm: timm ViTs only: apply the final LayerNorm to the last block's tokens.
        kwargs: extra constructor arguments always passed (e.g. timm ``img_size``).
    """

    hub_id: str
    letter: str
    family: str
    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    processor: HubProcessor
    final_norm: bool = True
    kwargs: Mapping[str, Any] = field(default_factory=dict)


SOURCES: dict[str, TeacherSource] = {
    s.hub_id: s
    for s in (
        TeacherSource("openai/clip-vit-large-patch14", "c", "timm_vit",
                      "vit_large_patch14_clip_224.openai", 224, CLIP_MEAN, CLIP_STD,
                      HubProcessor("CLIPImageProcessor", "bicubic", shortest_edge=224,
                                   crop=224),
                      final_norm=False),
        # DINOv2 is pretrained at 518; timm resamples its position embedding for 224 -> 16x16.
        TeacherSource("facebook/dinov2-large", "di", "timm_vit",
                      "vit_large_patch14_dinov2.lvd142m", 224, IMAGENET_MEAN, IMAGENET_STD,
                      HubProcessor("BitImageProcessor", "bicubic", shortest_edge=256,
                                   crop=224),
                      kwargs={"img_size": 224}),
        TeacherSource("google/vit-huge-patch14-224-in21k", "v", "timm_vit",
                      "vit_huge_patch14_224.orig_in21k", 224, HALF, HALF,
                      HubProcessor("ViTImageProcessor", "bilinear", height_width=(224, 224))),
        TeacherSource("facebook/sam-vit-huge", "s", "sam", "facebook/sam-vit-huge", 1024,
                      IMAGENET_MEAN, IMAGENET_STD,
                      HubProcessor("SamImageProcessor", "bilinear", longest_edge=1024,
                                   pad=1024)),
        TeacherSource("LiheYoung/depth-anything-large-hf", "de", "depth_anything",
                      "LiheYoung/depth-anything-large-hf", 518, IMAGENET_MEAN, IMAGENET_STD,
                      HubProcessor("DPTImageProcessor", "bicubic", height_width=(518, 518),
                                   multiple_of=14)),
    )
}

# Small random-weight configurations of the same architectures (tests, CPU benchmarks).
# Spatial sizes are kept (16x16 / 64x64) so the real translator layouts apply; widths shrink.
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14": {"embed_dim": 48, "depth": 2, "num_heads": 2},
    "facebook/dinov2-large": {"embed_dim": 40, "depth": 2, "num_heads": 2},
    "google/vit-huge-patch14-224-in21k": {"embed_dim": 56, "depth": 2, "num_heads": 2},
    "facebook/sam-vit-huge": {"hidden_size": 32, "num_hidden_layers": 2,
                              "num_attention_heads": 2, "global_attn_indexes": [1],
                              "output_channels": 24, "num_pos_feats": 16, "mlp_dim": 64,
                              "initializer_range": 0.02},
    "LiheYoung/depth-anything-large-hf": {
        "backbone": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
                     "out_indices": [1, 2, 3, 4], "image_size": 518,
                     "reshape_hidden_states": False},
        "reassemble_hidden_size": 32, "neck_hidden_sizes": [8, 16, 16, 32],
        "fusion_hidden_size": 16, "head_hidden_size": 8},
}

TINY_SEED = 20240801  # tiny teachers are random but always the same

# Paper letters (Fig. 5): C=CLIP, Di=DINOv2, V=ViT, S=SAM, De=Depth-Anything.
LETTERS: dict[str, str] = {s.letter: s.hub_id for s in SOURCES.values()}


def resolve_teacher_set(names: str | Sequence[str]) -> list[TeacherSpec]:
    """``cdiv`` | ``cddsv`` | letters (``cdis``, ``v``) | short names / hub ids, comma-separated.

    Letters are read greedily as ``di``/``de`` before ``c``/``v``/``s`` ("cdis" = CLIP,
    DINOv2, SAM, RADIO's set). Order follows the string; duplicates are an error.
    """
    if isinstance(names, str):
        key = names.strip()
        if key.lower() in TEACHER_SETS:
            return resolve_teachers(key.lower())
        known = {n for s in TEACHERS.values() for n in (s.hub_id, s.short, s.teacher_id)}
        if "," not in key and key not in known:
            letters = _split_letters(key.lower())
            if letters is None:
                raise TheiaError(f"unknown teacher set {names!r}: use cdiv, cddsv, paper "
                                 f"letters ({', '.join(LETTERS)}) or comma-separated names "
                                 f"({', '.join(s.short for s in TEACHERS.values())})")
            return resolve_teachers([LETTERS[x] for x in letters])
        names = [n.strip() for n in key.split(",") if n.strip()]
    return resolve_teachers([LETTERS.get(n.lower(), n) for n in names])


def _split_letters(text: str) -> list[str] | None:
    out: list[str] = []
    i = 0
    while i < len(text):
        for token in ("di", "de", "c", "v", "s"):
            if text.startswith(token, i):
                out.append(token)
                i += len(token)
                break
        else:
            return None
    return out or None


class Teacher(nn.Module):
    """One frozen teacher: uint8 images ``[B, 3, 224, 224]`` -> features ``[B, H*W, C]``.

    Attributes:
        hub_id: the translator key (hub id).
        shape: ``(C, H, W)`` of this instance's feature map (the published shape for real
            weights, smaller C for tiny configurations).
        inputs: ``published`` or ``aligned`` (see the module docstring).
    """

    def __init__(self, source: TeacherSource, model: nn.Module, shape: tuple[int, int, int],
                 inputs: str = DEFAULT_TEACHER_INPUTS):
        super().__init__()
        self.source = source
        self.hub_id = source.hub_id
        self.shape = shape
        self.inputs = check_teacher_inputs(inputs)
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(source.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(source.std).view(1, 3, 1, 1), persistent=False)
        self._hooked: torch.Tensor | None = None
        if source.family == "depth_anything":
            # The target is the head's conv2 + ReLU output, just before its last (1x1) conv.
            model.head.activation1.register_forward_hook(self._keep_output)

    def _keep_output(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self._hooked = output

    def preprocess(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, h, w]`` -> float ``[B, 3, S, S]``: this teacher's input."""
        x = images_u8.to(self.mean.device, non_blocking=True)
        proc = self.source.processor
        h, w = x.shape[-2:]
        if self.inputs == "published":
            x = resize_uint8(x, proc.resize_hw(h, w), proc.kernel)
            if proc.crop is not None:
                top = int((x.shape[-2] - proc.crop) / 2)
                left = int((x.shape[-1] - proc.crop) / 2)
                x = x[..., top:top + proc.crop, left:left + proc.crop]
        else:
            size = self.source.input_size
            x = resize_uint8(x, (size, size), proc.kernel)
        x = (x / 255.0 - self.mean) / self.std
        if self.inputs == "published" and proc.pad is not None:
            x = F.pad(x, (0, proc.pad - x.shape[-1], 0, proc.pad - x.shape[-2]))
        return x

    @torch.no_grad()
    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 images ``[B, 3, h, w]`` -> float32 features ``[B, H*W, C]`` (row-major)."""
        x = self.preprocess(images_u8)
        fam = self.source.family
        if fam == "timm_vit":
            fmap = self.model.forward_intermediates(
                x, indices=1, norm=self.source.final_norm, output_fmt="NCHW",
                intermediates_only=True)[-1]
        elif fam == "sam":
            fmap = self.model(pixel_values=x).last_hidden_state
        else:
            self._hooked = None
            self.model(pixel_values=x)
            fmap, self._hooked = self._hooked, None
            if fmap is None:
                raise TheiaError(f"{self.hub_id}: the depth head hook did not fire")
            # [B, C, 518, 518] -> [B, C, 64, 64]; antialias because this is an 8x reduction.
            fmap = F.interpolate(fmap.float(), size=self.shape[1:], mode="bilinear",
                                 align_corners=False, antialias=True)
        c, h, w = self.shape
        if tuple(fmap.shape[1:]) != (c, h, w):
            raise TheiaError(f"{self.hub_id}: expected features [B, {c}, {h}, {w}], got "
                             f"{tuple(fmap.shape)}")
        return fmap.flatten(2).transpose(1, 2).float()


def _build_timm(source: TeacherSource, pretrained: bool, overrides: Mapping[str, Any]
                ) -> tuple[nn.Module, tuple[int, int, int]]:
    import timm

    model = timm.create_model(source.name, pretrained=pretrained, num_classes=0,
                              **{**source.kwargs, **overrides})
    grid = model.patch_embed.grid_size
    return model, (int(model.embed_dim), int(grid[0]), int(grid[1]))


def _build_sam(source: TeacherSource, pretrained: bool, overrides: Mapping[str, Any]
               ) -> tuple[nn.Module, tuple[int, int, int]]:
    from transformers import SamVisionConfig, SamVisionModel

    if pretrained:
        model = SamVisionModel.from_pretrained(source.name)
    else:
        model = SamVisionModel(SamVisionConfig(**overrides))
    cfg = model.config
    side = cfg.image_size // cfg.patch_size
    if cfg.image_size != source.input_size:
        raise TheiaError(f"{source.hub_id}: image_size {cfg.image_size} != {source.input_size}")
    return model, (int(cfg.output_channels), side, side)


def _build_depth_anything(source: TeacherSource, pretrained: bool,
                          overrides: Mapping[str, Any]) -> tuple[nn.Module, tuple[int, int, int]]:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    if pretrained:
        model = DepthAnythingForDepthEstimation.from_pretrained(source.name)
    else:
        rest = {k: v for k, v in overrides.items() if k != "backbone"}
        backbone = Dinov2Config(**overrides.get("backbone", {}))
        model = DepthAnythingForDepthEstimation(DepthAnythingConfig(backbone_config=backbone,
                                                                    **rest))
    # Published target: 64x64 regardless of the 518x518 head resolution.
    return model, (int(model.config.head_hidden_size), 64, 64)


_BUILDERS = {"timm_vit": _build_timm, "sam": _build_sam, "depth_anything": _build_depth_anything}


def build_teacher(hub_id: str, pretrained: bool = True,
                  overrides: Mapping[str, Any] | None = None,
                  inputs: str = DEFAULT_TEACHER_INPUTS) -> Teacher:
    """One teacher by hub id; ``pretrained=False`` + ``overrides`` = random small variant.

    ``inputs``: ``published`` (its hub processor) or ``aligned`` (the student's whole view).

    Raises TheiaError for an unknown id, and (pretrained, offline) when weights are missing.
    """
    if hub_id not in SOURCES:
        raise TheiaError(f"unknown teacher {hub_id!r}; known: {sorted(SOURCES)}")
    source = SOURCES[hub_id]
    try:
        model, shape = _BUILDERS[source.family](source, pretrained, dict(overrides or {}))
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise TheiaError(f"cannot load teacher {hub_id} ({source.name}): {exc}".splitlines()[0]
                         ) from exc
    if pretrained and shape != TEACHERS[hub_id].shape:
        raise TheiaError(f"teacher {hub_id}: built features {shape}, expected "
                         f"{TEACHERS[hub_id].shape}")
    return Teacher(source, model, shape, inputs)


def _weights_repo(source: TeacherSource) -> str:
    """The hub repository a pretrained teacher's weights come from."""
    if source.family == "timm_vit":
        import timm.models

        return timm.models.get_pretrained_cfg(source.name).hf_hub_id or source.name
    return source.name


def _in_local_cache(repo_id: str) -> bool:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, local_files_only=True)
    except LocalEntryNotFoundError:
        return False
    return True


def build_teachers(names: str | Sequence[str], pretrained: bool = True, tiny: bool = False,
                   device: str | torch.device = "cpu", inputs: str = DEFAULT_TEACHER_INPUTS
                   ) -> list[Teacher]:
    """A teacher set (see :func:`resolve_teacher_set`) -> frozen teachers on ``device``.

    ``tiny=True`` builds the random-weight :data:`TINY_OVERRIDES` variants (never downloads).
    """
    if tiny and pretrained:
        raise TheiaError("tiny teachers are random-weight: use pretrained=False with tiny=True")
    specs = resolve_teacher_set(names)
    if not tiny and pretrained and not hub_online():  # one check, not a minute of retries
        missing = [f"{s.hub_id} ({repo})" for s in specs
                   if not _in_local_cache(repo := _weights_repo(SOURCES[s.hub_id]))]
        if missing:
            raise TheiaError(f"cannot load teachers {', '.join(missing)}: the Hugging Face Hub "
                             "is unreachable and their weights are not in the local cache")
    out = []
    for spec in specs:
        if tiny:
            # Fixed weights (seeded per teacher, global RNG untouched): stats, extraction
            # and training runs in separate processes must see the same random teachers.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(TINY_SEED + sorted(SOURCES).index(spec.hub_id))
                teacher = build_teacher(spec.hub_id, pretrained=False,
                                        overrides=TINY_OVERRIDES[spec.hub_id], inputs=inputs)
        else:
            teacher = build_teacher(spec.hub_id, pretrained=pretrained, inputs=inputs)
        out.append(teacher.to(device))
    return out


def teacher_shapes_of(teachers: Sequence[Teacher]) -> dict[str, tuple[int, int, int]]:
    """``{hub id: (C, H, W)}`` of built teachers (what the translators must produce)."""
    return {t.hub_id: t.shape for t in teachers}


@torch.no_grad()
def run_teachers(teachers: Sequence[Teacher], images_u8: torch.Tensor, amp: bool | None = None
                 ) -> dict[str, torch.Tensor]:
    """uint8 ``[B, 3, h, w]`` -> ``{hub id: [B, H*W, C] float32}``; bf16 autocast on GPU.

    ``amp=None`` turns autocast on exactly when the teachers live on a CUDA device.
    """
    if not teachers:
        return {}
    device = teachers[0].mean.device
    amp = device.type == "cuda" if amp is None else amp
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        return {t.hub_id: t(images_u8).float() for t in teachers}
