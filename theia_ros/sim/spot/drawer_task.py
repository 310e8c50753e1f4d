"""The Spot drawer task in simulation: a running simulated Spot + a client config aimed at it.

THE SERVER IS A SIMULATOR / STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE
(``theia_ros.sim.spot``). ``DrawerSim`` starts it on 127.0.0.1 with the MuJoCo cabinet world
(``drawer.py``) and a fresh random password in a chmod-600 credentials file, so recorders and
evaluations connect the real ``SpotAdapter`` (``bosdyn-client``) exactly as to a robot, and
use ``reset(seed)`` / ``script_for`` / ``opening_m`` for the parts an operator would do by hand
(placing the robot, closing the drawer, measuring where the handle is, judging success).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path

import numpy as np

from theia_ros.record.spot_script import DrawerScript

from .drawer import BODY_HEIGHT_M, SUCCESS_OPEN_M, DrawerWorld, drawer_robot_options
from .server import SpotStandIn

CAMERA_SOURCE = "front_color"
# the demonstration: start above and in front of the handle; pull 20 cm (success needs 10)
BASE_SCRIPT = DrawerScript(start_offset_m=(-0.22, 0.0, 0.12), start_jitter_m=0.02,
                           approach_offset_m=0.08, pull_distance_m=0.2, retreat_m=0.04,
                           speed_m_s=0.15, grasp_settle_ticks=2, close_ticks=3,
                           release_ticks=2, settle_ticks=3, pull_along_grasp=True)


def script_for_stance(world: DrawerWorld, base: DrawerScript = BASE_SCRIPT) -> DrawerScript:
    """``base`` with the handle where it is from the world's stance (measured once per
    placement, as an operator would by teleoperating onto it). The hand starts from one
    body-frame pose on every seed (in front of where the handle is when the body stands at
    its nominal place), as the paper's robot did after walking to a random pose: the handle's
    offset from the start varies with the stance, so a policy must see where it is."""
    xyz, rpy = world.handle_pose_in_body()
    nominal = world.handle_closed_world - np.array([0.0, 0.0, BODY_HEIGHT_M])
    start = nominal + np.asarray(base.start_offset_m)
    return dataclasses.replace(base, handle_xyz_m=tuple(float(v) for v in xyz),
                               handle_rpy_rad=tuple(float(v) for v in rpy),
                               start_xyz_m=tuple(float(v) for v in start),
                               start_rpy_rad=(0.0, 0.0, 0.0))


class DrawerSim:
    """``with DrawerSim() as sim:`` a simulated Spot in front of the cabinet."""

    def __init__(self, image_hw: tuple[int, int] = (224, 224), seed: int = 0,
                 camera_hz: float = 10.0) -> None:
        self.world = DrawerWorld(*image_hw, camera_hz=camera_hz, sources=(CAMERA_SOURCE,),
                                 seed=seed)
        self._password = secrets.token_urlsafe(18)
        self.server = SpotStandIn(username="operator", password=self._password,
                                  image_hw=image_hw, world=self.world,
                                  **drawer_robot_options())
        self.credentials_file: Path | None = None

    def __enter__(self) -> DrawerSim:
        self.server.start()
        path = Path(self.server._tmp.name) / "credentials"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"BOSDYN_CLIENT_USERNAME=operator\nBOSDYN_CLIENT_PASSWORD={self._password}\n")
        self.credentials_file = path
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    def config(self, **overrides: object):
        """A ``SpotConfig`` aimed at the simulator (5 Hz, the body colour camera as
        ``front``); ``overrides`` replace any field."""
        from theia_ros.robots.spot.config import SpotConfig

        values: dict[str, object] = {
            "hostname": "127.0.0.1", "port": self.server.port,
            "robot_cert": self.server.cert_path, "credentials_file": str(self.credentials_file),
            "client_name": "theia-ros-drawer-sim", "cameras": {"front": CAMERA_SOURCE},
            "rate_hz": 5.0, "rpc_timeout_s": 5.0, "power_timeout_s": 10.0,
            "lease_keepalive_s": 0.5,
        }
        values.update(overrides)
        return SpotConfig(**values)  # type: ignore[arg-type]

    # -- what an operator does between episodes ----------------------------------------------
    def reset(self, seed: int) -> None:
        """Close the drawer and place the standing robot at the seed's pose."""
        with self.server.state.lock:
            self.world.reset(seed)

    def script_for(self, base: DrawerScript = BASE_SCRIPT) -> DrawerScript:
        """:func:`script_for_stance` of the current stance."""
        with self.server.state.lock:
            return script_for_stance(self.world, base)

    @property
    def opening_m(self) -> float:
        with self.server.state.lock:
            return self.world.opening_m

    @property
    def success(self) -> bool:
        return self.opening_m >= SUCCESS_OPEN_M


SEEDS_FILE = "demo_seeds.json"  # {"seeds": [saved], "attempts": n}: what a resume needs


def record_drawer_demos(out: str | Path, episodes: int, *, first_seed: int = 0,
                        image_hw: tuple[int, int] = (224, 224), progress: bool = True):
    """Record (or finish recording) ``episodes`` successful scripted drawer openings through
    ``SpotAdapter`` against the simulator. Attempt ``i`` uses scene seed ``first_seed + i``;
    failures are discarded. The seeds used so far are kept in ``<out>/demo_seeds.json``, so
    a re-run after an interruption continues with the next seed instead of adding another
    ``episodes``. Returns the ``SpotRecordResult`` of this call (None when nothing was left
    to record)."""
    from theia_ros.atomic import atomic_write_json
    from theia_ros.dataset import EpisodeDataset
    from theia_ros.dataset.layout import INFO_PATH
    from theia_ros.errors import TheiaError
    from theia_ros.record.spot import record_spot

    out = Path(out)
    seeds_path = out / SEEDS_FILE
    state = json.loads(seeds_path.read_text()) if seeds_path.exists() else \
        {"seeds": [], "attempts": 0}
    saved = EpisodeDataset(out).num_episodes if (out / INFO_PATH).exists() else 0
    if saved == len(state["seeds"]) + 1:  # killed between a save and the seeds file
        state["seeds"].append(first_seed + state["attempts"])
        state["attempts"] += 1
        atomic_write_json(seeds_path, state)
    if saved != len(state["seeds"]):
        raise TheiaError(f"{out}: {saved} episodes but {seeds_path.name} lists "
                         f"{len(state['seeds'])} seeds; not a drawer demo dataset, use a new "
                         "output folder")
    if saved >= episodes:
        return None
    start = first_seed + state["attempts"]

    def noted(seed: int, kept: bool) -> None:
        state["attempts"] = seed - first_seed + 1
        if kept:
            state["seeds"].append(seed)
        atomic_write_json(seeds_path, state)

    with DrawerSim(image_hw=image_hw, seed=start) as sim:
        def prepare(number: int) -> DrawerScript:
            sim.reset(start + number)
            return sim.script_for()

        return record_spot(sim.config(), out, episodes - saved, script=sim.script_for(),
                           seed=start, prepare_episode=prepare,
                           judge=lambda _policy: sim.success, keep_failures=False,
                           progress=progress, on_attempt=noted)
