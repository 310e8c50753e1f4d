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
    printed = capsys.readouterr()
    assert "26 images in 2 shards; skipped 2 unreadable" in printed.out
    assert "28/28" in printed.err and "/32" not in printed.err  # 28 files, not 2 x 16 slots

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


def test_pretrained_teachers_offline_fail_at_once_and_name_the_flag(tmp_path, monkeypatch,
                                                                    capsys):
    """No network: one connection attempt, then a clear error naming --tiny-teachers, before
    any (large) teacher is built."""
    import huggingface_hub.constants as hub_constants

    from training.distill import teachers as teacher_mod

    write_images(tmp_path / "src", 4)
    assert main(["distill", "prepare", "--src", str(tmp_path / "src"), "--out",
                 str(tmp_path / "img"), "--workers", "1"]) == 0
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test (hub_online sets it)

    def no_build(*args, **kwargs):
        raise AssertionError("a teacher was built although its weights cannot be had")

    monkeypatch.setattr(teacher_mod, "build_teacher", no_build)
    capsys.readouterr()
    assert main(["distill", "stats", "--images", str(tmp_path / "img"), "--teachers", "c,v",
                 "--out", str(tmp_path / "s.safetensors"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "--tiny-teachers" in err
    assert "openai/clip-vit-large-patch14" in err and "google/vit-huge" in err
    assert hub_constants.HF_HUB_OFFLINE is True  # later hub calls in this process fail fast
    assert not (tmp_path / "s.safetensors").exists()


def test_hub_online_sees_a_listening_endpoint(monkeypatch):
    import socket

    import huggingface_hub.constants as hub_constants

    from training.hub import hub_online

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hub_constants, "ENDPOINT",
                            f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.delenv("HTTPS_PROXY", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        assert hub_online()
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        assert not hub_online()  # offline mode set by the user: not even tried
