"""Stage 1 of the demo: scripted door-opening demonstrations, recorded like a teleoperator's.

The scripted expert (``theia_ros.sim.expert.DoorExpert``) plays the person: each tick it
picks an EE delta, which goes through ``theia_ros.record.session.EpisodeRecorder`` - the same
safety filter and ``DatasetWriter`` path the keyboard recorder uses - so the dataset is
exactly what ``theia record`` would write. Only demonstrations where the door ends fully
open are kept (a failed one is discarded and the next seed tried). After the expert is done
the recorder keeps ``hold_frames`` still frames (zero deltas), the way a person pauses before
pressing save, so the policy also learns to stop.

Resumable: episodes are committed one by one; the seeds used so far are kept in
``<dataset>/demo_seeds.json`` and a re-run continues after the last one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from theia_ros.atomic import atomic_write_json as _write_json_atomic
from theia_ros.control.safety import SafetyFilter, SafetyLimits
from theia_ros.errors import TheiaError
from theia_ros.record.session import TASK, EpisodeRecorder, open_writer
from theia_ros.sim.success import DoorStage

SEEDS_FILE = "demo_seeds.json"


@dataclass
class RecordResult:
    episodes: int
    frames: int
    attempts: int  # expert episodes tried (failures are discarded)
    seeds: list[int]
    wall_s: float


def record_demos(root: str | Path, num_episodes: int, *, first_seed: int = 0,
                 image_size: int = 224, noise: bool = True, max_steps: int = 80,
                 cameras: tuple[str, ...] = ("front",),
                 hold_frames: int = 3, show_progress: bool = True,
                 log: Callable[[str], None] = print) -> RecordResult:
    """Record (or finish recording) ``num_episodes`` successful expert demos into ``root``.

    Seeds ``first_seed, first_seed + 1, ...`` (training scenes; evaluation uses others).
    ``noise`` adds the expert's small command jitter (more varied states to learn from).
    """
    from theia_ros.robots.sim import SimWidowX
    from theia_ros.sim.expert import DoorExpert

    if num_episodes < 1:
        raise TheiaError(f"demos: need at least 1 episode, got {num_episodes}")
    root = Path(root)
    t0 = time.perf_counter()
    writer = open_writer(root, fps=5, image_size=image_size, cameras=cameras)
    seeds_path = root / SEEDS_FILE
    state = json.loads(seeds_path.read_text()) if seeds_path.exists() else \
        {"seeds": [], "attempts": 0}
    if writer.num_episodes == len(state["seeds"]) + 1:
        # killed between an episode's commit and this file's update: that seed was saved
        state["seeds"].append(first_seed + state["attempts"])
        state["attempts"] += 1
        _write_json_atomic(seeds_path, state)
    if len(state["seeds"]) != writer.num_episodes:
        writer.close()
        raise TheiaError(f"{seeds_path}: lists {len(state['seeds'])} seeds but the dataset "
                         f"has {writer.num_episodes} episodes; not a demo dataset, use a "
                         "new --out")
    seed = first_seed + state["attempts"]
    robot = SimWidowX(seed=seed, image_size=image_size, cameras=tuple(cameras))
    safety = SafetyFilter(SafetyLimits.wx250s())
    rec = EpisodeRecorder(robot, writer, safety, task=TASK)
    bar = tqdm(total=num_episodes, initial=writer.num_episodes, desc="record demos",
               unit="ep", disable=not show_progress)
    try:
        robot.connect()
        while writer.num_episodes < num_episodes:
            if state["attempts"] > 2 * num_episodes + 10:
                raise TheiaError(f"the scripted expert failed too often ({state['attempts']} "
                                 f"attempts for {writer.num_episodes} demos)")
            robot.reset(seed)
            expert = DoorExpert(rng=np.random.default_rng(seed) if noise else None)
            rec.start()
            still = 0
            for _ in range(max_steps):
                if expert.done:
                    still += 1
                    if still > hold_frames:
                        break
                command = expert.act(robot.env)
                rec.step(command)
            state["attempts"] += 1
            if robot.success() >= DoorStage.FULLY_OPEN:
                rec.save(success=True)
                state["seeds"].append(seed)
                bar.update(1)
            else:
                rec.discard()
                log(f"demo seed {seed}: expert did not open the door fully; discarded")
            _write_json_atomic(seeds_path, state)
            seed += 1
    finally:
        bar.close()
        rec.discard()
        robot.disconnect()
        writer.close()
    return RecordResult(writer.num_episodes, writer.num_frames, state["attempts"],
                        list(state["seeds"]), time.perf_counter() - t0)
