"""``theia bench`` on a tiny exported bundle: every backend and the torch reference timed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_export import IMAGE_HW, make_bundle

from theia_ros.cli import bench as cli_bench_cli
from theia_ros.errors import TheiaError
from theia_ros.runtime import bench as cli_bench


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bench"), "cnn_mlp")[1]


def test_camera_jpeg_decodes_to_the_camera_size() -> None:
    jpeg = np.frombuffer(cli_bench.camera_jpeg(IMAGE_HW), np.uint8)
    img = cli_bench.decode_rgb(jpeg)
    assert img.shape == (*IMAGE_HW, 3) and img.dtype == np.uint8
    assert img.std() > 10  # textured, so decoding is not trivially cheap
    assert cv2.imdecode(jpeg, cv2.IMREAD_COLOR) is not None


def test_bench_bundle_times_backends_and_reference(bundle: Path) -> None:
    timings = cli_bench.bench_bundle(bundle, ["onnxruntime", "torch"], iters=3, threads=1)
    rows = [t.summary() for t in timings]
    assert {r["backend"] for r in rows} == {"onnxruntime", "torch (bundle graphs)",
                                           cli_bench.REFERENCE}
    for r in rows:
        assert r["n"] >= 3 and r["model"] == "theia_test" and r["head"] == "cnn_mlp"
        for part in ("encoder", "head", "step"):
            assert 0 < r[f"{part}_p50_ms"] <= r[f"{part}_p90_ms"] <= r[f"{part}_p99_ms"]
    cli_bench.add_speedups(rows)
    ref = next(r for r in rows if r["backend"] == cli_bench.REFERENCE)
    assert ref["step_speedup"] == pytest.approx(1.0)
    table = cli_bench.format_table(rows)
    assert "onnxruntime" in table and "step p50/p90/p99 ms" in table


def test_bench_cli_json(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli_bench_cli.add_arguments(parser)
    args = parser.parse_args(["--bundle", str(bundle), "--iters", "2", "--json",
                              "--backend", "onnxruntime", "--threads", "1"])
    assert cli_bench_cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in report["rows"]] == ["onnxruntime", cli_bench.REFERENCE]
    assert report["rows"][0]["step_speedup"] > 0


def test_measurements_are_interleaved_call_by_call() -> None:
    """Every (backend, part) is timed once per round, in a rotating order, so a burst of
    background load cannot land on one part's block of consecutive calls."""
    calls: list[tuple[str, str]] = []

    def fake_timer(fn, n):  # records the call order instead of timing (no clock involved)
        fn()
        return [float(len(calls))] * n

    runners = {b: {part: (lambda b=b, part=part: calls.append((b, part)))
                   for part in cli_bench.PARTS} for b in ("onnxruntime", cli_bench.REFERENCE)}
    out = cli_bench.interleaved(runners, 12, fake_timer)
    per_round = len(runners) * len(cli_bench.PARTS)
    assert len(calls) == 12 * per_round and all(len(v) == 12 for v in out.values())
    rounds = [calls[i:i + per_round] for i in range(0, len(calls), per_round)]
    assert all(sorted(r) == sorted(rounds[0]) for r in rounds)  # each key once per round
    firsts = {r[0] for r in rounds}
    assert len(firsts) == per_round  # the order rotates: every key leads some round
    # positions of one key spread over the run: no two samples of it are adjacent calls
    enc = [i for i, c in enumerate(calls) if c == (cli_bench.REFERENCE, "encoder")]
    assert min(np.diff(enc)) > 1


def test_encoder_slower_than_its_step_is_flagged() -> None:
    ok = {"model": "theia_tiny", "backend": "onnxruntime", "encoder_p50_ms": 30.0,
          "step_p50_ms": 34.0}
    noisy = {"model": "theia_tiny", "backend": cli_bench.REFERENCE, "encoder_p50_ms": 459.6,
             "step_p50_ms": 144.9}
    lines = cli_bench.consistency_lines([ok, noisy])
    assert len(lines) == 1 and "torch-eager" in lines[0] and "459.6" in lines[0]


def test_targets_are_judged_for_onnxruntime_cnn_mlp_rows() -> None:
    rows = [{"model": "theia_tiny", "head": "cnn_mlp", "backend": "onnxruntime",
             "step_p50_ms": 30.0, "step_speedup": 1.2},
            {"model": "theia_base", "head": "cnn_mlp", "backend": "onnxruntime",
             "step_p50_ms": 300.0, "step_speedup": 2.0},
            {"model": "theia_base", "head": "cnn_mlp", "backend": "torch-eager",
             "step_p50_ms": 600.0, "step_speedup": 1.0}]
    tiny, base = cli_bench.target_lines(rows)
    assert "30.0 ms <= 40 ms: met" in tiny and "1.20x vs torch eager >= 1.5x: MISSED" in tiny
    assert "300.0 ms <= 250 ms: MISSED" in base and "2.00x" in base and "met" in base


def test_bad_bench_arguments(bundle: Path) -> None:
    parser = argparse.ArgumentParser()
    cli_bench_cli.add_arguments(parser)
    with pytest.raises(TheiaError, match="unknown"):
        cli_bench_cli.main(parser.parse_args(["--bundle", str(bundle), "--backend", "cuda"]))
    with pytest.raises(TheiaError, match="--sizes"):
        cli_bench_cli.main(parser.parse_args(["--sizes", "huge"]))
