"""Assemble the control core a policy node runs, from its parameters: ROS-free.

``build_control`` turns the node's parameter values (and the task config they came from)
into the loaded policy, the robot adapter, the safety filter and the ``ControlLoop`` wired
with observation caches. The node keeps only ROS concerns (parameters, topics, services);
tests and other front ends build the same control core without rclpy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from theia_ros.control import (
    ChunkingConfig,
    ControlLoop,
    Freshness,
    ImageCache,
    LoopConfig,
    Policy,
    SafetyFilter,
    TickReport,
)
from theia_ros.control.history import ObservationHistory
from theia_ros.errors import TheiaError
from theia_ros.robots.joint_state import JointStateCache
from theia_ros.robots.registry import RobotContext, RobotSetup, build_robot, override_limits
from theia_ros.robots.robot_types import check_policy_robot
from theia_ros.ros.task_config import TaskConfig, resolve_path
from theia_ros.types import ActionKind, RobotAdapter

log = logging.getLogger(__name__)
MAX_RATE_HZ = 100.0  # the rate_hz parameter's upper bound


@dataclass
class ControlAssembly:
    """What a policy node drives: the loop and the parts the node's topics feed or read."""

    loop: ControlLoop
    setup: RobotSetup
    joints: JointStateCache
    images: ImageCache | None  # None when the adapter reads its own cameras
    image_hw: tuple[int, int] | None
    runtime: Any = None  # the loaded bundle runtime (None when a policy was given)
    camera_topics: dict[str, str] | None = None  # camera -> image topic, one subscription each

    @property
    def adapter(self) -> RobotAdapter:
        return self.setup.adapter


def load_policy(p: dict[str, Any], task: TaskConfig | None) -> tuple[Any, ActionKind,
                                                                       tuple[int, int]]:
    """Load the ``bundle`` parameter with the runtime; the bundle's camera wins over the
    ``camera`` parameter, and its trained rate over ``rate_hz`` unless
    ``allow_rate_override`` (``p`` is updated; ``p["cameras"]``: every bundle camera)."""
    if not p["bundle"]:
        raise TheiaError("policy_node: parameter 'bundle' (or config_file's bundle:) is required")
    from theia_ros.runtime import load

    bundle = resolve_path(p["bundle"], task)
    runtime = load(bundle, p["backend"], threads=p["threads"] or None)
    meta = runtime.meta
    try:  # a policy for another robot, or chunks shorter than the replan period: refuse
        check_policy_robot(p["robot"], meta.robot_type, meta.action_kind, str(bundle))
        replan = _chunking(p, task).replan_every
        if replan > meta.horizon:
            raise TheiaError(f"replan_every {replan} exceeds the chunk horizon {meta.horizon} "
                             f"of {bundle}")
    except TheiaError:
        runtime.close()
        raise
    if meta.camera != p["camera"]:
        log.warning("bundle camera %r differs from the camera parameter %r; using the "
                    "bundle's", meta.camera, p["camera"])
        p["camera"] = meta.camera
    p["rate_hz"] = choose_rate(p["rate_hz"], meta.control_rate_hz,
                               bool(p.get("allow_rate_override", False)))
    p["cameras"] = list(meta.cameras)
    log.info("loaded %s on %s", bundle, runtime.backend)
    return runtime, ActionKind(meta.action_kind), tuple(meta.image_hw)


def choose_rate(requested_hz: float, trained_hz: float, allow_override: bool) -> float:
    """The control rate to run a bundle at: the rate it was trained at, unless the operator
    explicitly allows another one. A policy's actions are steps of one trained period, so
    at another rate it moves at another speed (the safety filter's speed limits still cap
    it)."""
    trained_hz = float(trained_hz)
    if not (math.isfinite(trained_hz) and 0 < trained_hz <= MAX_RATE_HZ):
        raise TheiaError(f"bundle: control_rate_hz {trained_hz!r} is not a usable rate "
                         f"(0, {MAX_RATE_HZ:g}] Hz")
    if abs(requested_hz - trained_hz) <= 1e-6:
        return trained_hz
    if allow_override:
        log.warning("running at rate_hz %s Hz, not the %s Hz the policy was trained at "
                    "(allow_rate_override)", requested_hz, trained_hz)
        return float(requested_hz)
    log.warning("rate_hz %s Hz ignored: running at the bundle's trained rate %s Hz (set "
                "allow_rate_override:=true to run at another rate)", requested_hz, trained_hz)
    return trained_hz


def node_cameras(p: Mapping[str, Any]) -> tuple[str, ...]:
    """The node's cameras in the policy's order (``cameras``, else the one ``camera``)."""
    return tuple(p.get("cameras") or (p["camera"],))


