"""Teacher registry: sets by letters, real-architecture small random teachers, feature layers.

The real weights cannot be downloaded here; every teacher is built through the same code
path with ``pretrained=False`` and a shrunk configuration of the same architecture.
"""

from __future__ import annotations

import pytest
import torch

from policies.teacher_specs import TEACHERS
from theia_ros.errors import TheiaError
from training.distill.teachers import (
    SOURCES,
    TINY_OVERRIDES,
    build_teacher,
    resolve_teacher_set,
    run_teachers,
)

torch.set_num_threads(2)


@pytest.mark.parametrize("name, expect", [
    ("cdiv", ["clip", "dinov2", "vit"]),
    ("cddsv", ["clip", "dinov2", "vit", "sam", "depth"]),
    ("cdis", ["clip", "dinov2", "sam"]),
    ("v", ["vit"]),
    ("de", ["depth"]),
    ("clip,s", ["clip", "sam"]),
    ("facebook/dinov2-large", ["dinov2"]),
])
def test_teacher_sets(name, expect):
    assert [s.short for s in resolve_teacher_set(name)] == expect


@pytest.mark.parametrize("name", ["cx", "clip,clip", ""])
def test_bad_teacher_sets(name):
    with pytest.raises(TheiaError):
        resolve_teacher_set(name)


def test_registry_covers_every_published_teacher():
    assert set(SOURCES) == set(TEACHERS) == set(TINY_OVERRIDES)


@pytest.mark.parametrize("hub_id", list(SOURCES))
def test_tiny_teacher_gives_its_feature_map(hub_id):
    torch.manual_seed(0)
    teacher = build_teacher(hub_id, pretrained=False, overrides=TINY_OVERRIDES[hub_id])
    c, h, w = teacher.shape
    assert (h, w) == TEACHERS[hub_id].shape[1:]  # spatial size is the published one
    images = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    feats = run_teachers([teacher], images)[hub_id]
    assert feats.shape == (1, h * w, c) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and feats.std() > 0
    assert not any(p.requires_grad for p in teacher.parameters())
    # features depend on the image
    other = run_teachers([teacher], 255 - images)[hub_id]
    assert not torch.allclose(feats, other)


def test_timm_teacher_uses_the_documented_layer():
    """CLIP: last block without the post-LN; ViT: with the final LN (as HF last_hidden_state)."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    for hub_id, final_norm in (("openai/clip-vit-large-patch14", False),
                               ("google/vit-huge-patch14-224-in21k", True)):
        t = build_teacher(hub_id, pretrained=False, overrides=TINY_OVERRIDES[hub_id])
        m = t.model
        with torch.no_grad():
            tok = m.blocks(m.norm_pre(m._pos_embed(m.patch_embed(t.preprocess(x)))))
            if final_norm:
                tok = m.norm(tok)
        torch.testing.assert_close(t(x), tok[:, m.num_prefix_tokens:], rtol=1e-5, atol=1e-5)


def test_teacher_preprocessing_uses_its_own_normalisation():
    t = build_teacher("openai/clip-vit-large-patch14", pretrained=False,
                      overrides=TINY_OVERRIDES["openai/clip-vit-large-patch14"])
    white = torch.full((1, 3, 224, 224), 255, dtype=torch.uint8)
    x = t.preprocess(white)
    expect = (1 - torch.tensor(SOURCES[t.hub_id].mean)) / torch.tensor(SOURCES[t.hub_id].std)
    torch.testing.assert_close(x[0, :, 0, 0], expect)


def test_pretrained_teacher_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TheiaError, match="cannot load teacher facebook/sam-vit-huge"):
        build_teacher("facebook/sam-vit-huge", pretrained=True)
    with pytest.raises(TheiaError, match="unknown teacher"):
        build_teacher("someone/else")
