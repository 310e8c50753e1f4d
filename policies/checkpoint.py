"""Theia checkpoints: our own format, and import of the published Hugging Face checkpoints.

Our format is a directory with two files::

    model.safetensors   float32 tensors: ``encoder.backbone.*`` (timm ViT keys),
                        ``translator.translator_heads.<teacher id>.*`` and
                        ``feature_stats.<teacher id>.{mean,std}`` (teacher statistics)
    config.json         {"format": "theia-ros/theia", "format_version": 1,
                         "encoder": EncoderConfig fields,
                         "teachers": [{"hub_id": ..., "shape": [C, H, W]}, ...],
                         "translator_hidden_factor": 1.0,
                         "feature_stats": [hub ids whose statistics are stored],
                         "preprocess": how images must be prepared (resize_mode ...),
                         "training": how it was made (optional)}

An encoder-only checkpoint is the same with ``"teachers": []``.

Published checkpoints (``theaiinstitute/theia-{tiny,small,base}-patch16-224-{cdiv,cddsv}``)
are recognised by their ``config.json`` (``backbone`` + ``target_feature_sizes``) and
converted by :func:`_convert_hf_theia`, a pure function of the state dict and the config that
does not use ``transformers`` (whose ViT key names changed between 4.x and 5.x).

Nothing here unpickles: weights are read with safetensors only.

Example::

    model = load_theia("theaiinstitute/theia-tiny-patch16-224-cdiv")   # or a local directory
    enc = load_encoder("runs/distill/final")                            # -> TheiaEncoder
    enc = load_encoder("theia_tiny", seed=0)                            # random init
    save_theia(model, "runs/my_theia")
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from policies.encoder import ENCODERS, EncoderConfig, TheiaEncoder, create_encoder
from policies.preprocess import IMAGE_SIZE, MEAN, STD
from policies.teacher_specs import teacher_id
from policies.translators import TheiaModel
from policies.weights import build_checked
from theia_ros.atomic import atomic_write as _atomic_write
from theia_ros.errors import TheiaError
from theia_ros.runtime.resize_weights import RESIZE_MODES
from theia_ros.schema import check, fld, load_mapping, parse

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "theia-ros/theia"
FORMAT_VERSION = 1

# Published backbone names -> our registry.
_HF_BACKBONES = {
    "facebook/deit-tiny-patch16-224": "theia_tiny",
    "facebook/deit-small-patch16-224": "theia_small",
    "facebook/deit-base-patch16-224": "theia_base",
}
_HF_PREFIX = "backbone.model."
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
MAX_TEACHER_DIM = 1 << 16
MAX_HIDDEN_FACTOR = 16.0


# ----------------------------------------------------------------------------- public API

def is_registry_name(spec: str | os.PathLike) -> bool:
    """True when ``spec`` names a random-init encoder size (``theia_tiny`` ...), not a file."""
    return str(spec) in ENCODERS and not Path(spec).exists()


def load_encoder(path_or_id: str | os.PathLike, seed: int | None = None) -> TheiaEncoder:
    """Checkpoint directory, hub id or registry name -> :class:`TheiaEncoder` (eval mode).

    A registry name (``theia_tiny|small|base``) gives a *randomly initialised* encoder
    (``seed`` makes it reproducible); check with :func:`is_registry_name` to say so.
    Any Theia checkpoint works: encoder-only, with translators, ours or published.
    """
    if is_registry_name(path_or_id):
        return create_encoder(str(path_or_id), seed=seed)
    ckpt = _read_checkpoint(path_or_id)
    enc_sd = {k[len("encoder."):]: v for k, v in ckpt.state_dict.items()
              if k.startswith("encoder.")}
    encoder = build_checked(lambda: TheiaEncoder(ckpt.encoder_config), _shapes(enc_sd),
                            ckpt.source, prefix="encoder.", config=ckpt.config_name)
    encoder.load_state_dict(enc_sd, strict=True)
    return encoder.eval()


def load_theia(path_or_id: str | os.PathLike) -> TheiaModel:
    """Checkpoint directory or hub id -> :class:`TheiaModel` (encoder + translators, eval)."""
    ckpt = _read_checkpoint(path_or_id)
    if not ckpt.shapes:
        raise TheiaError(f"{ckpt.source}: encoder-only checkpoint (no translators); "
                         "use load_encoder() for it")
    stats = {}
    for hub in ckpt.stats_teachers:
        tid = teacher_id(hub)
        stats[hub] = (_take(ckpt.state_dict, f"feature_stats.{tid}.mean", ckpt.source),
                      _take(ckpt.state_dict, f"feature_stats.{tid}.std", ckpt.source))

    def attach_stats(model: TheiaModel) -> None:
        for hub, (mean, std) in stats.items():
            model.set_stats(hub, mean, std)

    model = build_checked(
        lambda: TheiaModel(TheiaEncoder(ckpt.encoder_config), ckpt.shapes, ckpt.hidden_factor),
        _shapes(ckpt.state_dict), ckpt.source, config=ckpt.config_name, finish=attach_stats)
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval()


def save_theia(model: TheiaModel | TheiaEncoder, path: str | os.PathLike,
               training: Mapping | None = None) -> Path:
    """Write ``model`` (with or without translators) to directory ``path`` in our format.

    ``training``: how the model was made (e.g. the distillation's teacher inputs and
    statistics), recorded as ``config.json["training"]``.

    Each file is written to a temporary name and renamed, so a crash never leaves a
    half-written ``model.safetensors`` or ``config.json`` under the final name.
    """
    out = Path(path)
    if isinstance(model, TheiaModel):
        encoder_config = model.encoder.config
        state = model.state_dict()
        teachers = [{"hub_id": hub, "shape": list(shape)} for hub, shape in model.shapes.items()]
        stats = [hub for hub in model.teachers if model.has_stats(hub)]
        hidden_factor = model.hidden_factor
    elif isinstance(model, TheiaEncoder):
        encoder_config = model.config
        state = {f"encoder.{k}": v for k, v in model.state_dict().items()}
        teachers, stats, hidden_factor = [], [], 1.0
    else:
        raise TheiaError(f"save_theia expects a TheiaModel or TheiaEncoder, got {type(model)}")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": encoder_config.to_dict(),
        "teachers": teachers,
        "translator_hidden_factor": hidden_factor,
        "feature_stats": stats,
        "preprocess": {"input": "uint8 RGB", "resize_mode": encoder_config.resize,
                       "resize": RESIZE_MODES[encoder_config.resize],
                       "size": encoder_config.img_size, "scale": "1/255", "mean": MEAN,
                       "std": STD},
        **({"training": dict(training)} if training else {}),
    }
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
               for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / WEIGHTS_NAME,
                  lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    _atomic_write(out / CONFIG_NAME,
                  lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    return out


def resolve_checkpoint_dir(path_or_id: str | os.PathLike) -> Path:
    """A local directory (or a file inside it), else a hub id downloaded to the HF cache."""
    path = Path(path_or_id).expanduser()
    if path.is_file():
        path = path.parent
    if path.is_dir():
        return path
    spec = str(path_or_id)
    if not _HUB_ID.fullmatch(spec) or spec.startswith((".", "/", "~")):
        raise TheiaError(f"checkpoint {spec!r}: no such directory (and not a hub id "
                         "'owner/name')")
    return _download(spec)


# ----------------------------------------------------------------------------- conversion

def _published_architecture(config: Mapping, source: str = "config.json"
                            ) -> tuple[EncoderConfig, dict[str, tuple[int, int, int]], float]:
    """Published ``config.json`` -> (encoder config, teacher shapes, translator factor)."""
    backbone = config.get("backbone")
    if backbone not in _HF_BACKBONES:
        raise TheiaError(f"{source}: backbone {backbone!r} not supported; expected one of "
                         f"{sorted(_HF_BACKBONES)}")
    checks = {"image_size": (IMAGE_SIZE, config.get("image_size", IMAGE_SIZE)),
              "num_reg_tokens": (0, config.get("num_reg_tokens", 0) or 0),
              "translator_type": ("lconv", config.get("translator_type", "lconv")),
              "feature_reduce_method": (None, config.get("feature_reduce_method"))}
    for field, (want, got) in checks.items():
        if got != want:
            raise TheiaError(f"{source}: {field}={got!r} not supported (expected {want!r})")
    sizes = config.get("target_feature_sizes")
    if not isinstance(sizes, Mapping) or not sizes:
        raise TheiaError(f"{source}: 'target_feature_sizes' must map teacher ids to [C, H, W]")
    shapes: dict[str, tuple[int, int, int]] = {}
    for hub, shape in sizes.items():
        if not (isinstance(shape, list | tuple) and len(shape) == 3
                and all(isinstance(v, int) and not isinstance(v, bool)
                        and 1 <= v <= MAX_TEACHER_DIM for v in shape)):
            raise TheiaError(f"{source}: target_feature_sizes[{hub!r}] must be [C, H, W] "
                             f"integers in 1..{MAX_TEACHER_DIM}, got {shape!r:.60}")
        shapes[hub] = (shape[0], shape[1], shape[2])
    factor = config.get("translator_hidden_size_factor", 1.0) or 1.0
    if not (isinstance(factor, int | float) and not isinstance(factor, bool)
            and 0 < factor <= MAX_HIDDEN_FACTOR):
        raise TheiaError(f"{source}: translator_hidden_size_factor must be a number in "
                         f"(0, {MAX_HIDDEN_FACTOR}], got {factor!r:.60}")
    return ENCODERS[_HF_BACKBONES[backbone]](), shapes, float(factor)


def _hf_backbone_shapes(cfg: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Expected published backbone keys (without prefix) and shapes for ``cfg``."""
    c, n = cfg.embed_dim, cfg.num_spatial_tokens + 1
    p = cfg.patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.cls_token": (1, 1, c),
        "embeddings.position_embeddings": (1, n, c),
        "embeddings.patch_embeddings.projection.weight": (c, 3, p, p),
        "embeddings.patch_embeddings.projection.bias": (c,),
        "layernorm.weight": (c,), "layernorm.bias": (c,),
    }
    for i in range(cfg.depth):
        layer = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes[f"{layer}attention.attention.{name}.weight"] = (c, c)
            shapes[f"{layer}attention.attention.{name}.bias"] = (c,)
        dims = {"attention.output.dense": (c, c), "intermediate.dense": (4 * c, c),
                "output.dense": (c, 4 * c), "layernorm_before": (c,), "layernorm_after": (c,)}
        for name, w_shape in dims.items():
            shapes[f"{layer}{name}.weight"] = w_shape
            shapes[f"{layer}{name}.bias"] = (w_shape[0],)
    return shapes


