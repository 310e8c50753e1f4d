"""Checkpoints: published-layout import vs an independent transformers reference, our own
format round trip, and every bad-input path (corrupt, truncated, missing key, wrong shape,
offline hub id)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_enc import (
    published_config,
    published_state_dict,
    reference_spatial_tokens,
    reference_translator,
    reference_vit,
    write_published,
)
from safetensors.torch import load_file, save_file

from policies.checkpoint import (
    _convert_hf_theia,
    is_registry_name,
    load_encoder,
    load_theia,
    save_theia,
)
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.preprocess import preprocess
from policies.translators import TheiaModel, teacher_shapes
from theia_ros.errors import TheiaError

torch.set_num_threads(2)
CDDSV = ["openai/clip-vit-large-patch14", "facebook/dinov2-large",
         "google/vit-huge-patch14-224-in21k", "facebook/sam-vit-huge",
         "LiheYoung/depth-anything-large-hf"]
ONE = ["facebook/dinov2-large"]


@pytest.fixture(scope="module")
def published_cddsv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("theia-tiny-cddsv")
    _, sd = write_published(directory, "tiny", CDDSV, seed=1)
    return directory, sd


@pytest.fixture()
def published_small(tmp_path: Path) -> Path:
    """Tiny backbone + one translator: the cheapest published-layout checkpoint to corrupt."""
    write_published(tmp_path / "ckpt", "tiny", ONE, seed=2)
    return tmp_path / "ckpt"


def _images(batch: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, 180, 240, 3), dtype=np.uint8)


def test_published_import_matches_transformers_reference(published_cddsv) -> None:
    directory, sd = published_cddsv
    model = load_theia(directory)
    assert model.teachers == CDDSV
    pixels = preprocess(_images())
    with torch.no_grad():
        ours_tokens = model.encoder.forward_features(pixels)
        ours = model.translate(ours_tokens)
        ref_tokens = reference_spatial_tokens(reference_vit("tiny", sd), pixels)
    assert ours_tokens.shape == (2, 196, 192)
    assert ours_tokens.abs().mean() > 0.1  # a real signal, not zeros
    torch.testing.assert_close(ours_tokens, ref_tokens, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        for hub in CDDSV:
            ref = reference_translator(sd, hub, ref_tokens)
            assert ours[hub].shape == ref.shape
            torch.testing.assert_close(ours[hub], ref, atol=1e-5, rtol=1e-5)


def test_load_encoder_from_published_and_encode(published_cddsv) -> None:
    directory, sd = published_cddsv
    enc = load_encoder(directory / "config.json")  # a file inside the directory works too
    images = _images(1, seed=3)
    with torch.no_grad():
        ref = reference_spatial_tokens(reference_vit("tiny", sd), preprocess(images))
    torch.testing.assert_close(enc.encode(images), ref, atol=1e-5, rtol=1e-5)


def test_published_import_end_to_end_from_a_camera_frame(published_cddsv) -> None:
    """uint8 480x640 frame -> the DeiT processor (built from its preprocessor_config facts)
    -> transformers ViTModel, layer by layer, vs the same frame through our encoder."""
    from transformers import ViTImageProcessor

    directory, sd = published_cddsv
    enc = load_encoder(directory)
    assert enc.config.resize == "antialias"  # published models: the processor's resize
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:480, 0:640]
    frame = (120 + 80 * np.sign(np.sin(xx / 1.9 + yy / 3.1))[..., None]
             + rng.normal(0, 15, (480, 640, 3))).clip(0, 255).astype(np.uint8)
    processor = ViTImageProcessor(do_resize=True, size={"height": 224, "width": 224},
                                  resample=2, do_center_crop=False, do_rescale=True,
                                  rescale_factor=1 / 255, do_normalize=True,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ref_pixels = processor(frame, return_tensors="pt")["pixel_values"]
    ours_pixels = preprocess(frame, resize=enc.config.resize)
    torch.testing.assert_close(ours_pixels, ref_pixels, atol=1e-6, rtol=0)
    with torch.no_grad():
        ref = reference_vit("tiny", sd)(pixel_values=ref_pixels, output_hidden_states=True)
        layers = enc.backbone.forward_intermediates(ours_pixels, norm=False, output_fmt="NLC",
                                                    intermediates_only=True)
        tokens = enc.encode(frame)
    assert len(layers) == len(ref.hidden_states) - 1 == 12
    for i, layer in enumerate(layers):  # every block's spatial tokens
        torch.testing.assert_close(layer, ref.hidden_states[i + 1][:, 1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tokens, ref.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-5)
    # the plain bilinear resize feeds the network something else
    with torch.no_grad():
        old = enc.forward_features(preprocess(frame, resize="bilinear"))
    assert (old - tokens).abs().max() > 1e-2


def test_convert_is_pure_and_stacks_qkv_in_order() -> None:
    sd = published_state_dict("tiny", ONE, seed=4)
    config = published_config("tiny", ONE)
    before = {k: v.clone() for k, v in sd.items()}
    out = _convert_hf_theia(sd, config)
    assert all(torch.equal(before[k], sd[k]) for k in sd)  # input untouched
    qkv = out["encoder.backbone.blocks.3.attn.qkv.weight"]
    layer = "backbone.model.encoder.layer.3.attention.attention."
    assert torch.equal(qkv[:192], sd[layer + "query.weight"])
    assert torch.equal(qkv[192:384], sd[layer + "key.weight"])
    assert torch.equal(qkv[384:], sd[layer + "value.weight"])
    assert "encoder.backbone.blocks.11.mlp.fc2.weight" in out
    assert not any(k.startswith("backbone.") for k in out)


def test_own_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = TheiaEncoder(EncoderConfig(depth=2, num_reg_tokens=2))
    mean, std = torch.randn(32), torch.rand(32) + 0.5
    model = TheiaModel(enc, teacher_shapes(["dinov2", "depth"]),
                       stats={"LiheYoung/depth-anything-large-hf": (mean, std)}).eval()
    save_theia(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["preprocess"]["resize_mode"] == "antialias"
    assert config["teachers"][1] == {"hub_id": "LiheYoung/depth-anything-large-hf",
                                     "shape": [32, 64, 64]}
    assert config["encoder"]["num_reg_tokens"] == 2
    assert not list((tmp_path / "m").glob("*.tmp"))
    loaded = load_theia(tmp_path / "m")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for hub in a:
        torch.testing.assert_close(a[hub], b[hub], atol=0, rtol=0)
    torch.testing.assert_close(loaded.feature_stats["LiheYoung/depth-anything-large-hf"].std,
                               std)
    enc_only = load_encoder(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(enc_only(x), enc(x.clone()), atol=0, rtol=0)
    # encoder-only checkpoints
    save_theia(enc, tmp_path / "e")
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(tmp_path / "e")(x), enc(x), atol=0, rtol=0)
    with pytest.raises(TheiaError, match="encoder-only"):
        load_theia(tmp_path / "e")


def test_registry_name_is_random_and_seeded() -> None:
    assert is_registry_name("theia_tiny") and not is_registry_name("theia_huge")
    a, b = load_encoder("theia_tiny", seed=5), load_encoder("theia_tiny", seed=5)
    c = load_encoder("theia_tiny", seed=6)
    pa, pb, pc = (m.backbone.blocks[0].attn.qkv.weight for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_corrupt_safetensors(published_small: Path) -> None:
    (published_small / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TheiaError, match=r"model\.safetensors: not a readable safetensors"):
        load_encoder(published_small)


def test_truncated_safetensors(published_small: Path) -> None:
    f = published_small / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(TheiaError, match=r"model\.safetensors: not a readable safetensors"):
        load_theia(published_small)


def test_missing_backbone_key_is_named(published_small: Path) -> None:
    f = published_small / "model.safetensors"
    sd = load_file(str(f))
    del sd["backbone.model.encoder.layer.7.attention.attention.key.bias"]
    save_file(sd, str(f))
    with pytest.raises(TheiaError, match=r"missing key 'backbone\.model\.encoder\.layer\.7\."
                                         r"attention\.attention\.key\.bias'"):
        load_theia(published_small)


def test_missing_translator_key_is_named(published_small: Path) -> None:
    f = published_small / "model.safetensors"
    sd = load_file(str(f))
    del sd["translator.translator_heads.facebook/dinov2-large.adapter.4.weight"]
    save_file(sd, str(f))
    with pytest.raises(TheiaError, match=r"missing key 'translator\.translator_heads\.facebook/"
                                         r"dinov2-large\.adapter\.4\.weight'"):
        load_theia(published_small)


def test_shape_mismatch_is_named(published_small: Path) -> None:
    f = published_small / "model.safetensors"
    sd = load_file(str(f))
    sd["backbone.model.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(10, 192)
    save_file(sd, str(f))
    with pytest.raises(TheiaError, match=r"intermediate\.dense\.weight' has shape \[10, 192\], "
                                         r"expected \[768, 192\]"):
        load_encoder(published_small)


def test_teacher_shape_mismatch_with_config(published_small: Path) -> None:
    cfg_path = published_small / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_feature_sizes"]["facebook/dinov2-large"] = [768, 16, 16]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(TheiaError, match=r"adapter\.8\.weight' has shape \[1024, 192\]"):
        load_theia(published_small)


def test_own_format_wrong_shape_and_bad_config(tmp_path: Path) -> None:
    save_theia(TheiaEncoder(EncoderConfig(depth=1)), tmp_path / "e")
    cfg_path = tmp_path / "e" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["encoder"]["embed_dim"] = 96
    cfg["encoder"]["num_heads"] = 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(TheiaError, match=r"encoder\.backbone\.cls_token' has shape"):
        load_encoder(tmp_path / "e")
    cfg_path.write_text("{not json")
    with pytest.raises(TheiaError, match=r"config\.json: not valid JSON"):
        load_encoder(tmp_path / "e")
    cfg_path.write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TheiaError, match="not a Theia checkpoint config"):
        load_encoder(tmp_path / "e")


def test_unsupported_published_fields(published_small: Path) -> None:
    cfg_path = published_small / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_reg_tokens"] = 4
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(TheiaError, match="num_reg_tokens=4 not supported"):
        load_encoder(published_small)


def test_missing_files_and_paths(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text("{}")
    with pytest.raises(TheiaError, match=r"missing model\.safetensors"):
        load_encoder(tmp_path / "c")
    with pytest.raises(TheiaError, match="no such directory"):
        load_encoder(str(tmp_path / "nowhere" / "x" / "y"))
    shutil.rmtree(tmp_path / "c")


def test_hub_id_offline_names_the_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # make sure no local directory of that name exists
    hub_id = "theaiinstitute/theia-tiny-patch16-224-cdiv"
    with pytest.raises(TheiaError, match=f"checkpoint '{hub_id}'.*Hugging Face hub failed"):
        load_theia(hub_id)


def test_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TheiaError, match=r"'someone/theia-x'.*cannot reach http://127\.0\.0\.1:9"):
        load_encoder("someone/theia-x")
