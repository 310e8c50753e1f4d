"""Which adapter, limits and sensor feeds each ``robot`` parameter value means (ROS-free).

A registry instead of an if/elif chain: ``ROBOTS[name](ctx) -> RobotSetup``. Adapters are
imported inside their builder, so choosing ``widowx`` never imports bosdyn and ``spot``
never imports MuJoCo.

================  ======================  =====================  =======================
robot             adapter                 images                 joints
================  ======================  =====================  =======================
``widowx``        WidowXAdapter           camera topic           Interbotix (its own)
``sim``           SimWidowX (MuJoCo)      rendered by the sim    the sim
``spot``          SpotAdapter (bosdyn)    Spot image service     Spot robot state
``dry_run``       DryRunRobot             camera topic           joint_states topic
================  ======================  =====================  =======================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theia_ros.control import SafetyLimits
from theia_ros.control import kinematics as K
from theia_ros.control.safety import JointSolver
from theia_ros.errors import TheiaError
from theia_ros.robots.dry_run import DryRunRobot
from theia_ros.robots.joint_state import JointStateCache
from theia_ros.ros.task_config import TaskConfig, base_limits
from theia_ros.types import ActionKind, RobotAdapter


@dataclass(frozen=True)
class RobotContext:
    """What a builder may use: the task config (None: defaults), the policy's action kind,
    the control rate, the joint cache the node fills, the sim seed and camera size."""

    config: TaskConfig | None
    action_kind: ActionKind
    rate_hz: float
    joints: JointStateCache
    sim_seed: int = 0
    image_hw: tuple[int, int] = (224, 224)
    cameras: tuple[str, ...] = ("front",)  # the policy's cameras (the sim renders these)


@dataclass(frozen=True)
class RobotSetup:
    """A robot ready for the control core (``adapter`` not yet connected)."""

    adapter: RobotAdapter
    limits: SafetyLimits
    joint_solver: JointSolver | None
    images_from_topic: bool
    joints_from_topic: bool
    # names of the arm joints the adapter reports, in state order (None: the node's
    # ``arm_joints`` parameter); recorded as the dataset's state names
    joint_names: tuple[str, ...] | None = None


def _wx250s_solver(target: np.ndarray, seed: np.ndarray) -> np.ndarray | None:
    """Safety-filter joint hook: our IK seeded from the measured joints (the adapters' own)."""
    if np.asarray(seed).shape != (K.NUM_JOINTS,):
        return None
    return K.solve_ik(target, seed)


def _limits(ctx: RobotContext, base: SafetyLimits) -> SafetyLimits:
    return ctx.config.safety_limits(base) if ctx.config is not None else base


def _need_kind(robot: str, ctx: RobotContext, kind: ActionKind) -> None:
    if ctx.action_kind is not kind:
        raise TheiaError(f"robot {robot!r} takes {kind.value} actions but the policy bundle "
                         f"outputs {ctx.action_kind.value}")


def _widowx(ctx: RobotContext) -> RobotSetup:
    from dataclasses import replace

    from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig

    _need_kind("widowx", ctx, ActionKind.EE_DELTA)
    cfg = ctx.config.widowx_config() if ctx.config is not None else WidowXConfig()
    cfg = replace(cfg, control_rate_hz=ctx.rate_hz)
    return RobotSetup(WidowXAdapter(cfg), _limits(ctx, SafetyLimits.wx250s()), _wx250s_solver,
                      images_from_topic=True, joints_from_topic=False)


def _sim(ctx: RobotContext) -> RobotSetup:
    from theia_ros.robots.sim import SimWidowX

    _need_kind("sim", ctx, ActionKind.EE_DELTA)
    h, w = ctx.image_hw
    if h != w:
        raise TheiaError(f"robot 'sim' renders square images; the bundle wants {h}x{w}")
    adapter = SimWidowX(seed=ctx.sim_seed, image_size=h, cameras=ctx.cameras,
                        control_rate_hz=ctx.rate_hz)
    return RobotSetup(adapter, _limits(ctx, SafetyLimits.wx250s()), _wx250s_solver,
                      images_from_topic=False, joints_from_topic=False)


def _spot(ctx: RobotContext) -> RobotSetup:
    from theia_ros.robots.spot.adapter import SpotAdapter
    from theia_ros.robots.spot.io import ARM_JOINTS

    _need_kind("spot", ctx, ActionKind.EE_ABSOLUTE)
    if ctx.config is None:
        raise TheiaError("robot 'spot' needs config_file (the spot: block: hostname, cameras)")
    cfg = ctx.config.spot_config()
    limits = ctx.config.safety_limits(base_limits(ctx.config))
    return RobotSetup(SpotAdapter(cfg), limits, None, images_from_topic=False,
                      joints_from_topic=False, joint_names=ARM_JOINTS)


def _dry_run(ctx: RobotContext) -> RobotSetup:
    base = base_limits(ctx.config) if ctx.config is not None else SafetyLimits.wx250s()
    solver = _wx250s_solver if len(ctx.joints.arm_joints) == K.NUM_JOINTS else None
    return RobotSetup(DryRunRobot(ctx.joints, ctx.action_kind), _limits(ctx, base), solver,
                      images_from_topic=True, joints_from_topic=True)


ROBOTS: dict[str, Callable[[RobotContext], RobotSetup]] = {
    "widowx": _widowx,
    "sim": _sim,
    "spot": _spot,
    "dry_run": _dry_run,
}


# Robots whose adapter takes a different action kind than EE deltas (the recorder turns teleop
# deltas into this kind; a policy bundle must already output it).
NATIVE_ACTION_KINDS: dict[str, ActionKind] = {"spot": ActionKind.EE_ABSOLUTE}


def robot_action_kind(name: str) -> ActionKind:
    """The action kind robot ``name``'s adapter takes (``ee_delta`` unless listed above)."""
    return NATIVE_ACTION_KINDS.get(name, ActionKind.EE_DELTA)


def build_robot(name: str, ctx: RobotContext) -> RobotSetup:
    try:
        builder = ROBOTS[name]
    except KeyError:
        raise TheiaError(f"robot {name!r} unknown; choose one of {sorted(ROBOTS)}") from None
    return builder(ctx)


def override_limits(limits: SafetyLimits, values: dict[str, object]) -> SafetyLimits:
    """Apply the node's ``safety.*`` parameters (negative / empty = keep) over ``limits``."""
    changes: dict[str, object] = {}
    for key in ("max_speed_m_s", "max_angular_speed_rad_s"):
        v = values.get(f"safety.{key}")
        if isinstance(v, (int, float)) and v >= 0:
            changes[key] = float(v)
    for key in ("workspace_min_m", "workspace_max_m"):
        v = values.get(f"safety.{key}")
        if v:
            changes[key] = tuple(float(x) for x in v)  # type: ignore[union-attr]
    if not changes:
        return limits
    return SafetyLimits.from_dict(changes, base=limits, source="policy_node safety.* "
                                  "parameters")
