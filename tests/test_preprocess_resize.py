"""The antialiased resize: numpy weights vs torch's own uint8 kernel, ``policies.preprocess`` vs
the Hugging Face processor the published models were trained with, and the exported graph vs
torch. The processors are built here from the facts of ``facebook/deit-*-patch16-224``'s
``preprocessor_config.json`` (no download): 224 x 224, bilinear, mean = std = 0.5, no crop.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from policies.preprocess import preprocess
from theia_ros.errors import TheiaError
from theia_ros.runtime.resize_weights import (
    axis_weights,
    check_resize_mode,
    polyphase,
    resize_uint8,
)
from theia_ros.runtime.torch_resize import AntialiasResize
from theia_ros.runtime.torch_resize import resize_uint8 as torch_resize_uint8
from training.export.onnx_export import export_graph

torch.set_num_threads(2)
GREY_LEVEL = 2 / 255  # one uint8 step in the model's [-1, 1] input units
DEIT = {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2,
        "do_center_crop": False, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
CAMERA_SIZES = [(480, 640), (720, 1280), (96, 128)]


def camera_frame(h: int, w: int, kind: str, seed: int = 0) -> np.ndarray:
    """uint8 ``[h, w, 3]``: ``textured`` (edges, fine stripes and sensor noise, like a camera
    frame of a cluttered scene), ``noise`` (the worst case) or ``smooth`` (gradients)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    smooth = 128 + 90 * np.sin(yy[..., None] / (h / 3) + np.arange(3)) * np.cos(xx[..., None]
                                                                              / (w / 4))
    if kind == "smooth":
        return np.clip(smooth, 0, 255).astype(np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    stripes = 60 * np.sign(np.sin(xx / 1.7 + yy / 2.3))[..., None]
    blocks = 40 * ((yy // 23 + xx // 31) % 2)[..., None]
    return np.clip(smooth + stripes + blocks + rng.normal(0, 12, (h, w, 3)), 0,
                   255).astype(np.uint8)


@pytest.fixture(scope="module")
def processors() -> dict:
    from transformers import ViTImageProcessor
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    # torchvision backend (transformers 5.x default) and PIL backend (4.x behaviour)
    return {"torchvision": ViTImageProcessor(**DEIT), "pil": ViTImageProcessorPil(**DEIT)}


def _reference(processors: dict, backend: str, frame: np.ndarray) -> np.ndarray:
    out = processors[backend](frame, return_tensors="np")["pixel_values"]
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize(("h", "w"), CAMERA_SIZES)
@pytest.mark.parametrize("kind", ["textured", "noise", "smooth"])
def test_preprocess_matches_the_deit_processor(processors: dict, h: int, w: int,
                                               kind: str) -> None:
    frame = camera_frame(h, w, kind)
    ours = preprocess(frame).numpy()
    for backend in processors:
        ref = _reference(processors, backend, frame)
        assert ref.shape == ours.shape == (1, 3, 224, 224)
        assert np.abs(ours - ref).max() <= GREY_LEVEL + 1e-6, backend
    # up to a 4x downscale the torchvision reference is matched bit for bit (up to the affine)
    if w / 224 <= 4:
        np.testing.assert_allclose(ours, _reference(processors, "torchvision", frame),
                                   atol=1e-6)
    # the plain bilinear resize theia-ros used before is far off on texture when downscaling
    if kind != "smooth" and h > 224:
        old = preprocess(frame, resize="bilinear").numpy()
        assert np.abs(old - _reference(processors, "torchvision", frame)).max() > 0.3


@pytest.mark.parametrize(("in_hw", "out_hw", "kernel"), [
    ((480, 640), (224, 224), "bilinear"), ((96, 128), (224, 224), "bilinear"),
    ((224, 224), (1024, 1024), "bilinear"), ((37, 500), (224, 224), "bilinear"),
    ((224, 224), (256, 256), "bicubic"), ((224, 224), (518, 518), "bicubic"),
    ((300, 200), (256, 170), "bicubic")])
def test_numpy_resize_is_torchs_uint8_kernel_bit_for_bit(in_hw, out_hw, kernel) -> None:
    frame = camera_frame(*in_hw, "noise", seed=1)
    ref = F.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None], size=out_hw,
                        mode=kernel, antialias=True, align_corners=False)
    ours = resize_uint8(frame, out_hw, kernel)
    assert ours.dtype == np.uint8 and ours.shape == (*out_hw, 3)
    np.testing.assert_array_equal(ours, ref[0].permute(1, 2, 0).numpy())
    # the torch implementation gives the same bits, batched and channels-first
    batch = torch.from_numpy(np.stack([frame, frame[::-1].copy()])).permute(0, 3, 1, 2)
    out = torch_resize_uint8(batch, out_hw, kernel)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), ours)


