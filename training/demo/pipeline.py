"""``theia demo`` end to end: record -> train -> export -> evaluate at 5 Hz -> report.

Layout of the output directory::

    <out>/dataset/        scripted demonstrations (LeRobot v3, theia_ros.dataset)
    <out>/policy/         the CNN-MLP policy checkpoint (policy.json, model.safetensors)
    <out>/bundle/         the exported bundle (ONNX + bundle.yaml)
    <out>/rollout.mp4     held-out episodes with the door stage drawn on them
    <out>/report.json     everything the printed report says, plus per-episode results
    <out>/report.png      success per stage (Wilson bars) and control-step times
    <out>/config.json     the effective demo configuration
    <out>/stages.json     finished stages (skipped on a re-run with the same settings)

A ``--fast`` evaluation (no real-time pacing, no latency figures) writes ``report-fast.json``,
``report-fast.png``, ``rollout-fast.mp4`` and ``config-fast.json`` instead, so re-evaluating
never overwrites the real-time run's report and its latency numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from theia_ros.atomic import atomic_write_json
from training.demo.config import DemoConfig, stage_keys
from training.demo.report import format_report, rate_entry, write_plot
from training.demo.stages import StageBook, StageRunner


def _preload_torch_stack() -> None:
    """Import torch's compiler stack before MuJoCo opens an EGL context.

    Importing ``triton`` (pulled in lazily by ``torch._dynamo`` via timm/torchvision and the
    ONNX exporter) after an EGL context exists segfaults on these machines (Mesa EGL), so
    the training side is imported first.
    """
    import timm  # noqa: F401
    import torch._dynamo  # noqa: F401


def eval_outputs(out: Path, fast: bool) -> dict[str, Path]:
    """Files one evaluation writes; a ``--fast`` one gets its own names (see module doc)."""
    tag = "-fast" if fast else ""
    return {"config": out / f"config{tag}.json", "report": out / f"report{tag}.json",
            "plot": out / f"report{tag}.png", "video": out / f"rollout{tag}.mp4"}


def run_demo(config: DemoConfig, out: str | Path, *, log: Callable[[str], None] = print,
             show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns the report (also written as JSON)."""
    _preload_torch_stack()
    import torch

    torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = eval_outputs(out, config.fast)
    atomic_write_json(files["config"], config.to_dict())
    paths = {"dataset": out / "dataset", "policy": out / "policy", "bundle": out / "bundle"}
    t_start = time.perf_counter()
    stages = StageRunner(StageBook.load(out), stage_keys(config), log)
    stages.run("dataset", paths["dataset"],
               lambda: _record(config, paths, log, show_progress))
    stages.run("policy", paths["policy"] / "policy.json",
               lambda: _train(config, paths, out / "cache" / "features", log, show_progress))
    stages.run("bundle", paths["bundle"] / "bundle.yaml", lambda: _export(paths, log))

    log(f"[evaluate] {config.eval_episodes} held-out episodes "
        f"({'fast' if config.fast else 'real-time'} {5:g} Hz loop, {config.backend}) ...")
    t0 = time.perf_counter()
    evaluation, tick_ms = evaluate(config, paths["bundle"], files["video"], log)
    stages.walls["evaluate"] = {"wall_s": time.perf_counter() - t0, "skipped": False}
    report = _report(config, paths, files, evaluation, stages.walls,
                     time.perf_counter() - t_start)
    plot = write_plot(files["plot"], report, tick_ms)
    report["paths"]["plot"] = str(plot) if plot else None
    atomic_write_json(files["report"], report)
    log(format_report(report))
    return report


def _record(config: DemoConfig, paths: dict[str, Path], log: Callable[[str], None],
            show_progress: bool) -> None:
    from training.demo.record import record_demos

    res = record_demos(paths["dataset"], config.demos, first_seed=config.demo_seed,
                       noise=config.noise, cameras=config.cameras,
                       show_progress=show_progress, log=log)
    log(f"  {res.episodes} demos, {res.frames} frames ({res.attempts} expert attempts)")


def _train(config: DemoConfig, paths: dict[str, Path], cache: Path,
           log: Callable[[str], None], show_progress: bool) -> None:
    from training.bc.config import TrainConfig
    from training.bc.trainer import train_policy

    if _random_encoder(config):
        log(f"  encoder {config.encoder}: RANDOMLY INITIALISED (no pretrained weights "
            "here; pass --encoder <checkpoint> for a real Theia model)")
    cfg = TrainConfig(dataset=str(paths["dataset"]), out=str(paths["policy"]),
                      policy="cnn_mlp", encoder=config.encoder, finetune=config.finetune,
                      horizon=config.horizon, epochs=config.epochs, iters=config.iters,
                      batch_size=config.batch_size, lr=config.lr, cache_dir=str(cache),
                      seed=config.train_seed, checkpoint_every=100, cameras=config.cameras,
                      n_obs_steps=config.n_obs_steps)
    res = train_policy(cfg, show_progress=show_progress)
    val = f", val loss {res.val_loss:.4f}" if res.val_loss is not None else ""
    log(f"  {res.step} steps, train loss {res.train_loss:.4f}{val}")