def _convert_hf_theia(state_dict: Mapping[str, torch.Tensor], config: Mapping
                      ) -> dict[str, torch.Tensor]:
    """Published Theia state dict (HF ViT 4.x keys, separate q/k/v) -> our keys.

    ``backbone.model.embeddings.*`` / ``encoder.layer.N.*`` / ``layernorm.*`` become timm's
    ``encoder.backbone.{cls_token,pos_embed,patch_embed.proj,blocks.N.*,norm}`` with q, k, v
    stacked into one ``qkv`` (rows ordered q, k, v as timm splits them); translator keys are
    kept as they are. Every published backbone key is checked for presence and shape here,
    so errors name the published key.
    """
    enc_cfg, _, _ = _published_architecture(config)
    expected = _hf_backbone_shapes(enc_cfg)
    src: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_HF_PREFIX):
            src[key[len(_HF_PREFIX):]] = value
        elif key.startswith("translator."):
            out[key] = value
        else:
            raise TheiaError(f"unexpected key {key!r} in a published Theia checkpoint")
    for name, shape in expected.items():
        if name not in src:
            raise TheiaError(f"missing key {_HF_PREFIX + name!r} (expected shape {list(shape)})")
        if tuple(src[name].shape) != shape:
            raise TheiaError(f"key {_HF_PREFIX + name!r} has shape {list(src[name].shape)}, "
                             f"expected {list(shape)}")
    extra = [k for k in src if k not in expected and not k.startswith("pooler.")]
    if extra:
        raise TheiaError(f"unexpected key {_HF_PREFIX + extra[0]!r} in a published Theia "
                         f"checkpoint (not a {enc_cfg.depth}-layer ViT key)")

    bb = "encoder.backbone."
    out[bb + "cls_token"] = src["embeddings.cls_token"]
    out[bb + "pos_embed"] = src["embeddings.position_embeddings"]
    out[bb + "patch_embed.proj.weight"] = src["embeddings.patch_embeddings.projection.weight"]
    out[bb + "patch_embed.proj.bias"] = src["embeddings.patch_embeddings.projection.bias"]
    out[bb + "norm.weight"] = src["layernorm.weight"]
    out[bb + "norm.bias"] = src["layernorm.bias"]
    renames = {"attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1",
               "output.dense": "mlp.fc2", "layernorm_before": "norm1",
               "layernorm_after": "norm2"}
    for i in range(enc_cfg.depth):
        hf, ours = f"encoder.layer.{i}.", f"{bb}blocks.{i}."
        for part in ("weight", "bias"):
            out[f"{ours}attn.qkv.{part}"] = torch.cat(
                [src[f"{hf}attention.attention.{n}.{part}"] for n in ("query", "key", "value")])
            for hf_name, our_name in renames.items():
                out[f"{ours}{our_name}.{part}"] = src[f"{hf}{hf_name}.{part}"]
    return out