def camera_topics(p: Mapping[str, Any]) -> dict[str, str]:
    """Camera -> topic: a camera named in ``camera_topics`` (``name=topic``) on its topic,
    else the first camera on ``image_topic`` and the others on ``/<name>/image_raw``."""
    cameras = list(node_cameras(p))
    given: dict[str, str] = {}
    for item in p.get("camera_topics") or []:
        name, sep, topic = str(item).partition("=")
        if not sep or not name.strip() or not topic.strip().startswith("/"):
            raise TheiaError(f"policy_node: camera_topics entry {item!r}: expected "
                             "name=/topic")
        given[name.strip()] = topic.strip()
    _known_cameras("camera_topics", given, cameras)
    defaults = [p["image_topic"]] + [f"/{cam}/image_raw" for cam in cameras[1:]]
    return {cam: given.get(cam, default) for cam, default in zip(cameras, defaults)}


def camera_max_ages(p: Mapping[str, Any]) -> dict[str, float]:
    """Camera -> image age limit (s) from the ``camera_max_image_age_s`` parameter
    (``name=seconds``); cameras not named use ``max_image_age_s``."""
    out: dict[str, float] = {}
    for item in p.get("camera_max_image_age_s") or []:
        name, sep, text = str(item).partition("=")
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not sep or not name.strip() or not (math.isfinite(seconds) and seconds >= 0):
            raise TheiaError(f"policy_node: camera_max_image_age_s entry {item!r}: expected "
                             "name=seconds (a finite number >= 0)")
        out[name.strip()] = seconds
    return out


def _known_cameras(param: str, named: Mapping[str, Any], cameras: list[str]) -> None:
    unknown = sorted(set(named) - set(cameras))
    if unknown:
        raise TheiaError(f"policy_node: {param} names {unknown} are not cameras of the "
                         f"policy ({cameras})")


def _freshness(p: Mapping[str, Any], task: TaskConfig | None) -> Freshness:
    cameras = node_cameras(p)
    ages = camera_max_ages(p)
    _known_cameras("camera_max_image_age_s", ages, list(cameras))
    kw = {"cameras": cameras, "max_image_age_s": p["max_image_age_s"],
          "max_joint_age_s": p["max_joint_age_s"], "camera_max_age_s": ages}
    return replace(task.freshness(), **kw) if task is not None else Freshness(**kw)


def _chunking(p: Mapping[str, Any], task: TaskConfig | None) -> ChunkingConfig:
    over = {k: p[k] for k in ("replan_every", "temporal_ensemble", "async_planning")}
    return task.chunking(over) if task is not None else ChunkingConfig(**over)


def build_control(p: dict[str, Any], task: TaskConfig | None, *,
                  policy: Policy | None = None, setup: RobotSetup | None = None,
                  action_kind: ActionKind = ActionKind.EE_DELTA,
                  image_hw: tuple[int, int] | None = None,
                  on_tick: Callable[[TickReport], None] | None = None,
                  history: ObservationHistory | None = None) -> ControlAssembly:
    """The control core for parameters ``p`` (``POLICY_NODE_PARAMS`` values).

    Args:
        p: parameter values; ``camera`` is replaced by the bundle's when they differ.
        task: the task config the defaults came from (None: parameters only).
        policy: ``Observation -> [H, 7]``; None loads the ``bundle`` parameter. Given,
            ``action_kind`` and ``image_hw`` describe it.
        setup: a ready robot (adapter + limits); None builds the ``robot`` parameter's.
        on_tick: called with every tick's report.
        history: the observation history for a given ``policy`` with n_obs_steps > 1 (a
            loaded bundle brings its own).
    """
    runtime = None
    if policy is None:
        runtime, action_kind, image_hw = load_policy(p, task)
        policy = runtime
        history = runtime.make_history(1.0 / p["rate_hz"])
    image_hw = tuple(image_hw) if image_hw else None
    joints = JointStateCache(p["arm_joints"], p["gripper_joint"] or None)
    if setup is None:
        ctx = RobotContext(task, action_kind, p["rate_hz"], joints, sim_seed=p["sim_seed"],
                           image_hw=image_hw or (224, 224),
                           cameras=node_cameras(p))
        setup = build_robot(p["robot"], ctx)
    images = ImageCache() if setup.images_from_topic else None
    safety = SafetyFilter(override_limits(setup.limits, p), setup.joint_solver)
    config = LoopConfig(rate_hz=p["rate_hz"], freshness=_freshness(p, task),
                        min_command_gap_fraction=p["min_command_gap_fraction"])
    loop = ControlLoop(setup.adapter, policy, safety, config, _chunking(p, task),
                       images=images, on_tick=on_tick, history=history)
    return ControlAssembly(loop, setup, joints, images, image_hw, runtime, camera_topics(p))
