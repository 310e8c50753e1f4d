"""``theia demo --task spot_drawer``: record -> train diffusion -> export -> 5 Hz loop -> report.

The paper's Spot task (App. D.3.2) on the simulated Spot (``theia_ros.sim.spot``, a stand-in,
not Boston Dynamics' software), every robot call through ``SpotAdapter`` and ``bosdyn-client``:

    <out>/dataset/   successful scripted demonstrations (``record_drawer_demos``)
    <out>/policy/    diffusion policy on frozen features (Table 10: batch 32, Adam 3e-4 cosine,
                     3000 iterations, MSE, horizon 4)
    <out>/bundle/    the exported bundle
    <out>/rollout.mp4, rollout.png (frames of the first trial), report.json, report.png
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from theia_ros.atomic import atomic_write_json
from training.demo.report import rate_entry
from training.demo.stages import StageBook, StageRunner

EVAL_FIRST_SEED = 10_000


@dataclass(frozen=True)
class SpotDemoConfig:
    demos: int = 50
    demo_seed: int = 0
    encoder: str = "theia_tiny"
    iters: int = 3000
    # a lighter U-Net than the library default (256, 512): 69 vs 141 ms a step on 2 cores
    down_dims: tuple[int, ...] = (128, 256)
    batch_size: int = 32
    lr: float = 3e-4
    horizon: int = 4
    eval_episodes: int = 20
    eval_seed: int = EVAL_FIRST_SEED
    max_steps: int = 45  # ~1.5 demonstrations' length (30 ticks at 5 Hz)
    replan_every: int = 3  # < horizon: the next plan runs while the chunk's last row plays
    async_planning: bool = True
    video_episodes: int = 2
    backend: str = "onnxruntime"
    threads: int = 2

    @classmethod
    def quick(cls, **overrides: Any) -> SpotDemoConfig:
        return replace(cls(demos=6, iters=150, eval_episodes=3, video_episodes=1), **overrides)


def spot_stage_keys(config: SpotDemoConfig) -> dict[str, dict[str, Any]]:
    """Stage name -> the settings its output depends on (each stage's includes the ones
    before it), so a re-run with other settings is refused instead of mixing them."""
    d = json.loads(json.dumps(asdict(config)))  # as stages.json stores it (lists)
    dataset = {k: d[k] for k in ("demos", "demo_seed")}
    policy = {**dataset, **{k: d[k] for k in ("encoder", "iters", "batch_size", "lr",
                                               "horizon", "down_dims")}}
    return {"dataset": dataset, "policy": policy, "bundle": dict(policy)}


def run_spot_demo(config: SpotDemoConfig, out: str | Path, *,
                  log: Callable[[str], None] = print, show_progress: bool = True
                  ) -> dict[str, Any]:
    from training.demo.pipeline import _export, _preload_torch_stack

    _preload_torch_stack()  # before MuJoCo's EGL context (see there)
    import torch

    torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", asdict(config))
    paths = {"dataset": out / "dataset", "policy": out / "policy", "bundle": out / "bundle"}
    t_start = time.perf_counter()
    runner = StageRunner(StageBook.load(out), spot_stage_keys(config), log)

    recorded: dict[str, Any] = {}

    def record() -> None:
        from theia_ros.dataset import EpisodeDataset
        from theia_ros.sim.spot.drawer_task import SEEDS_FILE, record_drawer_demos

        record_drawer_demos(paths["dataset"], config.demos, first_seed=config.demo_seed,
                            progress=show_progress)  # resumes an interrupted recording
        ds = EpisodeDataset(paths["dataset"])
        seeds = json.loads((paths["dataset"] / SEEDS_FILE).read_text())
        recorded.update(episodes=ds.num_episodes, attempts=seeds["attempts"],
                        seeds=seeds["seeds"], frames=ds.num_frames)
        log(f"  {ds.num_episodes} successful demos of {seeds['attempts']} attempts, "
            f"{ds.num_frames} frames")

    def train() -> None:
        from training.bc.config import TrainConfig
        from training.bc.trainer import train_policy

        cfg = TrainConfig(dataset=str(paths["dataset"]), out=str(paths["policy"]),
                          policy="diffusion", encoder=config.encoder, finetune=False,
                          horizon=config.horizon, iters=config.iters,
                          head={"down_dims": list(config.down_dims)},
                          batch_size=config.batch_size, lr=config.lr,
                          cache_dir=str(out / "cache" / "features"), checkpoint_every=500)
        res = train_policy(cfg, show_progress=show_progress)
        log(f"  {res.step} steps, train loss {res.train_loss:.4f}")

    def export() -> None:
        _export(paths, log)

    runner.run("dataset", paths["dataset"] / "meta" / "info.json", record)
    runner.run("policy", paths["policy"] / "policy.json", train)
    runner.run("bundle", paths["bundle"] / "bundle.yaml", export)

    from theia_ros.runtime import load

    runtime = load(paths["bundle"], backend=config.backend, threads=config.threads)
    seeds = list(range(config.eval_seed, config.eval_seed + config.eval_episodes))
    t0 = time.perf_counter()
    try:
        evaluation = evaluate_drawer(runtime, seeds, out, max_steps=config.max_steps,
                                     replan_every=config.replan_every,
                                     async_planning=config.async_planning,
                                     video_episodes=config.video_episodes, log=log)
    finally:
        runtime.close()
    stages = {name: w["wall_s"] for name, w in runner.walls.items()}
    stages["evaluate"] = time.perf_counter() - t0
    report = {
        "title": "Spot drawer (simulated Spot, real bosdyn-client): diffusion policy, 5 Hz",
        "config": asdict(config),
        "recorded": recorded,
        **evaluation,
        "stage_wall_s": stages,
        "stages": runner.walls,
        "total_wall_s": time.perf_counter() - t_start,
    }
    atomic_write_json(out / "report.json", report)
    log(summary_line(report) + "; stages " + ", ".join(f"{k} {v:.0f} s"
                                                       for k, v in stages.items()))
    return report


def evaluate_drawer(runtime, seeds: list[int], out: Path, *, max_steps: int = 45,
                    replan_every: int = 3, async_planning: bool = True,
                    video_episodes: int = 2, log: Callable[[str], None] = print
                    ) -> dict[str, Any]:
    """Closed-loop trials of ``runtime`` (a bundle or policy-folder runtime) on ``seeds``
    through ``SpotAdapter``; writes ``rollout.mp4``, ``rollout.png`` and ``report.png`` under
    ``out`` and returns the report's evaluation part."""
    from theia_ros.control import ChunkingConfig
    from theia_ros.evaluate.spot_drawer import run_drawer_episodes
    from training.demo.spot_report import write_frame_strip, write_spot_plot

    def show(ep) -> None:
        log(f"  seed {ep.seed}: {'OPEN  ' if ep.success else 'closed'} drawer "
            f"{100 * ep.opening_m:5.1f} cm (max {100 * ep.max_opening_m:5.1f}), "
            f"{ep.steps} steps, {ep.holds} holds" + (f", fault {ep.fault}" if ep.fault else ""))

    log(f"[evaluate] {len(seeds)} held-out seeds, 5 Hz through SpotAdapter ...")
    video = out / "rollout.mp4"
    run = run_drawer_episodes(runtime, seeds, max_steps=max_steps,
                              chunking=ChunkingConfig(replan_every=replan_every,
                                                      async_planning=async_planning),
                              video=str(video) if video_episodes else None,
                              video_episodes=video_episodes, on_episode=show,
                              make_history=runtime.make_history)
    tick_ms = [round(1e3 * t, 2) for t in run.tick_s]
    evaluation: dict[str, Any] = {
        "settings": {"seeds": [seeds[0], seeds[-1]], "max_steps": max_steps,
                     "replan_every": replan_every, "async_planning": async_planning,
                     "backend": runtime.backend},
        "success": rate_entry(sum(e.success for e in run.episodes), len(run.episodes)),
        "per_episode": [asdict(e) for e in run.episodes],
        "faulted": sum(e.fault is not None for e in run.episodes),
        "timing": run.timing(),
        "overruns": run.overruns,
        "video": str(video) if video_episodes and video.exists() else None,
        "tick_ms": tick_ms,  # every control step, so the figure can be redrawn
    }
    plot = write_spot_plot(out / "report.png", evaluation, tick_ms)
    first = run.episodes[0] if run.episodes else None
    strip = (write_frame_strip(video, out / "rollout.png",
                               episode_frames=first.steps + first.holds)
             if evaluation["video"] and first is not None else None)
    evaluation["figures"] = [str(p) for p in (plot, strip) if p is not None]
    return evaluation


def summary_line(report: dict[str, Any]) -> str:
    s, t = report["success"], report["timing"]["tick_ms"]
    return (f"success {s['successes']}/{s['n']} (95 % CI {100 * s['ci95_low']:.0f}-"
            f"{100 * s['ci95_high']:.0f} %); control step p50 {t['p50'] or 0:.1f} ms p90 "
            f"{t['p90'] or 0:.1f} ms")
