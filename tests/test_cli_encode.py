"""``theia encode`` / ``theia analyze`` end to end through the real CLI dispatcher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_enc import write_published
from PIL import Image

from policies.checkpoint import load_encoder, save_theia
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.preprocess import load_image
from theia_ros.cli import main
from training.analysis import representation_measures

torch.set_num_threads(2)
SAMPLES = Path(__file__).resolve().parents[1] / "theia_ros" / "data" / "samples"


@pytest.fixture()
def samples() -> list[Path]:
    files = sorted(SAMPLES.glob("*.png"))
    assert 2 <= len(files) <= 6
    return files[:2]  # two are enough here; fewer forward passes on a shared CPU


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block encoder checkpoint in our format: cheap to build and run."""
    torch.manual_seed(0)
    return save_theia(TheiaEncoder(EncoderConfig(depth=2)),
                      tmp_path_factory.mktemp("ckpt") / "enc2")


def test_bundled_samples_are_small_rgb() -> None:
    files = sorted(SAMPLES.glob("*.png"))
    assert sum(f.stat().st_size for f in files) < 100_000
    for f in files:
        assert load_image(f).shape[2] == 3


def test_encode_random_tiny(tmp_path: Path, samples: list[Path], capsys) -> None:
    out = tmp_path / "feats.npz"
    rc = main(["encode", "--checkpoint", "theia_tiny", "--seed", "3", "--image",
               *map(str, samples), "--out", str(out), "--pca-png", str(tmp_path / "pca")])
    assert rc == 0
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out
    data = np.load(out)
    assert data["tokens"].shape == (len(samples), 196, 192)
    assert data["tokens"].dtype == np.float32
    assert list(data["names"]) == [str(p) for p in samples]
    assert bool(data["random_init"]) and str(data["checkpoint"]) == "theia_tiny"
    assert data["image_hw"].tolist() == [[240, 320]] * len(samples)
    # Same seed -> same encoder -> same tokens as the Python API.
    expected = load_encoder("theia_tiny", seed=3).encode(np.stack([load_image(p)
                                                                   for p in samples]))
    np.testing.assert_allclose(data["tokens"], expected.numpy(), atol=1e-5)
    pngs = sorted((tmp_path / "pca").glob("*_pca.png"))
    assert [p.name for p in pngs] == sorted(f"{p.stem}_pca.png" for p in samples)
    assert Image.open(pngs[0]).size == (448, 224)


def test_encode_takes_a_folder_of_images(tmp_path: Path, samples: list[Path], capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in samples:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "f.npz"
    assert main(["encode", "--checkpoint", "theia_tiny", "--image", str(folder), "--out",
                 str(out)]) == 0
    data = np.load(out)
    assert list(data["names"]) == [str(folder / p.name) for p in samples]
    assert data["tokens"].shape[0] == len(samples)
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["encode", "--checkpoint", "theia_tiny", "--image", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "g.npz")]) == 2
    assert "no image files" in capsys.readouterr().err


def test_encode_published_checkpoint_dir(tmp_path: Path, samples: list[Path], capsys) -> None:
    write_published(tmp_path / "ckpt", "tiny", ["facebook/dinov2-large"], seed=5)
    out = tmp_path / "f.npz"
    assert main(["encode", "--checkpoint", str(tmp_path / "ckpt"), "--image", str(samples[0]),
                 "--out", str(out)]) == 0
    assert "RANDOMLY" not in capsys.readouterr().out
    data = np.load(out)
    assert not bool(data["random_init"])
    expected = load_encoder(tmp_path / "ckpt").encode(load_image(samples[0]))
    np.testing.assert_allclose(data["tokens"], expected.numpy(), atol=1e-5)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"this is not an image", "cannot read image"),
    ("truncated", "cannot read image"),
])
def test_encode_bad_image_writes_nothing(tmp_path: Path, samples: list[Path], capsys,
                                         content: bytes | str, message: str) -> None:
    bad = tmp_path / "bad.png"
    if content == "truncated":
        data = samples[0].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(content)
    out = tmp_path / "out" / "feats.npz"
    rc = main(["encode", "--checkpoint", "theia_tiny", "--image", str(samples[0]), str(bad),
               "--out", str(out), "--pca-png", str(tmp_path / "pca")])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and str(bad) in err and message in err
    assert not out.exists() and not (tmp_path / "pca").exists()


def test_encode_missing_key_and_bad_out(tmp_path: Path, samples: list[Path], capsys) -> None:
    save_theia(TheiaEncoder(EncoderConfig(depth=1)), tmp_path / "enc")
    weights = tmp_path / "enc" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    sd = load_file(str(weights))
    del sd["encoder.backbone.blocks.0.mlp.fc1.bias"]
    save_file(sd, str(weights))
    rc = main(["encode", "--checkpoint", str(tmp_path / "enc"), "--image", str(samples[0]),
               "--out", str(tmp_path / "f.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing key 'encoder.backbone.blocks.0.mlp.fc1.bias'" in err
    assert not (tmp_path / "f.npz").exists()
    rc = main(["encode", "--checkpoint", "theia_tiny", "--image", str(samples[0]),
               "--out", str(tmp_path / "f.txt")])
    assert rc == 2 and "expected a .npz" in capsys.readouterr().err


def test_analyze_samples(tmp_path: Path, samples: list[Path], small_ckpt: Path, capsys
                         ) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    for p in samples:
        shutil.copy(p, images / p.name)
    # a grey image and a non-image file: grey is converted, the text file is ignored
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (48, 1)), "L").save(images / "g.png")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "analysis"
    assert main(["analyze", "--checkpoint", str(small_ckpt), "--images", str(images),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "norm_entropy_nats" in printed
    report = json.loads((out / "metrics.json").read_text())
    # untrained final LayerNorm: every token norm is sqrt(C), and the output says so
    assert report["measures"]["norms_constant"] and "LayerNorm" in report["note"]
    assert "NOTE: every token has the same L2 norm" in printed
    assert report["random_init"] is False and report["measures"]["num_images"] == 3
    assert report["measures"]["norm_entropy_bins"] == 100
    assert len(list((out / "norm_maps").glob("*_norm.png"))) == 3
    # The written measures are those of the encoder's tokens.
    paths = sorted(p for p in images.iterdir() if p.suffix == ".png")
    encoder = load_encoder(small_ckpt)
    tokens = torch.cat([encoder.encode(load_image(p)) for p in paths]).numpy()
    measures = representation_measures(tokens)
    for key in ("norm_entropy_nats", "pca_evr_auc", "cosine_to_mean", "norm_mean"):
        assert report["measures"][key] == pytest.approx(measures[key], rel=1e-4, abs=1e-6)


def test_analyze_empty_dir(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    rc = main(["analyze", "--checkpoint", "theia_tiny", "--images", str(tmp_path / "empty"),
               "--out", str(tmp_path / "a")])
    assert rc == 2 and "no image files" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
