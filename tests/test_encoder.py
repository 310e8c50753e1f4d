"""Preprocessing (every layout, size and colour order) and the encoder's output contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from policies.encoder import ENCODERS, EncoderConfig, create_encoder, tokens_to_map
from policies.preprocess import IMAGE_SIZE, load_image, preprocess, to_nchw_uint8
from theia_ros.errors import TheiaError

torch.set_num_threads(2)
RNG = np.random.default_rng(0)


def _rgb(h: int, w: int, batch: int | None = None) -> np.ndarray:
    shape = (h, w, 3) if batch is None else (batch, h, w, 3)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _bilinear_half_pixel(img: np.ndarray, out: int) -> np.ndarray:
    """Independent reference: [H, W, C] float -> [out, out, C], half-pixel centres, no AA."""

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * n_in / out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(img.shape[0])
    x0, x1, fx = axis(img.shape[1])
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


@pytest.mark.parametrize(("h", "w"), [(224, 224), (17, 23), (240, 320), (480, 640), (7, 300)])
def test_legacy_bilinear_preprocess_matches_reference_resize(h: int, w: int) -> None:
    img = _rgb(h, w)
    x = preprocess(img, resize="bilinear")
    assert x.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32
    ref = (_bilinear_half_pixel(img.astype(np.float64) / 255.0, IMAGE_SIZE) - 0.5) / 0.5
    # torch computes source coordinates in float32 (~1e-4 here); one uint8 step is 7.8e-3.
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), ref, atol=2e-4)


def test_preprocess_range_and_identity_at_224() -> None:
    img = _rgb(224, 224)
    img[0, 0] = 0
    img[0, 1] = 255
    x = preprocess(img)
    assert x[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0] and x[0, :, 0, 1].tolist() == [1, 1, 1]
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1.0
    torch.testing.assert_close(x[0], expected)


def test_all_layouts_agree() -> None:
    batch = _rgb(50, 70, batch=3)
    nhwc = preprocess(batch)
    nchw = preprocess(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    single = torch.cat([preprocess(im) for im in batch])
    tensor = preprocess(torch.from_numpy(batch))
    assert nhwc.shape == (3, 3, 224, 224)
    for other in (nchw, single, tensor):
        torch.testing.assert_close(nhwc, other, atol=0, rtol=0)


def test_colour_conversions_when_named() -> None:
    rgb = _rgb(30, 40)
    base = preprocess(rgb)
    torch.testing.assert_close(preprocess(rgb[..., ::-1], color="bgr"), base)
    alpha = RNG.integers(0, 256, size=(30, 40, 1), dtype=np.uint8)
    torch.testing.assert_close(preprocess(np.concatenate([rgb, alpha], -1), color="rgba"), base)
    bgra = np.concatenate([rgb[..., ::-1], alpha], -1)
    torch.testing.assert_close(preprocess(bgra, color="bgra"), base)
    gray = rgb[..., 0]
    grey3 = np.repeat(gray[..., None], 3, axis=-1)
    torch.testing.assert_close(preprocess(gray, color="gray"), preprocess(grey3))
    torch.testing.assert_close(preprocess(gray[..., None], color="gray"), preprocess(grey3))
    torch.testing.assert_close(preprocess(gray[None, None], color="gray"), preprocess(grey3))


@pytest.mark.parametrize(("images", "color", "message"), [
    (np.zeros((30, 40, 4), np.uint8), None, "pass color="),
    (np.zeros((30, 40, 1), np.uint8), None, "pass color="),
    (np.zeros((30, 40), np.uint8), None, "color='gray'"),
    (np.zeros((30, 40, 3), np.uint8), "rgba", "needs 4 channels"),
    (np.zeros((30, 40, 3), np.uint8), "BGR", "not understood"),
    (np.zeros((30, 40, 3), np.float32), None, "must be uint8"),
    (torch.zeros(30, 40, 3), None, "must be uint8"),
    (np.zeros((1, 2, 30, 40, 3), np.uint8), None, r"\[H,W,C\]"),
    (np.zeros((2, 5, 30, 40), np.uint8), None, "channel axis"),
    (np.zeros((0, 40, 3), np.uint8), None, "empty"),
    ([[1, 2, 3]], None, "numpy array or torch tensor"),
])
def test_bad_images_are_clear_errors(images, color, message: str) -> None:
    with pytest.raises(TheiaError, match=message):
        to_nchw_uint8(images, color)


def test_read_only_arrays_are_fine() -> None:
    img = _rgb(20, 20)
    img.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preprocess(img).shape == (1, 3, 224, 224)


def test_load_image_modes(tmp_path) -> None:
    from PIL import Image

    rgb = _rgb(12, 16)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "g.png")
    Image.fromarray(np.concatenate([rgb, rgb[..., :1]], -1), "RGBA").save(tmp_path / "r.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)
    assert load_image(tmp_path / "g.png").shape == (12, 16, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "r.png"), rgb)
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 200).save(tmp_path / "d16.png")
    with pytest.raises(TheiaError, match=r"d16\.png: image mode .I;16."):
        load_image(tmp_path / "d16.png")
    with pytest.raises(TheiaError, match="no such image file"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("num_reg_tokens", [0, 4])
def test_output_shapes_every_size(name: str, num_reg_tokens: int) -> None:
    """Shapes for every registered size (meta tensors: no compute, so Base stays cheap)."""
    with torch.device("meta"):
        enc = create_encoder(name, num_reg_tokens=num_reg_tokens)
        x = torch.empty(2, 3, 224, 224)
        tokens, fmap = enc.forward_features(x), enc.forward_spatial(x)
    c = ENCODERS[name]().embed_dim
    assert enc.embed_dim == c
    assert tokens.shape == (2, 196, c) and fmap.shape == (2, c, 14, 14)
    assert enc.backbone.num_prefix_tokens == 1 + num_reg_tokens


def test_registers_and_cls_are_dropped() -> None:
    enc = create_encoder("theia_tiny", num_reg_tokens=3, seed=0)
    x = preprocess(_rgb(64, 64, batch=2))
    with torch.no_grad():
        full = enc.backbone.forward_features(x)  # [B, 1 + 3 + 196, C]
        tokens = enc.forward_features(x)
        fmap = enc.forward_spatial(x)
    assert full.shape == (2, 200, 192) and tokens.shape == (2, 196, 192)
    torch.testing.assert_close(tokens, full[:, 4:], atol=0, rtol=0)
    # map[:, :, i, j] is token i * 14 + j (row-major patches)
    torch.testing.assert_close(fmap[:, :, 2, 5], tokens[:, 2 * 14 + 5], atol=0, rtol=0)
    torch.testing.assert_close(tokens_to_map(tokens), fmap, atol=0, rtol=0)


def test_encode_accepts_any_layout_and_colour() -> None:
    enc = create_encoder("theia_tiny", seed=1)
    rgb = _rgb(90, 120)
    a = enc.encode(rgb)
    assert a.shape == (1, 196, 192)
    torch.testing.assert_close(enc.encode(np.ascontiguousarray(rgb[..., ::-1]), color="bgr"), a)
    torch.testing.assert_close(enc.encode(torch.from_numpy(rgb).permute(2, 0, 1)[None]), a)


def test_config_round_trip_and_errors() -> None:
    cfg = ENCODERS["theia_small"](num_reg_tokens=2)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.grid == 14 and cfg.num_spatial_tokens == 196
    with pytest.raises(TheiaError, match=r"encoder\.mlp_ratio: unknown field"):
        EncoderConfig.from_dict({**cfg.to_dict(), "mlp_ratio": 4})
    with pytest.raises(TheiaError, match="unknown encoder 'theia_huge'"):
        create_encoder("theia_huge")
    # the resize mode: antialias for new encoders, bilinear for configs saved before it
    assert cfg.resize == "antialias"
    old = {k: v for k, v in cfg.to_dict().items() if k != "resize"}
    assert EncoderConfig.from_dict(old).resize == "bilinear"
    with pytest.raises(TheiaError, match="encoder config resize: 'nearest' is not a resize mode"):
        EncoderConfig(resize="nearest")