# ----------------------------------------------------------------------------- reading

@dataclass
class _Checkpoint:
    """Everything read from a checkpoint directory, already in our key layout."""

    source: str
    encoder_config: EncoderConfig
    shapes: dict[str, tuple[int, int, int]]
    hidden_factor: float
    stats_teachers: list[str]
    state_dict: dict[str, torch.Tensor]
    config_name: str = CONFIG_NAME  # the config.json the architecture came from


@dataclass(frozen=True)
class _Teacher:
    hub_id: str = fld()
    shape: list[int] = fld(ge=1, le=MAX_TEACHER_DIM, min_len=3, max_len=3)


@dataclass(frozen=True)
class CheckpointFile:
    """Every field of our ``config.json`` (typed and bounded, see ``theia_ros.schema``)."""

    format: str = fld(choices=(FORMAT,))
    format_version: int = fld(ge=1, le=FORMAT_VERSION)
    encoder: EncoderConfig = fld()
    teachers: list[_Teacher] = fld([])
    translator_hidden_factor: float = fld(1.0, gt=0, le=MAX_HIDDEN_FACTOR)
    feature_stats: list[str] = fld([])
    preprocess: dict[str, Any] = fld({})
    training: dict[str, Any] | None = fld(None)  # how it was made (teacher inputs, stats)


