"""Several cameras and an observation history: heads, sampler padding, bundles, the control
core's history (encode once, pad at the start, hold on a stale or missing frame), node
topics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_export import IMAGE_HW, make_bundle, make_policy

from policies.policy import POLICY_JSON, load_policy, save_policy
from theia_ros.control import LoopState
from theia_ros.control.history import ObservationHistory, StackedObservation
from theia_ros.control.observation import HoldReason
from theia_ros.errors import TheiaError
from theia_ros.ros.assembly import build_control, camera_topics
from theia_ros.ros.params import POLICY_NODE_PARAMS
from theia_ros.ros.task_config import node_defaults
from theia_ros.runtime import load, read_bundle
from theia_ros.types import Observation
from training.bc.data import ChunkDataset, Demos, history_indices

CAMS = ("front", "wrist")


def _images(seed: int, steps: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (1, steps, 32, 32, 3), dtype=np.uint8) for c in CAMS}


@pytest.mark.parametrize("kind", ["cnn_mlp", "diffusion"])
def test_two_cameras_two_steps_round_trip_and_view_order_matters(kind: str,
                                                                 tmp_path: Path) -> None:
    policy = make_policy(kind, cameras=CAMS, n_obs_steps=2)
    images = _images(0, 2)
    state = np.random.default_rng(1).normal(size=(1, 2, 7)).astype(np.float32)
    before = policy.predict_action_chunk(images, state, torch.Generator().manual_seed(3))
    save_policy(policy, tmp_path / "p")
    meta = json.loads((tmp_path / "p" / POLICY_JSON).read_text())
    assert meta["cameras"] == list(CAMS) and meta["n_obs_steps"] == 2
    again = load_policy(tmp_path / "p")
    after = again.predict_action_chunk(images, state, torch.Generator().manual_seed(3))
    torch.testing.assert_close(before, after)
    swapped = {"front": images["wrist"], "wrist": images["front"]}
    other = again.predict_action_chunk(swapped, state, torch.Generator().manual_seed(3))
    assert not torch.allclose(before, other)  # the head tells the cameras apart
    with pytest.raises(TheiaError, match="missing"):
        again.predict_action_chunk({"front": images["front"]}, state)


def test_policy_json_with_a_single_camera_field_still_loads(tmp_path: Path) -> None:
    save_policy(make_policy("cnn_mlp"), tmp_path / "p")
    path = tmp_path / "p" / POLICY_JSON
    meta = json.loads(path.read_text())
    del meta["cameras"], meta["n_obs_steps"]
    meta["camera"] = "hand"
    for key in ("num_views", "n_obs_steps"):
        del meta["head"][key]
    path.write_text(json.dumps(meta))
    policy = load_policy(tmp_path / "p")
    assert policy.config.cameras == ("hand",) and policy.config.n_obs_steps == 1


def test_sampler_pads_the_history_with_the_episode_first_frame() -> None:
    rows, pad = history_indices(np.array([0, 0, 0, 3, 3]), np.array([0, 1, 3, 4]), 3)
    assert rows.tolist() == [[0, 0, 0], [0, 0, 1], [3, 3, 3], [3, 3, 4]]
    assert pad.tolist() == [[True, True, False], [True, False, False], [True, True, False],
                            [True, False, False]]
    frames = {c: np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones(
        (5, 2, 2, 3), np.uint8) + 10 * k for k, c in enumerate(CAMS)}
    demos = Demos(states=np.arange(5, dtype=np.float32)[:, None] * np.ones((5, 7), np.float32),
                  actions=np.zeros((5, 7), np.float32), episode_end=np.array([3, 3, 3, 5, 5]),
                  images=frames, episodes=[0, 1], lengths=[3, 2], cameras=list(CAMS))
    batch = ChunkDataset(demos, horizon=2, n_obs_steps=2).batch(np.array([3, 4]))
    assert batch["obs"]["wrist"][:, :, 0, 0, 0].tolist() == [[13, 13], [13, 14]]
    assert batch["state"][:, :, 0].tolist() == [[3, 3], [3, 4]]
    feats = np.arange(5 * 2, dtype=np.float32).reshape(5, 2, 1, 1)  # [N, K, tokens, C]
    cached = ChunkDataset(demos, horizon=2, features=feats, n_obs_steps=2).batch(np.array([4]))
    # time-major views: (t3 front, t3 wrist, t4 front, t4 wrist)
    assert cached["obs"][0, :, 0, 0].tolist() == [6, 7, 8, 9]


def _obs(front: float, wrist: float, stamp: float, q: float = 0.0) -> Observation:
    img = {"front": np.full((4, 4, 3), front, np.uint8), "wrist": np.full((4, 4, 3), wrist,
                                                                          np.uint8)}
    return Observation(images=img, joint_positions=np.full(6, q), ee_pose=np.zeros(6),
                       gripper=1.0, stamp_s=stamp, stamps_s={"front": stamp, "wrist": stamp})


def _mean_encoder(image: np.ndarray) -> np.ndarray:
    """Stands in for ``PolicyRuntime.encode`` (a real bundle's encoder is tested elsewhere):
    tokens [1, 2, 3] that identify the frame."""
    return np.full((1, 2, 3), float(np.mean(image)), np.float32)


def test_history_pads_at_start_encodes_each_frame_once_and_holds_on_gaps() -> None:
    h = ObservationHistory(_mean_encoder, CAMS, n_obs_steps=2, period_s=0.2)
    first, why = h.push(_obs(10, 20, 0.0), 0.0)
    assert why is None and isinstance(first, StackedObservation)
    assert first.features[:, 0, 0].tolist() == [10, 20, 10, 20]  # padded with itself
    second, why = h.push(_obs(11, 21, 0.2, q=1.0), 0.2)
    assert why is None and second.features[:, 0, 0].tolist() == [10, 20, 11, 21]
    assert second.states[:, 0].tolist() == [0.0, 1.0]
    assert h.encoded_frames == 4  # two ticks x two cameras, each once
    # the cameras delivered nothing new: one moment would appear twice
    assert h.push(_obs(11, 21, 0.2), 0.4) == (None, HoldReason.STALE_HISTORY)
    # refilling after the restart: no padding mid-episode
    assert h.push(_obs(12, 22, 0.6), 0.6) == (None, HoldReason.HISTORY_GAP)
    third, why = h.push(_obs(13, 23, 0.8), 0.8)
    assert why is None and third.features[:, 0, 0].tolist() == [12, 22, 13, 23]
    # a missed tick (1.0 -> skipped -> 1.2 s) is a gap too
    assert h.push(_obs(14, 24, 1.2), 1.2) == (None, HoldReason.HISTORY_GAP)
    h.reset()
    fresh, why = h.push(_obs(15, 25, 2.0), 2.0)
    assert why is None and fresh.features[:, 0, 0].tolist() == [15, 25, 15, 25]


def test_control_core_holds_until_the_history_is_whole() -> None:
    seen: list[StackedObservation] = []

    def policy(obs: Observation) -> np.ndarray:
        seen.append(obs)
        return np.array([[0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]] * 4)

    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "dry_run", "rate_hz": 5.0,
                                           "min_command_gap_fraction": 0.0})
    p["cameras"] = list(CAMS)
    history = ObservationHistory(_mean_encoder, CAMS, 2, period_s=0.2)
    control = build_control(p, None, policy=policy, image_hw=(4, 4), history=history)
    assert control.loop.config.freshness.cameras == CAMS
    assert control.camera_topics == {"front": p["image_topic"], "wrist": "/wrist/image_raw"}
    loop = control.loop
    loop.start()

    def feed(level: int) -> None:
        now = time.monotonic()
        for k, cam in enumerate(CAMS):
            control.images.put(cam, np.full((4, 4, 3), level + k, np.uint8), now)
        control.joints.put([*p["arm_joints"], p["gripper_joint"]], [0.0] * 6 + [0.03], now)

    feed(10)
    assert loop.step().status == "acted"
    r = loop.step()  # no new frames
    assert (r.status, r.hold_reason) == ("held", HoldReason.STALE_HISTORY.value)
    feed(20)
    r = loop.step()
    assert (r.status, r.hold_reason) == ("held", HoldReason.HISTORY_GAP.value)
    feed(30)
    assert loop.step().status == "acted"
    assert loop.state is LoopState.RUNNING
    assert [o.features[:, 0, 0].tolist() for o in seen] == [[10, 11, 10, 11], [20, 21, 30, 31]]
    loop.close()


def test_camera_topics_parameter() -> None:
    p = {"camera": "front", "cameras": ["front", "wrist", "top"], "image_topic": "/c/img",
         "camera_topics": ["top=/t/image"]}
    assert camera_topics(p) == {"front": "/c/img", "wrist": "/wrist/image_raw",
                                "top": "/t/image"}
    with pytest.raises(TheiaError, match="not cameras"):
        camera_topics({**p, "camera_topics": ["side=/s"]})
    with pytest.raises(TheiaError, match="name=/topic"):
        camera_topics({**p, "camera_topics": ["top"]})


@pytest.fixture(scope="module")
def two_cam_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    policy_dir, bundle, results = make_bundle(tmp_path_factory.mktemp("b"), "cnn_mlp",
                                              cameras=CAMS, n_obs_steps=2)
    assert results and all(r.ok for r in results)
    return policy_dir, bundle


def test_bundle_records_cameras_and_history_and_runtimes_agree(two_cam_bundle) -> None:
    policy_dir, bundle = two_cam_bundle
    meta = read_bundle(bundle)
    assert meta.cameras == CAMS and meta.n_obs_steps == 2 and meta.camera == "front"
    doc = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert doc["cameras"] == list(CAMS) and doc["policy"]["n_obs_steps"] == 2
    assert doc["graphs"]["head"]["inputs"]["tokens"]["shape"][:2] == [1, 4]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8) for _ in range(4)]
    states = rng.normal(0.3, 0.5, (2, 7)).astype(np.float32)
    policy = load_policy(policy_dir)
    ref = policy.predict_action_chunk(
        {"front": np.stack(frames[0::2])[None], "wrist": np.stack(frames[1::2])[None]},
        states[None])[0].numpy()
    for backend in ("onnxruntime", "torch"):
        with load(bundle, backend=backend) as rt:
            feats = np.concatenate([rt.encode(f) for f in frames])
            np.testing.assert_allclose(rt.act(feats, states), ref, atol=1e-4)
            with pytest.raises(TheiaError, match="ObservationHistory"):
                rt(Observation(images={c: frames[0] for c in CAMS},
                               joint_positions=np.zeros(6), ee_pose=np.zeros(6), gripper=1.0,
                               stamp_s=0.0))
            with pytest.raises(TheiaError, match="features must be"):
                rt.act(feats[:2], states)


def test_bundle_without_cameras_field_is_a_one_camera_bundle(tmp_path: Path) -> None:
    _, bundle, _ = make_bundle(tmp_path, "cnn_mlp")
    path = bundle / "bundle.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.pop("cameras")
    doc["policy"].pop("n_obs_steps")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    meta = read_bundle(bundle, verify=False)
    assert meta.cameras == ("front",) and meta.n_obs_steps == 1
    assert meta.tokens_shape == (1, meta.num_tokens, meta.embed_dim)
    doc["cameras"] = ["wrist", "front"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(TheiaError, match=r"cameras\[0\]"):
        read_bundle(bundle, verify=False)


def test_fused_graph_is_refused_for_several_views(tmp_path: Path) -> None:
    with pytest.raises(TheiaError, match="fused"):
        make_bundle(tmp_path, "cnn_mlp", fused=True, cameras=CAMS)
