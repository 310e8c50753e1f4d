"""Runtime: every backend present gives the policy's numbers; bad bundles and inputs are clear.

Backends are parametrised over what exists here (onnxruntime and torch on CPU machines;
TensorRT only with the tensorrt package and a CUDA GPU, else those cases skip with the reason).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_export import HORIZON, IMAGE_HW, STATE_DIM, make_bundle

from policies.policy import load_policy
from theia_ros.errors import TheiaError
from theia_ros.runtime import available_backends, load, resolve_backend
from theia_ros.runtime.bundle import read_sums, write_sums
from theia_ros.types import Observation

BACKENDS = ["onnxruntime", "torch", "tensorrt"]
# fp32 backends must match torch to the export budget; TensorRT fp16 gets a looser one.
TOL = {"onnxruntime": 1e-4, "torch": 1e-5, "tensorrt": 5e-2}


def _need(backend: str) -> None:
    if backend not in available_backends():
        reasons = {"tensorrt": "TensorRT backend needs the tensorrt package and a CUDA GPU "
                               "(none here)"}
        pytest.skip(reasons.get(backend, f"{backend} is not installed here"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("rt")
    out = {}
    for kind in ("cnn_mlp", "diffusion"):
        policy_dir, bundle, _ = make_bundle(root, kind, fused=True)
        out[kind] = (policy_dir, bundle)
    return out


def _inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
    state = rng.normal(0.3, 0.5, STATE_DIM).astype(np.float32)
    noise = rng.standard_normal((1, HORIZON, 7)).astype(np.float32)
    return image, state, noise


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["cnn_mlp", "diffusion"])
def test_backend_matches_the_torch_policy(bundles: dict, backend: str, kind: str) -> None:
    _need(backend)
    policy_dir, bundle = bundles[kind]
    policy = load_policy(policy_dir)
    with load(bundle, backend=backend, fused=False) as rt:
        assert rt.backend == backend
        assert (rt.meta.horizon, rt.meta.state_dim, rt.meta.camera) == (HORIZON, STATE_DIM,
                                                                         "front")
        assert rt.meta.control_rate_hz == 5.0 and rt.meta.action_kind == "ee_delta"
        for seed in (0, 1):
            image, state, noise = _inputs(seed)
            tokens = rt.encode(image)
            assert tokens.shape == (1, 196, 32) and tokens.dtype == np.float32
            actions = rt.act(tokens, state, noise=noise)
            assert actions.shape == (HORIZON, 7) and actions.dtype == np.float32
            with torch.inference_mode():
                ref_tokens = policy.encoder.encode(image).numpy()
                gen = torch.Generator().manual_seed(0)
                if kind == "diffusion":  # the policy draws its noise from the generator
                    noise = torch.randn((1, HORIZON, 7), generator=gen).numpy()
                    gen = torch.Generator().manual_seed(0)
                    actions = rt.act(tokens, state, noise=noise)
                ref = policy.predict_action_chunk(image, state, generator=gen)[0].numpy()
            assert np.abs(tokens - ref_tokens).max() <= TOL[backend]
            assert np.abs(actions - ref).max() <= TOL[backend]


@pytest.mark.parametrize("kind", ["cnn_mlp", "diffusion"])
def test_backends_agree_and_fused_equals_separate(bundles: dict, kind: str) -> None:
    _, bundle = bundles[kind]
    image, state, noise = _inputs(3)
    outs = {}
    for backend in [b for b in BACKENDS if b in available_backends()]:
        for fused in (False, True):
            with load(bundle, backend=backend, fused=fused) as rt:
                outs[(backend, fused)] = rt.predict(image, state, noise=noise)
    ref = outs[("onnxruntime", False)]
    for key, out in outs.items():
        assert np.abs(out - ref).max() <= TOL[key[0]], key


def test_observation_call_and_diffusion_seed(bundles: dict) -> None:
    _, bundle = bundles["diffusion"]
    image, state, _ = _inputs(4)
    obs = Observation(images={"front": image}, joint_positions=state[:-1],
                      ee_pose=np.zeros(6), gripper=float(state[-1]), stamp_s=0.0)
    a = load(bundle, "onnxruntime", seed=7)(obs)
    b = load(bundle, "onnxruntime", seed=7)(obs)
    c = load(bundle, "onnxruntime", seed=8)(obs)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0  # fresh noise, different sample
    wrong = Observation(images={"wrist": image}, joint_positions=state[:-1],
                        ee_pose=np.zeros(6), gripper=0.5, stamp_s=0.0)
    with pytest.raises(TheiaError, match="front"):
        load(bundle, "onnxruntime")(wrong)


def test_wrong_inputs_are_clear_errors(bundles: dict) -> None:
    _, bundle = bundles["cnn_mlp"]
    rt = load(bundle, "onnxruntime")
    image, state, _ = _inputs(5)
    with pytest.raises(TheiaError, match=r"\[40, 56, 3\].*got \(56, 40, 3\)"):
        rt.encode(np.ascontiguousarray(image.transpose(1, 0, 2)))
    with pytest.raises(TheiaError, match="uint8"):
        rt.encode(image.astype(np.float32))
    with pytest.raises(TheiaError, match="numpy"):
        rt.encode(image.tolist())
    tokens = rt.encode(image)
    with pytest.raises(TheiaError, match=r"state must be \[7\]"):
        rt.act(tokens, state[:5])
    with pytest.raises(TheiaError, match="finite"):
        rt.act(tokens, np.full(STATE_DIM, np.nan))
    with pytest.raises(TheiaError, match=r"features must be \[1, 196, 32\]"):
        rt.act(tokens[:, :100], state)
    with pytest.raises(TheiaError, match="backend 'cuda' unknown"):
        load(bundle, "cuda")


def _copy(bundle: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(bundle, dst)
    return dst


def test_corrupt_missing_and_tampered_bundles(bundles: dict, tmp_path: Path) -> None:
    _, bundle = bundles["cnn_mlp"]
    with pytest.raises(TheiaError, match="not a directory"):
        load(tmp_path / "nothing", "onnxruntime")

    b = _copy(bundle, tmp_path / "corrupt")
    data = bytearray((b / "encoder.onnx").read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    (b / "encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(TheiaError, match=r"encoder\.onnx: SHA-256 differs"):
        load(b, "onnxruntime")
    (b / "encoder.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(TheiaError, match=r"encoder\.onnx: onnxruntime cannot load"):
        load(b, "onnxruntime", verify=False)

    b = _copy(bundle, tmp_path / "missing")
    (b / "head.onnx").unlink()
    with pytest.raises(TheiaError, match=r"head\.onnx: missing"):
        load(b, "onnxruntime")
    with pytest.raises(TheiaError, match=r"head\.onnx: missing"):
        load(b, "onnxruntime", verify=False)

    b = _copy(bundle, tmp_path / "nosums")
    (b / "SHA256SUMS").unlink()
    with pytest.raises(TheiaError, match="SHA256SUMS: missing"):
        load(b, "onnxruntime")

    b = _copy(bundle, tmp_path / "yaml")
    (b / "bundle.yaml").write_text("policy: [unclosed\n")
    write_sums(b, list(read_sums(b)))  # re-signed, so the YAML parser sees it
    with pytest.raises(TheiaError, match="not valid YAML"):
        load(b, "onnxruntime")

    b = _copy(bundle, tmp_path / "version")
    doc = yaml.safe_load((b / "bundle.yaml").read_text())
    doc["format_version"] = 99
    del doc["policy"]["horizon"]
    (b / "bundle.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TheiaError, match=r"bundle\.yaml: SHA-256 differs"):
        load(b, "onnxruntime")  # edited without re-signing
    with pytest.raises(TheiaError, match="format_version 99 unsupported"):
        load(b, "onnxruntime", verify=False)
    doc["format_version"] = 1
    (b / "bundle.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TheiaError, match=r"policy\.horizon: missing"):
        load(b, "onnxruntime", verify=False)


def test_checksums_must_cover_what_runs(bundles: dict, tmp_path: Path) -> None:
    _, bundle = bundles["cnn_mlp"]
    b = _copy(bundle, tmp_path / "partial")
    write_sums(b, [n for n in read_sums(b) if n != "head.onnx"])  # a stale / partial list
    with pytest.raises(TheiaError, match=r"does not list 'head\.onnx'"):
        load(b, "onnxruntime")

    b = _copy(bundle, tmp_path / "escape")
    doc = yaml.safe_load((b / "bundle.yaml").read_text())
    doc["graphs"]["head"]["file"] = "../head.onnx"
    (b / "bundle.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TheiaError, match="inside the bundle"):
        load(b, "onnxruntime", verify=False)


def test_diffusion_bundle_needs_its_scheduler(bundles: dict, tmp_path: Path) -> None:
    _, bundle = bundles["diffusion"]
    b = _copy(bundle, tmp_path)
    doc = yaml.safe_load((b / "bundle.yaml").read_text())
    del doc["diffusion"]["scheduler"]
    (b / "bundle.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TheiaError, match=r"diffusion\.scheduler: missing"):
        load(b, "onnxruntime", verify=False)


def test_bundle_without_optional_parts(bundles: dict, tmp_path: Path) -> None:
    _, bundle = bundles["cnn_mlp"]
    b = _copy(bundle, tmp_path)
    doc = yaml.safe_load((b / "bundle.yaml").read_text())
    del doc["torch"], doc["graphs"]["fused"]
    (b / "bundle.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TheiaError, match="no torch/ copy"):
        load(b, "torch", verify=False)
    with pytest.raises(TheiaError, match="no 'fused' graph"):
        load(b, "onnxruntime", verify=False, fused=True)
    assert "fused" not in load(b, "onnxruntime", verify=False).sessions


def test_bundles_from_before_the_antialiased_resize_keep_theirs(tmp_path: Path) -> None:
    # An old bundle: plain bilinear resize, and neither bundle.yaml nor the policy says so.
    policy_dir, bundle, _ = make_bundle(tmp_path, "cnn_mlp", resize="bilinear",
                                        image_hw=(120, 160))
    doc = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert doc["encoder"]["preprocess"]["resize_mode"] == "bilinear"
    del doc["encoder"]["preprocess"]["resize_mode"], doc["encoder"]["config"]["resize"]
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(doc))
    for policy_json in (policy_dir / "policy.json", bundle / "torch" / "policy.json"):
        meta = json.loads(policy_json.read_text())
        del meta["encoder"]["resize"]
        policy_json.write_text(json.dumps(meta))
    write_sums(bundle, list(read_sums(bundle)))
    policy = load_policy(policy_dir)
    assert policy.encoder.config.resize == "bilinear"
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    with torch.inference_mode():
        ref = policy.encoder.encode(image).numpy()
        new = load_policy(policy_dir)
        new.encoder.config = dataclasses.replace(new.encoder.config, resize="antialias")
        assert np.abs(new.encoder.encode(image).numpy() - ref).max() > 1e-3  # modes differ
    for backend in ("onnxruntime", "torch"):
        with load(bundle, backend=backend) as rt:
            assert rt.meta.resize_mode == "bilinear"
            assert np.abs(rt.encode(image) - ref).max() <= TOL[backend]
    # a bundle.yaml that disagrees with its torch copy is refused by the torch backend
    doc["encoder"]["preprocess"]["resize_mode"] = "antialias"
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TheiaError, match=r"bundle\.yaml says 'antialias'"):
        load(bundle, "torch", verify=False)
    doc["encoder"]["preprocess"]["resize_mode"] = "area"
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TheiaError, match="resize_mode: 'area' is not a resize mode"):
        load(bundle, "onnxruntime", verify=False)


def test_auto_picks_the_fastest_available() -> None:
    have = available_backends()
    assert resolve_backend("auto") == have[0]
    if "tensorrt" not in have:
        assert resolve_backend("auto") == "onnxruntime"
        with pytest.raises(TheiaError, match=r"tensorrt.*not available"):
            resolve_backend("tensorrt")
