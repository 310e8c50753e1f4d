"""`theia distill prepare | stats | extract | train` end to end, in-process, tiny teachers."""

from __future__ import annotations

import numpy as np
import torch
from helpers_distill import write_images

from policies.checkpoint import load_encoder
from theia_ros.cli import main
from training.distill.stats import TeacherStats

torch.set_num_threads(1)


def test_cli_pipeline(tmp_path, capsys):
    write_images(tmp_path / "src", 26, corrupt=2)
    assert main(["distill", "prepare", "--src", str(tmp_path / "src"), "--out",
                 str(tmp_path / "img"), "--shard-size", "16", "--workers", "1"]) == 0
    assert "26 images in 2 shards; skipped 2 unreadable" in capsys.readouterr().out

    common = ["--images", str(tmp_path / "img"), "--tiny-teachers", "--teachers", "c,v",
              "--batch-size", "8", "--no-progress"]
    for rank in (0, 1):
        assert main(["distill", "stats", *common, "--rank", str(rank), "--world-size", "2",
                     "--out", str(tmp_path / f"part{rank}.safetensors")]) == 0
    assert main(["distill", "stats", "--merge", str(tmp_path / "part0.safetensors"),
                 str(tmp_path / "part1.safetensors"), "--out",
                 str(tmp_path / "stats.safetensors")]) == 0
    assert main(["distill", "stats", *common, "--out", str(tmp_path / "one.safetensors")]) == 0
    merged, one = (TeacherStats.load(tmp_path / n) for n in ("stats.safetensors",
                                                             "one.safetensors"))
    for hub in one.teachers:
        np.testing.assert_allclose(merged.parts[hub].mean, one.parts[hub].mean, rtol=1e-6,
                                   atol=1e-7)

    assert main(["distill", "extract", *common, "--stats", str(tmp_path / "stats.safetensors"),
                 "--out", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{images: {tmp_path / 'img'}, stats: {tmp_path / 'stats.safetensors'}"
                   f", cache: {tmp_path / 'cache'}, val_images: 2, chunk: 4}}\n"
                   "model: {embed_dim: 32, depth: 1, num_heads: 2, teachers: 'c,v', "
                   "tiny_teachers: true}\n")
    assert main(["distill", "train", "--config", str(cfg), f"train.out={tmp_path / 'run'}",
                 "train.epochs=1", "train.batch_size=8", "train.progress=false",
                 "train.tensorboard=false"]) == 0
    assert "encoder checkpoint:" in capsys.readouterr().out
    assert load_encoder(tmp_path / "run" / "final").config.depth == 1
    # a cache built for c,v refuses a run asking for c only
    assert main(["distill", "train", "--config", str(cfg), f"train.out={tmp_path / 'run2'}",
                 "model.teachers=c"]) == 2
    assert "cache built for teachers" in capsys.readouterr().err
