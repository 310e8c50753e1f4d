"""``theia demo``: report maths (Wilson interval), stage skipping, presets, and (slow) the
quick demo end to end, twice, to see the second run skip the finished stages."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from theia_ros.errors import TheiaError
from training.cli import demo as demo_cli
from training.demo.config import DemoConfig, key_hash, stage_keys
from training.demo.pipeline import eval_outputs
from training.demo.report import (
    bar_label,
    format_report,
    plot_bars,
    rate_entry,
    wilson_interval,
    write_plot,
)
from training.demo.stages import STAGES_FILE, StageBook


# -- Wilson interval -------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (5, 10, 0.2366, 0.7634),  # textbook value (Brown, Cai & DasGupta 2001)
    (0, 2, 0.0, 0.6576),
    (10, 10, 0.7225, 1.0),
    (45, 50, 0.7864, 0.9565),
])
def test_wilson_interval_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_properties() -> None:
    for n in (1, 7, 50):
        prev_low = -1.0
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
            assert lo >= prev_low  # monotone in k
            prev_low = lo
            mirror = wilson_interval(n - k, n)
            assert mirror == pytest.approx((1 - hi, 1 - lo), abs=1e-12)  # symmetric
    narrow, wide = wilson_interval(25, 50), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]  # more episodes, tighter interval
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_rate_entry_and_report_text() -> None:
    e = rate_entry(9, 20)
    assert e["rate"] == pytest.approx(0.45) and e["ci95_low"] < 0.45 < e["ci95_high"]
    lat = {"p50": 80.0, "p90": 100.0, "p99": 150.0}
    report = {
        "title": "t", "encoder": "theia_tiny (frozen, random init)", "demo_seeds": "0..39",
        "evaluation": {"episodes": 20, "seeds": list(range(10_000, 10_020)), "fast": False,
                       "rate_hz": 5.0, "backend": "onnxruntime", "success": e,
                       "stages": {"open": rate_entry(12, 20), "fully_open": e},
                       "latency": {"tick_ms": lat, "command_latency_ms": lat,
                                   "policy_ms": lat, "overruns": 0}},
        "stages": {"dataset": {"wall_s": 0.0, "skipped": True},
                   "evaluate": {"wall_s": 120.0, "skipped": False}},
        "total_wall_s": 130.0,
        "paths": {"dataset": "d", "policy": "p", "bundle": "b", "video": "v.mp4",
                  "report": "r.json", "plot": None},
    }
    text = format_report(report)
    assert "9/20 = 45 % (95 % CI 26-66 %)" in text
    assert "12/20 = 60 %" in text
    assert "p50 80.0 ms, p90 100.0 ms, p99 150.0 ms" in text
    assert "dataset 0 s (skipped: done before)" in text and "v.mp4" in text
    report["evaluation"]["fast"] = True
    assert "not measured" in format_report(report)


def _evaluation(opened: int, fully: int, success: int, n: int) -> dict:
    return {"episodes": n, "rate_hz": 5.0, "success": rate_entry(success, n),
            "stages": {"open": rate_entry(opened, n), "fully_open": rate_entry(fully, n)}}


def test_report_plot_numbers_its_bars_and_does_not_repeat_success(tmp_path) -> None:
    same = plot_bars(_evaluation(15, 14, 14, 20))  # success == reached fully open
    assert [name for name, _ in same] == ["reached open", "reached fully open"]
    swung_back = plot_bars(_evaluation(3, 2, 1, 3))
    assert len(swung_back) == 3 and "success" in swung_back[-1][0]
    assert bar_label(rate_entry(14, 20)) == "14/20 = 70 %\nCI 48-85 %"
    from PIL import Image

    for name, ev, ticks in (("a.png", _evaluation(15, 14, 14, 20), [40.0, 52.0, 61.0]),
                            ("b.png", _evaluation(3, 2, 1, 3), [])):
        path = write_plot(tmp_path / name, {"evaluation": ev}, ticks)
        with Image.open(path) as img:
            assert img.size[0] > 600 and img.size[1] > 250


# -- stages ----------------------------------------------------------------------------------
def test_stage_book_skips_matching_and_refuses_changed_settings(tmp_path) -> None:
    cfg = DemoConfig()
    keys = stage_keys(cfg)
    out = tmp_path / "demo"
    output = out / "dataset"
    book = StageBook.load(out)
    assert not book.is_done("dataset", keys["dataset"], output)
    book.check_fresh("dataset", keys["dataset"], output)
    output.mkdir(parents=True)
    book.finish("dataset", keys["dataset"], 12.5)

    again = StageBook.load(out)  # from stages.json
    assert again.is_done("dataset", keys["dataset"], output)
    assert again.records["dataset"].wall_s == pytest.approx(12.5)
    more = stage_keys(cfg.with_overrides(demos=80))["dataset"]
    with pytest.raises(TheiaError, match="demos: 40 -> 80"):
        again.is_done("dataset", more, output)
    # the policy key does not depend on evaluation settings
    evald = stage_keys(cfg.with_overrides(eval_episodes=50, replan_every=2))
    assert key_hash(evald["policy"]) == key_hash(keys["policy"])
    assert key_hash(stage_keys(cfg.with_overrides(epochs=3))["policy"]) != \
        key_hash(keys["policy"])
    output.rmdir()  # output deleted by the user -> redo it
    assert not again.is_done("dataset", keys["dataset"], output)


def test_stage_book_refuses_foreign_or_mismatched_unfinished_output(tmp_path) -> None:
    out = tmp_path / "demo"
    book = StageBook.load(out)
    key = stage_keys(DemoConfig())["policy"]
    book.check_fresh("policy", key, out / "policy")
    book.check_fresh("policy", key, out / "policy")  # same settings: resume is fine
    other = stage_keys(DemoConfig(epochs=2))["policy"]
    with pytest.raises(TheiaError, match="other settings"):
        book.check_fresh("policy", other, out / "policy")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "x.txt").write_text("not from the demo")
    with pytest.raises(TheiaError, match="no stage record"):
        book.check_fresh("dataset", key, foreign)
    # a stage whose output is a file (the Spot demo's policy.json, bundle.yaml)
    with pytest.raises(TheiaError, match="no stage record"):
        book.check_fresh("bundle", key, foreign / "x.txt")
    (out / STAGES_FILE).write_text("{broken")
    with pytest.raises(TheiaError, match="unreadable"):
        StageBook.load(out)


def test_fast_evaluation_writes_beside_the_real_time_report(tmp_path) -> None:
    real, fast = eval_outputs(tmp_path, fast=False), eval_outputs(tmp_path, fast=True)
    assert real.keys() == fast.keys()
    assert real["report"].name == "report.json" and real["video"].name == "rollout.mp4"
    assert not set(real.values()) & set(fast.values())
    assert all(p.parent == tmp_path for p in fast.values())


# -- config / CLI ----------------------------------------------------------------------------
def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_presets_and_overrides() -> None:
    default = demo_cli.build_config(_args())
    assert default == DemoConfig()
    quick = demo_cli.build_config(_args("--quick", "--eval-episodes", "3", "--no-ensemble"))
    assert quick.eval_episodes == 3 and quick.demos == DemoConfig.quick().demos
    assert quick.temporal_ensemble is False and quick.demos < default.demos
    ft = demo_cli.build_config(_args("--finetune", "--iters", "50", "--encoder", "ckpt/x"))
    assert ft.finetune and ft.iters == 50 and ft.encoder == "ckpt/x"


@pytest.mark.parametrize("bad", [{"demos": 0}, {"replan_every": 11}, {"eval_seed": 5},
                                 {"lr": 0.0}, {"video_episodes": -1}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(TheiaError):
        DemoConfig(**bad)


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.slow
def test_quick_demo_end_to_end_then_skips_finished_stages(tmp_path, capsys) -> None:
    from theia_ros import cli
    from theia_ros.dataset import EpisodeDataset

    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    ev = report["evaluation"]
    assert ev["episodes"] == DemoConfig.quick().eval_episodes
    assert not ev["fast"] and ev["latency"]["tick_ms"]["p50"] > 0
    assert 0.0 <= ev["success"]["ci95_low"] <= ev["success"]["ci95_high"] <= 1.0
    assert not any(s["skipped"] for s in report["stages"].values())
    ds = EpisodeDataset(report["paths"]["dataset"])
    assert ds.num_episodes == DemoConfig.quick().demos
    assert all(e.success for e in ds.episodes)
    assert (out / "rollout.mp4").stat().st_size > 1000
    assert (out / "bundle" / "bundle.yaml").exists()
    text = capsys.readouterr().out
    assert "success" in text and "95 % CI" in text and "control step" in text

    first_bytes = {name: (out / name).read_bytes()
                   for name in ("report.json", "report.png", "rollout.mp4")}
    assert cli.main([*argv, "--eval-episodes", "1", "--fast"]) == 0  # re-evaluate only
    for name, data in first_bytes.items():  # the real-time run's report stays as it was
        assert (out / name).read_bytes() == data, name
    second = json.loads((out / "report-fast.json").read_text())
    assert [second["stages"][s]["skipped"] for s in ("dataset", "policy", "bundle")] == \
        [True, True, True]
    assert second["evaluation"]["episodes"] == 1 and second["evaluation"]["fast"]
    assert "skipped" in capsys.readouterr().out
    assert math.isfinite(second["total_wall_s"])
    assert (out / "report-fast.png").exists() and (out / "rollout-fast.mp4").exists()
    assert second["paths"]["report"].endswith("report-fast.json")


@pytest.mark.parametrize(("demo_seed", "demos", "eval_seed", "eval_episodes"), [
    (100, 5, 0, 500),   # the evaluation range contains every demo seed
    (0, 8, 20, 5),      # inside the recorder's retry range (up to 2 * demos + 11 seeds)
    (50, 10, 40, 11),   # overlaps at the start
])
def test_held_out_seeds_never_overlap_demo_seeds(demo_seed: int, demos: int, eval_seed: int,
                                                 eval_episodes: int) -> None:
    with pytest.raises(TheiaError, match="overlap"):
        DemoConfig(demo_seed=demo_seed, demos=demos, eval_seed=eval_seed,
                   eval_episodes=eval_episodes)
    DemoConfig(demo_seed=demo_seed, demos=demos, eval_seed=demo_seed + 2 * demos + 11,
               eval_episodes=eval_episodes)  # right after the last possible demo seed: fine
