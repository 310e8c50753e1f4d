"""Teacher registry: sets by letters, real-architecture small random teachers, feature layers.

The real weights cannot be downloaded here; every teacher is built through the same code
path with ``pretrained=False`` and a shrunk configuration of the same architecture.
"""

from __future__ import annotations

import numpy as np
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


# Each teacher's hub processor, built from its preprocessor_config.json facts (no download).
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
CLIP = {"image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}
COMMON = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}
HUB_PROCESSORS = {
    "openai/clip-vit-large-patch14": ("CLIPImageProcessor", {
        **COMMON, **CLIP, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224}, "do_convert_rgb": True}),
    "facebook/dinov2-large": ("BitImageProcessor", {
        **COMMON, **IMAGENET, "size": {"shortest_edge": 256}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
        "do_convert_rgb": True}),
    "google/vit-huge-patch14-224-in21k": ("ViTImageProcessor", {
        **COMMON, "size": {"height": 224, "width": 224}, "resample": 2,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3}),
    "facebook/sam-vit-huge": ("SamImageProcessor", {
        **COMMON, **IMAGENET, "size": {"longest_edge": 1024}, "resample": 2, "do_pad": True,
        "pad_size": {"height": 1024, "width": 1024}, "do_convert_rgb": True}),
    "LiheYoung/depth-anything-large-hf": ("DPTImageProcessor", {
        **COMMON, **IMAGENET, "size": {"height": 518, "width": 518}, "resample": 3,
        "keep_aspect_ratio": True, "ensure_multiple_of": 14, "do_pad": False}),
}


def _hub_processor(hub_id: str, backend: str):
    import transformers

    name, kwargs = HUB_PROCESSORS[hub_id]
    return getattr(transformers, name + ("Pil" if backend == "pil" else ""))(**kwargs)


def _frames(h: int, w: int, n: int = 2, seed: int = 0) -> np.ndarray:
    """uint8 [n, h, w, 3] with edges, stripes and noise (resampling kernels differ there)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 110 + 70 * np.sign(np.sin(xx / 2.3 + yy / 3.7))[..., None]
    return np.clip(base + rng.normal(0, 25, (n, h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def published_teachers():
    return {hub: build_teacher(hub, pretrained=False, overrides=TINY_OVERRIDES[hub])
            for hub in SOURCES}


@pytest.mark.parametrize("hub_id", list(HUB_PROCESSORS))
@pytest.mark.parametrize("hw", [(224, 224), (200, 300)])
def test_published_inputs_are_the_hub_processors(published_teachers, hub_id, hw):
    teacher = published_teachers[hub_id]
    assert teacher.inputs == "published"
    frames = _frames(*hw)
    ours = teacher.preprocess(torch.from_numpy(frames).permute(0, 3, 1, 2)).numpy()
    std = np.asarray(SOURCES[hub_id].std)[None, :, None, None]
    for backend in ("torchvision", "pil"):
        ref = _hub_processor(hub_id, backend)(list(frames), return_tensors="np")
        ref = np.asarray(ref["pixel_values"], dtype=np.float32)
        assert ref.shape == ours.shape, backend
        # in grey levels: torchvision exactly (bar float rounding); PIL (transformers 4.x)
        # rounds its fixed-point passes differently, by a level, two where bicubic's
        # negative lobes amplify the first pass's rounding
        levels = np.abs(ours - ref) * std * 255
        pil = 1.001 if SOURCES[hub_id].processor.kernel == "bilinear" else 2.001
        assert levels.max() <= (1e-3 if backend == "torchvision" else pil), backend
        assert levels.mean() <= (1e-4 if backend == "torchvision" else 0.05), backend


def test_aligned_inputs_show_the_whole_view():
    dino = build_teacher("facebook/dinov2-large", pretrained=False,
                         overrides=TINY_OVERRIDES["facebook/dinov2-large"], inputs="aligned")
    frames = torch.from_numpy(_frames(224, 224)).permute(0, 3, 1, 2)
    mean = torch.tensor(SOURCES[dino.hub_id].mean).view(1, 3, 1, 1)
    std = torch.tensor(SOURCES[dino.hub_id].std).view(1, 3, 1, 1)
    torch.testing.assert_close(dino.preprocess(frames), (frames / 255 - mean) / std)
    dino.inputs = "published"  # 256 resize + centre 224 crop: a zoomed view
    assert (dino.preprocess(frames) - (frames / 255 - mean) / std).abs().mean() > 0.1
    sam = build_teacher("facebook/sam-vit-huge", pretrained=False,
                        overrides=TINY_OVERRIDES["facebook/sam-vit-huge"], inputs="aligned")
    wide = torch.from_numpy(_frames(200, 300)).permute(0, 3, 1, 2)
    x = sam.preprocess(wide)  # stretched, not padded
    assert x.shape == (2, 3, 1024, 1024) and (x[..., 900:, :] != 0).any()
    sam.inputs = "published"
    assert (sam.preprocess(wide)[..., 683:, :] == 0).all()  # padding below the image
    with pytest.raises(TheiaError, match="teacher inputs: 'zoomed' unknown"):
        build_teacher("facebook/dinov2-large", pretrained=False,
                      overrides=TINY_OVERRIDES["facebook/dinov2-large"], inputs="zoomed")
