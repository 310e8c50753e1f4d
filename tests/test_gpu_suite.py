"""The GPU suite's CPU dry run: every row present and sane, without the packages the GPU
machine lacks; the batch search and the benchmarked DDIM loop checked on their own."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_common import largest_batch  # noqa: E402
from benchmarks.gpu_distill import MODES, ROW_NAMES  # noqa: E402
from benchmarks.gpu_inference import MODELS, VARIANTS, DiffusionStep  # noqa: E402

# Not on the GPU machine's image (or not wanted there): importing any of them fails the run.
BLOCKED = ("diffusers", "onnx", "onnxruntime", "onnxscript", "tensorrt", "cv2", "pyarrow",
           "av", "mujoco", "rclpy", "bosdyn", "pydantic", "matplotlib", "tensorboard")

# A blocked module is found without an origin (so probes that only look, like Dynamo's
# skip list, pass) but importing it fails.
_RUNNER = """
import importlib.abc, importlib.machinery, runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Absent(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"{spec.name} is not on the GPU machine", name=spec.name)
    def exec_module(self, module):
        pass
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, Absent(), origin=None)
        return None
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gpu_suite") / "quick.json"
    cmd = [sys.executable, "-c", _RUNNER, ",".join(BLOCKED), str(ROOT / "benchmarks" /
                                                                   "gpu_suite.py"),
           "--quick", "--json", str(out), "--peak-tflops", "0.01"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "inference, batch 1" in proc.stdout  # the table was printed
    return json.loads(out.read_text())


def test_quick_distill_rows(quick_result: dict) -> None:
    rows = quick_result["distill"]
    assert [r["mode"] for r in rows] == list(MODES)
    assert [r["name"] for r in rows] == [ROW_NAMES[m] for m in MODES]
    for r in rows:
        assert r["status"] == "ok"
        assert r["batch"] >= 2 and r["steps"] >= 1
        assert r["images_per_s"] > 0 and math.isfinite(r["images_per_s"])
        assert r["flops_per_image"] > 0 and 0 < r["mfu"] < 1e4
        assert all(v >= 0 and math.isfinite(v) for v in r["split_ms"].values())
        assert r["split_ms"]["student"] > 0
    by_mode = {r["mode"]: r for r in rows}
    assert by_mode["reference"]["vs_reference"] == pytest.approx(1.0)
    assert by_mode["on the fly"]["split_ms"]["teachers"] > 0
    assert by_mode["cache"]["split_ms"]["teachers"] == 0
    # the teachers' FLOPs are counted on top of the student's
    assert by_mode["on the fly"]["flops_per_image"] > by_mode["cache"]["flops_per_image"]
    meta = quick_result["meta"]["distill"]
    assert meta["teacher_gflops_per_image"] > 0 and meta["data"]["images"] >= 2
    # real sizes, counted on the meta device: ViT-L/14 at 224 is ~81 GMACs, ViT-H/14 ~167
    real = meta["real_size_gflops_per_image"]
    assert 2 * (2 * 81 + 167) * 0.95 < real["teachers"] < 2 * (2 * 81 + 167) * 1.05
    assert 3 * 2 * 17.6 < real["student_step"] < real["teachers"]


def test_quick_inference_rows(quick_result: dict) -> None:
    rows = {(r["model"], r["variant"]): r for r in quick_result["inference"]}
    assert set(rows) == {(m, v) for m in MODELS for v in VARIANTS}
    for (model, variant), r in rows.items():
        if variant.startswith("cuda graph"):
            assert r["status"] == "skipped: needs CUDA"
            continue
        if variant.startswith("compile") and model != MODELS[0]:
            assert r["status"].startswith("skipped")
            continue
        assert r["status"] == "ok", (model, variant, r["status"])
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["iters"] >= 3
        assert math.isfinite(r["max_dev"]) and r["speedup_vs_fp32"] > 0
        if variant == "eager fp32":
            assert r["max_dev"] == 0.0
        else:  # half precision moves the actions a little, never wildly
            assert 0 < r["max_dev"] < 0.5, (model, variant, r["max_dev"])


def test_batch_search_backs_off_on_out_of_memory() -> None:
    calls: list[int] = []

    def trial(batch: int) -> None:
        calls.append(batch)
        if batch > 40:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    freed: list[int] = []
    best, tried = largest_batch(trial, 8, 1024, float("inf"), lambda: freed.append(1))
    assert calls == [8, 16, 32, 64, 48]
    assert best == 32 and [t["fits"] for t in tried] == [True, True, True, False, False]
    assert len(freed) == len(calls)  # memory handed back after every trial
    best, _ = largest_batch(lambda b: None, 8, 100, float("inf"))
    assert best == 64  # capped by the limit
    with pytest.raises(Exception, match="does not fit"):
        largest_batch(lambda b: trial(b * 100), 8, 64, float("inf"))


def test_benchmarked_ddim_loop_is_the_policys() -> None:
    """The unrolled loop the suite times gives the diffusers-sampled chunk of the head."""
    from policies.diffusion import DiffusionConfig, DiffusionHead

    cfg = DiffusionConfig(feature_dim=16, state_dim=7, proj_channels=8, image_cond_dim=16,
                          down_dims=(16, 32), n_groups=4, step_embed_dim=8,
                          num_inference_steps=10)
    step = DiffusionStep(cfg).eval()
    head = DiffusionHead(cfg).eval()
    head.cond_encoder.load_state_dict(step.cond_encoder.state_dict())
    head.denoiser.load_state_dict(step.denoiser.state_dict())
    fmap, state = torch.randn(2, 16, 14, 14), torch.rand(2, 7) * 2 - 1
    want = head.predict(fmap, state, torch.Generator().manual_seed(3))
    noise = torch.randn((2, cfg.horizon, cfg.action_dim), generator=torch.Generator()
                        .manual_seed(3))
    with torch.no_grad():
        got = step(fmap, state, noise)
    assert (got - want).abs().max().item() < 1e-5
    with torch.no_grad():
        assert (step(fmap, state, noise + 0.5) - want).abs().max().item() > 1e-3