def _export(paths: dict[str, Path], log: Callable[[str], None]) -> None:
    from training.export import ExportOptions, export_bundle

    export_bundle(paths["policy"], paths["bundle"],
                  ExportOptions(dataset=str(paths["dataset"]), overwrite=True),
                  log=lambda s: log(f"  {s}"))


def _random_encoder(config: DemoConfig) -> bool:
    """A named Theia size with no checkpoint file: random weights (none download here)."""
    from policies.checkpoint import is_registry_name

    return is_registry_name(config.encoder)


def _report(config: DemoConfig, paths: dict[str, Path], files: dict[str, Path],
            evaluation: dict[str, Any], stages: dict[str, dict[str, Any]],
            total_wall_s: float) -> dict[str, Any]:
    seeds_file = paths["dataset"] / "demo_seeds.json"
    demo_seeds = json.loads(seeds_file.read_text())["seeds"] if seeds_file.exists() else []
    random_init = _random_encoder(config)
    return {
        "title": "record -> train -> export -> run at 5 Hz (MuJoCo WidowX 250s, door)",
        "encoder": (f"{config.encoder} ({'fine-tuned' if config.finetune else 'frozen'}"
                    + (", random init" if random_init else "") + ")"),
        "config": config.to_dict(),
        "demo_seeds": (f"{min(demo_seeds)}..{max(demo_seeds)}" if demo_seeds else "n/a"),
        "evaluation": evaluation,
        "stages": stages,
        "total_wall_s": total_wall_s,
        "paths": {"dataset": str(paths["dataset"]), "policy": str(paths["policy"]),
                  "bundle": str(paths["bundle"]),
                  "video": str(files["video"]) if files["video"].exists() else None,
                  "report": str(files["report"]), "plot": None},
    }


def evaluate(config: DemoConfig, bundle: Path, video: Path | None,
             log: Callable[[str], None] = print) -> tuple[dict[str, Any], list[float]]:
    """Run the bundle on held-out seeds through the control core; -> (summary, tick ms)."""
    from theia_ros.evaluate.rollout import RunSettings
    from theia_ros.runtime import load

    runtime = load(bundle, backend=config.backend, threads=config.threads)
    settings = RunSettings(rate_hz=float(runtime.meta.control_rate_hz),
                           max_steps=config.max_steps, replan_every=config.replan_every,
                           temporal_ensemble=config.temporal_ensemble,
                           ensemble_m=config.ensemble_m, fast=config.fast)
    seeds = list(range(config.eval_seed, config.eval_seed + config.eval_episodes))
    try:
        return evaluate_runtime(runtime, settings, seeds,
                                video if config.video_episodes else None,
                                config.video_episodes, log)
    finally:
        runtime.close()


def evaluate_runtime(runtime: Any, settings: Any, seeds: list[int], video: Path | None,
                     video_episodes: int, log: Callable[[str], None] = print
                     ) -> tuple[dict[str, Any], list[float]]:
    """Episodes of a loaded runtime (bundle or policy folder) on ``seeds``; -> (the report's
    ``evaluation`` section, control-step times in ms)."""
    from theia_ros.evaluate.rollout import run_bundle

    def show(ep) -> None:
        fault = f"  FAULT {ep.fault}" if ep.fault else ""
        log(f"  seed {ep.seed}: {ep.final_stage.lower():10s} door {ep.door_angle_deg:4.0f} deg, "
            f"{ep.steps} steps, {ep.wall_s:.1f} s{fault}")

    result = run_bundle(runtime, seeds, settings, video=video,
                        video_episodes=video_episodes, on_episode=show)
    n = len(result.episodes)
    summary = result.summary()
    evaluation = {
        "episodes": n,
        "seeds": seeds,
        "fast": settings.fast,
        "rate_hz": settings.rate_hz,
        "backend": runtime.backend,
        "cameras": list(runtime.meta.cameras),
        "n_obs_steps": runtime.meta.n_obs_steps,
        "settings": asdict(settings),
        "success": rate_entry(summary["success"], n),
        "stages": {"open": rate_entry(summary["reached_open"], n),
                   "fully_open": rate_entry(summary["reached_fully_open"], n)},
        "faulted": summary["faulted"],
        "latency": {"tick_ms": summary["tick_ms"],
                    "command_latency_ms": summary["command_latency_ms"],
                    "policy_ms": summary["policy_ms"], "overruns": summary["overruns"]},
        "per_episode": [asdict(e) | {"success": e.success} for e in result.episodes],
    }
    tick_ms = [] if settings.fast else [1e3 * s for s in result.tick_s]
    return evaluation, tick_ms
