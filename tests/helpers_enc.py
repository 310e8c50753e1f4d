"""ENC test helpers: random checkpoints in the *published* Theia layout, and an independent
reference forward pass (``transformers.ViTModel`` + a functional translator written from the
layer list in ``official-theia-format.md``), so importer tests compare against code that
shares nothing with ``policies``.

The published weights cannot be downloaded here, so the checkpoints are random but use the
exact published key names (transformers 4.x ViT names) and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

DEIT = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
TEACHER_SIZES = {
    "openai/clip-vit-large-patch14": [1024, 16, 16],
    "facebook/dinov2-large": [1024, 16, 16],
    "google/vit-huge-patch14-224-in21k": [1280, 16, 16],
    "facebook/sam-vit-huge": [256, 64, 64],
    "LiheYoung/depth-anything-large-hf": [32, 64, 64],
}


def published_config(size: str, teachers: list[str]) -> dict:
    """A ``config.json`` like the published ones (fields from official-theia-format.md)."""
    return {
        "architectures": ["TheiaModel"],
        "backbone": f"facebook/deit-{size}-patch16-224",
        "image_size": 224,
        "num_reg_tokens": 0,
        "translator_type": "lconv",
        "translator_hidden_size_factor": 1.0,
        "feature_reduce_method": None,
        "target_feature_sizes": {t: TEACHER_SIZES[t] for t in teachers},
    }


def published_state_dict(size: str, teachers: list[str], depth: int = 12, seed: int = 0
                         ) -> dict[str, torch.Tensor]:
    """Random float32 weights under the published key names (4.x ViT + lconv translators)."""
    g = torch.Generator().manual_seed(seed)
    c, _ = DEIT[size]

    def w(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def ln(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 + w(*shape, scale=0.1), w(*shape, scale=0.1)

    p = "backbone.model."
    sd = {
        p + "embeddings.cls_token": w(1, 1, c, scale=0.5),
        p + "embeddings.position_embeddings": w(1, 197, c, scale=0.5),
        p + "embeddings.patch_embeddings.projection.weight": w(c, 3, 16, 16),
        p + "embeddings.patch_embeddings.projection.bias": w(c),
    }
    sd[p + "layernorm.weight"], sd[p + "layernorm.bias"] = ln(c)
    for i in range(depth):
        q = f"{p}encoder.layer.{i}."
        for name in ("attention.attention.query", "attention.attention.key",
                     "attention.attention.value", "attention.output.dense"):
            sd[q + name + ".weight"], sd[q + name + ".bias"] = w(c, c, scale=0.1), w(c)
        sd[q + "intermediate.dense.weight"], sd[q + "intermediate.dense.bias"] = w(4 * c, c), w(
            4 * c)
        sd[q + "output.dense.weight"], sd[q + "output.dense.bias"] = w(c, 4 * c), w(c)
        for name in ("layernorm_before", "layernorm_after"):
            sd[q + name + ".weight"], sd[q + name + ".bias"] = ln(c)
    for hub in teachers:
        c_t, h_t, _ = TEACHER_SIZES[hub]
        t = f"translator.translator_heads.{hub.replace('.', '_')}."
        sd[t + "pad.1.weight"], sd[t + "pad.1.bias"] = w(c, c, 3, 3), w(c)
        sides = (16, 16, 16) if h_t == 16 else (16, 31, 64)
        for idx, side in zip((0, 3, 6), sides):
            sd[f"{t}adapter.{idx}.weight"], sd[f"{t}adapter.{idx}.bias"] = ln(c, side, side)
        for idx in (1, 4):
            sd[f"{t}adapter.{idx}.weight"], sd[f"{t}adapter.{idx}.bias"] = w(c, c, 3, 3), w(c)
        sd[t + "adapter.8.weight"], sd[t + "adapter.8.bias"] = w(c_t, c), w(c_t)
    return sd


def write_published(directory: Path, size: str, teachers: list[str], seed: int = 0
                    ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Write ``config.json`` + ``model.safetensors`` in the published layout; return both."""
    directory.mkdir(parents=True, exist_ok=True)
    config = published_config(size, teachers)
    sd = published_state_dict(size, teachers, seed=seed)
    save_file(sd, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    return config, sd


# transformers 5.x renamed the 4.x ViT keys; map the published names to whatever is installed.
_V5_RENAMES = [
    ("encoder.layer.", "layers."),
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
]


def reference_vit(size: str, published_sd: dict[str, torch.Tensor], depth: int = 12
                  ) -> torch.nn.Module:
    """``transformers.ViTModel`` (DeiT config, no pooler) loaded with the published weights."""
    from transformers import ViTConfig, ViTModel

    c, heads = DEIT[size]
    cfg = ViTConfig(hidden_size=c, num_hidden_layers=depth, num_attention_heads=heads,
                    intermediate_size=4 * c, image_size=224, patch_size=16,
                    layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True)
    cfg._attn_implementation = "eager"
    model = ViTModel(cfg, add_pooling_layer=False)
    wanted = set(model.state_dict())
    mapped = {}
    for key, value in published_sd.items():
        if not key.startswith("backbone.model."):
            continue
        name = key[len("backbone.model."):]
        if name not in wanted:
            for old, new in _V5_RENAMES:
                name = name.replace(old, new)
        mapped[name] = value
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def reference_spatial_tokens(vit: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 224, 224]`` normalised -> ``[B, 196, C]`` (last_hidden_state minus CLS)."""
    return vit(pixel_values=pixels).last_hidden_state[:, 1:]


def reference_translator(sd: dict[str, torch.Tensor], hub: str, tokens: torch.Tensor
                         ) -> torch.Tensor:
    """Functional lconv head from the published layer list: ``[B,196,C]`` -> ``[B,N_t,C_t]``."""
    t = f"translator.translator_heads.{hub.replace('.', '_')}."

    def p(name: str) -> torch.Tensor:
        return sd[t + name]

    def layer_norm(x: torch.Tensor, idx: int) -> torch.Tensor:
        weight = p(f"adapter.{idx}.weight")
        return F.layer_norm(x, tuple(weight.shape), weight, p(f"adapter.{idx}.bias"))

    b, _, c = tokens.shape
    x = tokens.permute(0, 2, 1).reshape(b, c, 14, 14)
    x = F.conv_transpose2d(x, p("pad.1.weight"), p("pad.1.bias"), stride=1)  # 16x16
    x = layer_norm(x, 0)
    if TEACHER_SIZES[hub][1] == 16:
        x = F.relu(F.conv2d(x, p("adapter.1.weight"), p("adapter.1.bias"), padding=1))
        x = layer_norm(x, 3)
        x = F.relu(F.conv2d(x, p("adapter.4.weight"), p("adapter.4.bias"), padding=1))
    else:
        x = F.relu(F.conv_transpose2d(x, p("adapter.1.weight"), p("adapter.1.bias"), stride=2,
                                      padding=1))  # 31x31
        x = layer_norm(x, 3)
        x = F.relu(F.conv_transpose2d(x, p("adapter.4.weight"), p("adapter.4.bias"), stride=2,
                                      output_padding=1))  # 64x64
    x = layer_norm(x, 6)
    x = x.flatten(2).transpose(1, 2)
    return F.linear(x, p("adapter.8.weight"), p("adapter.8.bias"))