def test_beyond_4x_downscale_within_one_grey_level_of_torch() -> None:
    frame = camera_frame(1080, 1920, "noise", seed=2)
    ref = F.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None], size=(224, 224),
                        mode="bilinear", antialias=True, align_corners=False)
    diff = np.abs(resize_uint8(frame, (224, 224)).astype(int)
                  - ref[0].permute(1, 2, 0).numpy().astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_axis_weights_are_an_averaging_band() -> None:
    w = axis_weights(640, 224)
    assert w.shape == (224, 640) and w.dtype == np.float32 and not w.flags.writeable
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-3)
    assert ((w > 0).sum(1) >= 3).all()  # every output averages all the pixels it covers
    assert (w * 2**16 == np.round(w * 2**16)).all()  # dyadic: float32 sums stay exact
    np.testing.assert_array_equal(axis_weights(224, 224), np.eye(224, dtype=np.float32))
    with pytest.raises(TheiaError, match="resize kernel 'lanczos' unknown"):
        axis_weights(10, 5, "lanczos")
    with pytest.raises(TheiaError, match=r"bundle\.yaml: 'area' is not a resize mode"):
        check_resize_mode("area", "bundle.yaml")


@pytest.mark.parametrize(("in_hw", "exporter"), [
    ((480, 640), "dynamo"), ((720, 1280), "torchscript"), ((96, 128), "torchscript"),
    ((37, 500), "torchscript")])  # 37 -> 224 has no phase structure: a plain matrix product
def test_exported_resize_equals_torch_and_numpy(tmp_path, in_hw, exporter) -> None:
    module = AntialiasResize(in_hw, 224).eval()
    assert (module.height.plan is None) == (in_hw[0] == 37)
    frame = camera_frame(*in_hw, "textured", seed=3)
    x = torch.from_numpy(frame[None])
    path = export_graph(module, {"image": x}, "pixels", tmp_path / "resize.onnx",
                        exporter=exporter)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": frame[None]})
    with torch.no_grad():
        ref = module(x).numpy()
    np.testing.assert_array_equal(out, ref)  # exact sums: the same bits on both runtimes
    np.testing.assert_array_equal(out[0].transpose(1, 2, 0), resize_uint8(frame, (224, 224)))


def test_polyphase_is_the_matrix() -> None:
    for in_size, out_size in ((640, 224), (720, 224), (96, 224), (224, 1024), (1080, 224)):
        plan = polyphase(in_size, out_size)
        assert plan is not None and plan.head + plan.tail <= 4  # only the edges are special
        support = math.ceil(max(in_size / out_size, 1.0))
        assert plan.kernel_size <= plan.stride + 2 * support + 1  # one group's taps, not a row
        rebuilt = np.zeros((out_size, in_size + 2 * plan.kernel_size), np.float32)
        for j in range(plan.head, out_size - plan.tail):
            m, r = divmod(j, plan.phases)
            first = m * plan.stride + plan.start + plan.kernel_size
            rebuilt[j, first:first + plan.kernel_size] = plan.taps[r]
        body = slice(plan.head, out_size - plan.tail)
        np.testing.assert_array_equal(rebuilt[body, plan.kernel_size:-plan.kernel_size],
                                      axis_weights(in_size, out_size)[body])
    assert polyphase(37, 224) is None  # one group: nothing to share
