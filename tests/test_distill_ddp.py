"""Two-process (torchrun + gloo) distillation: loss falls, a SIGKILLed run resumes to the
same weights as an uninterrupted one, and statistics all-reduce equals one pass.

Slow (~1-2 min on 2 shared cores: every torchrun start imports torch in two processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_distill import make_dataset, tiny_teachers
from safetensors.torch import load_file

from training.distill.stats import TeacherStats

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _torchrun(*args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "training.cli.distill", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _run(*args: str) -> str:
    proc = _torchrun(*args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def _train_args(tmp: Path, out: str, *extra: str) -> list[str]:
    return ["train", f"data.images={tmp / 'images'}", f"data.stats={tmp / 'stats.safetensors'}",
            f"data.cache={tmp / 'cache'}", "data.val_images=8", "data.chunk=4",
            "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
            "model.tiny_teachers=true", "optim.lr=2e-3", "optim.warmup_epochs=1",
            f"train.out={tmp / out}", "train.epochs=8", "train.batch_size=4",
            "train.ckpt_every_steps=2", "train.log_every_steps=1", "train.progress=false",
            "train.tensorboard=false", "train.device=cpu", "train.eval_every_steps=8", *extra]


def _descendants(pid: int) -> list[int]:
    """Child processes (recursively) of ``pid``, read from /proc (torchrun workers may sit
    in their own process group, so killpg would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ddp")
    make_dataset(tmp, n=40, shard_size=16, teachers=tiny_teachers())
    return tmp


def test_two_process_training_loss_falls_and_survives_sigkill(data):
    printed = _run(*_train_args(data, "full"))
    # one report from the main process, and no "stopped at ..." from the other one
    assert printed.count("encoder checkpoint:") == 1 and "stopped at" not in printed
    log = _log(data / "full" / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 33))  # 32 images / (4 x 2), 8 epochs
    losses = [r["loss"] for r in log]
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])
    assert (data / "full" / "final" / "model.safetensors").exists()
    assert len(_log(data / "full" / "eval.jsonl")) >= 2

    proc = _torchrun(*_train_args(data, "killed"))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [r["step"] for r in _log(data / "killed" / "train_log.jsonl")]
        if steps and steps[-1] >= 3:  # past the step-2 checkpoint, before the next
            break
        time.sleep(0.01)
    assert proc.poll() is None, "run ended before it could be killed"
    for pid in [proc.pid, *_descendants(proc.pid)]:  # the whole torchrun job, mid-run
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    killed_at = _log(data / "killed" / "train_log.jsonl")[-1]["step"]
    assert killed_at < 32 and not (data / "killed" / "final").exists()
    _run(*_train_args(data, "killed"))
    assert [r["step"] for r in _log(data / "killed" / "train_log.jsonl")] == list(range(1, 33))
    a = load_file(str(data / "full" / "final" / "model.safetensors"))
    b = load_file(str(data / "killed" / "final" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_stats_all_reduce_equals_a_single_pass(data):
    _run("stats", "--images", str(data / "images"), "--tiny-teachers", "--batch-size", "8",
         "--no-progress", "--out", str(data / "stats_2p.safetensors"))
    two = TeacherStats.load(data / "stats_2p.safetensors")
    one = TeacherStats.load(data / "stats.safetensors")
    assert two.images == one.images == 40
    # float32 teacher outputs differ in the last bits between batch sizes 8 and 16
    for hub in one.teachers:
        assert two.parts[hub].count == one.parts[hub].count
        np.testing.assert_allclose(two.parts[hub].mean, one.parts[hub].mean, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(two.parts[hub].std, one.parts[hub].std, rtol=1e-5)
