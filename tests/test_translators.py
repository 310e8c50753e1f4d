"""Translator heads: shapes, published key names/shapes and parameter totals, decode."""

from __future__ import annotations

import pytest
import torch

from policies.encoder import EncoderConfig, TheiaEncoder, create_encoder
from policies.teacher_specs import (
    PUBLISHED_MODELS,
    TEACHER_SETS,
    TEACHERS,
    get_teacher,
    resolve_teachers,
    teacher_id,
)
from policies.translators import FeatureTranslator, TheiaModel, count_parameters, teacher_shapes
from theia_ros.errors import TheiaError

torch.set_num_threads(1)


def _small_encoder(depth: int = 1) -> TheiaEncoder:
    return TheiaEncoder(EncoderConfig(embed_dim=192, depth=depth, num_heads=3)).eval()


@pytest.mark.parametrize("hub_id", list(TEACHERS))
def test_translator_output_shape(hub_id: str) -> None:
    spec = TEACHERS[hub_id]
    head = FeatureTranslator(32, spec.shape)
    out = head(torch.randn(2, 196, 32))
    assert out.shape == (2, spec.height * spec.width, spec.channels)


def test_published_key_names_and_shapes_tiny() -> None:
    """Every key and shape quoted in official-theia-format.md for tiny exists as quoted."""
    model = TheiaModel(_small_encoder(), teacher_shapes("cddsv"))
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dino = "translator.translator_heads.facebook/dinov2-large."
    assert sd[dino + "pad.1.weight"] == (192, 192, 3, 3)
    assert sd[dino + "adapter.0.weight"] == (192, 16, 16)
    assert sd[dino + "adapter.1.weight"] == (192, 192, 3, 3)
    assert sd[dino + "adapter.8.weight"] == (1024, 192)
    sam = "translator.translator_heads.facebook/sam-vit-huge."
    assert sd[sam + "adapter.3.weight"] == (192, 31, 31)
    assert sd[sam + "adapter.6.weight"] == (192, 64, 64)
    assert sd[sam + "adapter.8.weight"] == (256, 192)
    # The only parameter-free positions are the ReLUs and the reshapes.
    heads = {k.split(".")[2] for k in sd if k.startswith("translator.")}
    assert heads == {teacher_id(h) for h in TEACHER_SETS["cddsv"]}
    for head in heads:
        idx = {k.split(".")[4] for k in sd if f".{head}.adapter." in k}
        assert idx == {"0", "1", "3", "4", "6", "8"}


def test_teacher_id_replaces_dots() -> None:
    assert teacher_id("google/vit-huge-patch14-224-in21k") == "google/vit-huge-patch14-224-in21k"
    assert teacher_id("org/model.v1.5") == "org/model_v1_5"


@pytest.mark.parametrize(("size", "tset", "total_m"), [
    ("tiny", "cdiv", 10.04), ("small", "cdiv", 36.7), ("base", "cdiv", 139.7)])
def test_parameter_totals_match_published(size: str, tset: str, total_m: float) -> None:
    """Published totals (backbone + translators) pin down the translator layout."""
    with torch.device("meta"):
        model = TheiaModel(create_encoder(f"theia_{size}"), teacher_shapes(tset))
    assert count_parameters(model) / 1e6 == pytest.approx(total_m, abs=0.05)


def test_forward_decode_and_stats() -> None:
    shapes = teacher_shapes(["dinov2", "depth"])
    mean, std = torch.randn(32), torch.rand(32) + 0.5
    model = TheiaModel(_small_encoder(), shapes,
                       stats={"LiheYoung/depth-anything-large-hf": (mean, std)}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert set(out) == set(shapes)
    depth = out["LiheYoung/depth-anything-large-hf"]
    assert depth.shape == (1, 4096, 32)
    torch.testing.assert_close(model.decode("LiheYoung/depth-anything-large-hf", depth),
                               depth * std + mean)
    assert model.to_teacher_map("LiheYoung/depth-anything-large-hf", depth).shape == (1, 32, 64,
                                                                                       64)
    with pytest.raises(TheiaError, match="dinov2"):
        model.decode("facebook/dinov2-large", out["facebook/dinov2-large"])
    with pytest.raises(TheiaError, match="length 1024"):
        model.set_stats("facebook/dinov2-large", torch.zeros(3), torch.ones(3))


def test_teacher_lookup_and_sets() -> None:
    assert [s.short for s in resolve_teachers("cdiv")] == ["clip", "dinov2", "vit"]
    assert len(resolve_teachers("cddsv")) == 5
    assert resolve_teachers("sam,depth")[1].shape == (32, 64, 64)
    assert get_teacher("google/vit-huge-patch14-224-in21k").channels == 1280
    assert PUBLISHED_MODELS["theaiinstitute/theia-base-patch16-224-cdiv"] == ("theia_base", "cdiv")
    with pytest.raises(TheiaError, match="unknown teacher 'siglip'"):
        get_teacher("siglip")
    with pytest.raises(TheiaError, match="twice"):
        resolve_teachers(["clip", "openai/clip-vit-large-patch14"])
    with pytest.raises(TheiaError, match="not supported"):
        FeatureTranslator(8, (4, 32, 32))