def _read_checkpoint(path_or_id: str | os.PathLike) -> _Checkpoint:
    directory = resolve_checkpoint_dir(path_or_id)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for f in (config_path, weights_path):
        if not f.is_file():
            raise TheiaError(f"{directory}: missing {f.name} (a Theia checkpoint directory has "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    config = load_mapping(config_path)
    state = _read_safetensors(weights_path)
    source = str(weights_path)
    if config.get("format") == FORMAT:
        version = config.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise TheiaError(f"{config_path}: format_version {version!r} not supported "
                             f"(this build reads <= {FORMAT_VERSION})")
        doc = parse(CheckpointFile, config, config_path)
        shapes = {t.hub_id: (t.shape[0], t.shape[1], t.shape[2]) for t in doc.teachers}
        check(config_path, "teachers", len(shapes) == len(doc.teachers),
              "lists a hub_id twice")
        unknown = [h for h in doc.feature_stats if h not in shapes]
        check(config_path, "feature_stats", not unknown,
              f"{unknown[:1]} is not one of the teachers {list(shapes)}")
        return _Checkpoint(source, doc.encoder, shapes, doc.translator_hidden_factor,
                           list(doc.feature_stats), state, str(config_path))
    if "backbone" in config and "target_feature_sizes" in config:
        enc_cfg, shapes, factor = _published_architecture(config, str(config_path))
        try:
            converted = _convert_hf_theia(state, config)
        except TheiaError as exc:
            raise TheiaError(f"{source}: {exc}") from None
        return _Checkpoint(source, enc_cfg, shapes, factor, [], converted, str(config_path))
    raise TheiaError(f"{config_path}: not a Theia checkpoint config (neither format "
                     f"{FORMAT!r} nor a published Theia config with 'backbone' and "
                     "'target_feature_sizes')")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file as float32; corrupt/truncated -> TheiaError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises several types for bad files
        raise TheiaError(f"{path}: not a readable safetensors file ({exc})") from None
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise TheiaError(f"{path}: tensor {key!r} has dtype {value.dtype}, expected float")
    return {k: v.float() for k, v in tensors.items()}


def _download(repo_id: str) -> Path:
    """Fetch ``config.json`` + ``model.safetensors`` of a hub repo (or use the HF cache)."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise TheiaError(f"checkpoint {repo_id!r}: not a local directory, and huggingface_hub "
                         "is not installed to download it") from None
    fail = (f"checkpoint {repo_id!r}: no such local directory, and downloading it from the "
            "Hugging Face hub failed")
    hint = "check the network or pass a local checkpoint directory"
    try:  # cached copies first: no network needed
        config = hf_hub_download(repo_id, CONFIG_NAME, local_files_only=True)
        hf_hub_download(repo_id, WEIGHTS_NAME, local_files_only=True)
        return Path(config).parent
    except Exception:  # not cached (or incomplete): go online below
        pass
    if constants.HF_HUB_OFFLINE:
        raise TheiaError(f"{fail} (offline: HF_HUB_OFFLINE is set and it is not cached); "
                         f"{hint}")
    if not _hub_reachable(constants.ENDPOINT):
        raise TheiaError(f"{fail} (cannot reach {constants.ENDPOINT}); {hint}")
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME)
        hf_hub_download(repo_id, WEIGHTS_NAME)
    except Exception as exc:  # unknown repo, gated, network errors ...
        raise TheiaError(f"{fail} ({type(exc).__name__}); {hint}") from None
    return Path(config).parent


def _hub_reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    """Quick TCP probe so a machine without network fails in seconds, not after retries.

    Skipped (assumed reachable) when a proxy is configured, since then only the proxy is.
    """
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _take(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise TheiaError(f"{source}: missing key {key!r}")
    return state[key]


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}
