"""The Theia authors' published teacher-feature statistics: the real files (shapes, the variance
convention, decoding), download over a real HTTP server on loopback, the offline error, and
distillation / ``theia encode --decode`` with them.

The real files are a licensed test fixture outside the repository
(``../shared/reference/theia-feature-stats``); tests that need them skip where it is absent.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_distill import make_dataset, tiny_config, tiny_teachers
from helpers_enc import reference_translator, write_published

from policies.checkpoint import load_theia
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.teacher_specs import TEACHERS
from policies.translators import TheiaModel, teacher_shapes
from theia_ros.cli import main
from theia_ros.errors import TheiaError
from training.distill import published_stats as ps
from training.distill.stats import load_stats
from training.distill.trainer import train

torch.set_num_threads(1)
FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "theia-feature-stats"
SAMPLE = Path(__file__).resolve().parents[1] / "theia_ros" / "data" / "samples" / "drawer.png"
CDIV = ["openai/clip-vit-large-patch14", "facebook/dinov2-large",
        "google/vit-huge-patch14-224-in21k"]


@pytest.fixture(scope="module")
def stats_dir() -> Path:
    if not (FIXTURE / ps.file_names("facebook/dinov2-large")[1]).is_file():
        pytest.skip(f"the published statistics (a licensed fixture) are not at {FIXTURE}")
    return FIXTURE


def test_real_files_shapes_and_the_variance_convention(stats_dir: Path) -> None:
    mean_var = ps.read_published_stats(stats_dir)
    assert set(mean_var) == set(TEACHERS)  # all five teachers
    for hub, (mean, var) in mean_var.items():
        assert mean.shape == var.shape == (TEACHERS[hub].channels,)
        assert mean.dtype == var.dtype == np.float32 and (var > 0).all()
    stats = load_stats(stats_dir)
    assert stats.teacher_inputs == "published"
    stats.check(teacher_shapes("cddsv"), str(stats_dir))
    for hub, (mean, std) in stats.mean_std().items():
        var = np.load(stats_dir / ps.file_names(hub)[1])
        np.testing.assert_allclose(std, np.sqrt(var), rtol=1e-6)  # the file is the variance
        np.testing.assert_array_equal(mean, np.load(stats_dir / ps.file_names(hub)[0]))
    dino_std, dino_var = stats.mean_std()["facebook/dinov2-large"][1], mean_var[
        "facebook/dinov2-large"][1]
    assert not np.allclose(dino_std, dino_var, rtol=0.05)  # taking var as std would show


def test_decode_round_trip_with_the_real_statistics(stats_dir: Path) -> None:
    stats = load_stats(stats_dir, teachers=CDIV)
    torch.manual_seed(0)
    model = TheiaModel(TheiaEncoder(EncoderConfig(depth=1)), teacher_shapes("cdiv"),
                       stats=stats.torch_mean_std())
    rng = np.random.default_rng(0)
    for hub in CDIV:
        mean, var = (np.load(stats_dir / f) for f in ps.file_names(hub))
        raw = (mean + np.sqrt(var) * rng.standard_normal((2, 256, mean.shape[0]))).astype(
            np.float32)  # teacher-space features at the published scale
        normalised = (raw - mean) / np.sqrt(var)
        decoded = model.decode(hub, torch.from_numpy(normalised.astype(np.float32))).numpy()
        np.testing.assert_allclose(decoded, raw, rtol=1e-4, atol=1e-4 * np.abs(raw).max())


def test_encode_decodes_a_published_checkpoint(stats_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "theia-tiny-cdiv"
    _, sd = write_published(ckpt, "tiny", CDIV, seed=3)
    out = tmp_path / "f.npz"
    assert main(["encode", "--checkpoint", str(ckpt), "--image", str(SAMPLE), "--out",
                 str(out), "--decode"]) == 2
    assert "no feature statistics for" in capsys.readouterr().err and not out.exists()
    assert main(["encode", "--checkpoint", str(ckpt), "--image", str(SAMPLE), "--out",
                 str(out), "--decode", "--stats", str(stats_dir)]) == 0
    assert "decoded features of 3 teacher(s)" in capsys.readouterr().out
    data = np.load(out)
    tokens = torch.from_numpy(data["tokens"])
    for hub in CDIV:
        mean, var = (np.load(stats_dir / f) for f in ps.file_names(hub))
        with torch.no_grad():
            ref = reference_translator(sd, hub, tokens).numpy() * np.sqrt(var) + mean
        got = data[f"decoded/{hub}"]
        assert got.shape == (1, 256, TEACHERS[hub].channels) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.fixture()
def file_server(stats_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a copy of the published files."""
    root = tmp_path / "served"
    shutil.copytree(stats_dir, root)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_download_caches_and_fails_clearly_offline(file_server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = file_server
    cache = tmp_path / "cache"
    folder = ps.fetch_published_stats(["facebook/dinov2-large"], cache, base_url=url)
    names = ps.file_names("facebook/dinov2-large")
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    for name in names:
        assert (folder / name).read_bytes() == (served / name).read_bytes()
    # cached: no network needed any more
    closed = "http://127.0.0.1:9/feature_stats"  # nothing listens on the discard port
    assert ps.fetch_published_stats(["facebook/dinov2-large"], cache, base_url=closed) == cache
    # offline and not cached: one clear line naming the URL and the way out
    with pytest.raises(TheiaError, match=r"cannot download the published feature statistics "
                                         r"from http://127\.0\.0\.1:9/.*pass a folder"):
        ps.fetch_published_stats(["facebook/sam-vit-huge"], cache, base_url=closed,
                                 timeout_s=5)
    # ... also through `data.stats=published` (the default repository URL, made unreachable)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(ps, "PUBLISHED_URL", closed)
    with pytest.raises(TheiaError, match="cannot download"):
        load_stats("published", teachers=["facebook/dinov2-large"])
    # a file that is not the expected array is refused before it reaches the cache
    (served / names[0]).write_bytes(b"<html>rate limited</html>")
    with pytest.raises(TheiaError, match=r"not a readable \.npy array"):
        ps.fetch_published_stats(["facebook/dinov2-large"], tmp_path / "c2", base_url=url)
    assert not (tmp_path / "c2" / names[0]).exists()


def test_distill_with_published_format_statistics_needs_no_stats_pass(tmp_path: Path) -> None:
    """A folder in the published layout (here made for the tiny random teachers, whose widths
    differ from the real ones) replaces the stats file; the run records what it used."""
    make_dataset(tmp_path, n=24, shard_size=12, teachers=tiny_teachers(), cache=False)
    computed = load_stats(tmp_path / "stats.safetensors")
    folder = tmp_path / "published_layout"
    folder.mkdir()
    for hub, part in computed.parts.items():
        mean_file, var_file = ps.file_names(hub)
        np.save(folder / mean_file, part.mean.astype(np.float32))
        np.save(folder / var_file, (part.m2 / part.count).astype(np.float32))
    (tmp_path / "stats.safetensors").unlink()  # no statistics pass to fall back on
    cfg = tiny_config(tmp_path, "run", data={"stats": str(folder), "cache": None,
                                             "val_images": 0},
                      train={"epochs": 1, "max_steps": None})
    final = train(cfg)
    config = json.loads((final / "config.json").read_text())
    assert config["training"]["teacher_inputs"] == "published"
    assert config["training"]["feature_stats"] == str(folder)
    model = load_theia(final)
    var = np.load(folder / ps.file_names("facebook/dinov2-large")[1])
    torch.testing.assert_close(model.feature_stats["facebook/dinov2-large"].std,
                               torch.from_numpy(np.sqrt(var)))
    # the real published files do not fit these tiny teachers: one clear line
    if FIXTURE.is_dir():
        cfg = tiny_config(tmp_path, "run2", data={"stats": str(FIXTURE), "cache": None})
        with pytest.raises(TheiaError, match="has 1024 channels in the statistics, the "
                                             "teacher gives"):
            train(cfg)
