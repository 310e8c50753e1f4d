"""Which robot a policy's data came from, and which robots may run it.

Datasets record LeRobot's free-text ``robot_type`` (``wx250s``, ``spot``, ``so100`` ...);
training copies it into the policy and export into the bundle. A policy runs only on the
robot family its demonstrations came from: the WidowX twin and the real WidowX share one
family (same arm, same action space); a Spot or an so100 policy does not run on either.

Example::

    check_policy_robot("sim", meta.robot_type, meta.action_kind, "bundles/door")
"""

from __future__ import annotations

import logging

from theia_ros.errors import TheiaError

log = logging.getLogger(__name__)

# family -> the robot_type spellings our recorders and importers write for it
ROBOT_FAMILIES: dict[str, tuple[str, ...]] = {
    "wx250s": ("wx250s", "wx250s_sim", "widowx", "sim_widowx", "sim"),
    "spot": ("spot",),
}
# robot_type values that say nothing about the robot: treated as "not recorded"
UNRECORDED = ("", "unknown", "dry_run")
# a ``robot`` parameter / ``--robot`` value -> the family it drives (dry_run: any)
ROBOT_PARAM_FAMILY = {"widowx": "wx250s", "sim": "wx250s", "spot": "spot"}


def family(robot_type: str | None) -> str | None:
    """``robot_type`` -> its family name; a foreign robot is its own family; None: unknown."""
    if robot_type is None or robot_type.strip().lower() in UNRECORDED:
        return None
    name = robot_type.strip().lower()
    for fam, members in ROBOT_FAMILIES.items():
        if name in members:
            return fam
    return name


def check_policy_robot(robot: str, robot_type: str | None, action_kind: str,
                       source: str) -> None:
    """Refuse (one line) to run a policy from ``source`` whose data came from another robot
    than ``robot`` (a ``robot`` parameter value), or whose actions it does not take; warn when
    the policy does not say which robot it is for."""
    from theia_ros.robots.registry import robot_action_kind

    want = ROBOT_PARAM_FAMILY.get(robot)
    if want is None:  # dry_run and unknown robots: nothing to compare against
        return
    kind = robot_action_kind(robot).value
    if action_kind != kind:
        raise TheiaError(f"{source}: policy outputs {action_kind} actions; robot {robot!r} "
                         f"takes {kind}")
    have = family(robot_type)
    if have is None:
        log.warning("%s records no robot_type (exported before bundles recorded it, or "
                    "trained on a dataset without one); assuming it is for %r", source, robot)
        return
    if have != want:
        raise TheiaError(f"{source}: policy was trained on {robot_type!r} data; robot "
                         f"{robot!r} is a {want} (re-train on {want} demonstrations)")


def check_same_robot(dataset_robot: str | None, policy_robot: str | None, where: str) -> None:
    """Refuse (one line) when a dataset and a policy come from different robot families."""
    a, b = family(dataset_robot), family(policy_robot)
    if a is None or b is None:
        if a != b:
            log.warning("%s: robot_type %r vs the policy's %r; one is not recorded, so the "
                        "robot cannot be checked", where, dataset_robot, policy_robot)
        return
    if a != b:
        raise TheiaError(f"{where}: dataset is from a {dataset_robot!r} robot, the policy was "
                         f"trained on {policy_robot!r} data")
