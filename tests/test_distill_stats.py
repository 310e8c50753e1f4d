"""Feature statistics: exact float64 accumulation, merging parts == one pass, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_distill import tiny_teachers, write_images

from theia_ros.errors import TheiaError
from training.distill.images import ImageShards, prepare_images
from training.distill.stats import (
    RunningStats,
    TeacherStats,
    compute_stats,
    merge_stats_files,
)


def test_running_stats_match_numpy_in_float64():
    rng = np.random.default_rng(0)
    # a large offset: naive sum-of-squares in float32 would cancel badly here
    data = rng.normal(1e4, 0.5, size=(3000, 5)) * np.array([1, 2, 3, 4, 5])
    rs = RunningStats(5)
    for part in np.array_split(data, 7):
        rs.update(torch.from_numpy(part.astype(np.float32)).reshape(-1, 1, 5))
    ref = data.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(rs.mean, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rs.std, ref.std(0), rtol=1e-9)
    assert rs.count == 3000


def test_merge_of_parts_equals_a_single_pass(tmp_path):
    rng = np.random.default_rng(1)
    feats = {"a/t1": rng.normal(2, 3, (40, 16, 4)), "b/t2": rng.normal(-1, 0.1, (40, 64, 2))}
    single = TeacherStats({"a/t1": 4, "b/t2": 2})
    single.update({h: torch.from_numpy(x) for h, x in feats.items()})
    parts = []
    for k, (lo, hi) in enumerate([(0, 5), (5, 23), (23, 40)]):
        part = TeacherStats({"a/t1": 4, "b/t2": 2})
        part.update({h: torch.from_numpy(x[lo:hi]) for h, x in feats.items()})
        part.save(tmp_path / f"part{k}.safetensors")
        parts.append(tmp_path / f"part{k}.safetensors")
    merged = merge_stats_files(parts)
    assert merged.images == single.images == 40
    for hub in feats:
        np.testing.assert_allclose(merged.parts[hub].mean, single.parts[hub].mean, rtol=1e-13,
                                   atol=1e-15)
        np.testing.assert_allclose(merged.parts[hub].m2, single.parts[hub].m2, rtol=1e-12)
        ref = feats[hub].reshape(-1, feats[hub].shape[-1])
        np.testing.assert_allclose(merged.mean_std()[hub][1], ref.std(0), rtol=1e-6)
    assert merged.hash() == single.hash()


def test_stats_over_ranks_merge_to_the_full_pass(tmp_path):
    write_images(tmp_path / "src", 20, flat=True)
    prepare_images(tmp_path / "src", tmp_path / "img", shard_size=8, progress=False)
    shards = ImageShards(tmp_path / "img")
    teachers = tiny_teachers("c,vit")
    full = compute_stats(shards, teachers, batch_size=6, progress=False)
    parts = [compute_stats(shards, teachers, batch_size=6, rank=r, world_size=3,
                           progress=False) for r in range(3)]
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    assert merged.images == full.images == 20
    for hub in full.teachers:
        np.testing.assert_allclose(merged.parts[hub].mean, full.parts[hub].mean, rtol=1e-10)
        np.testing.assert_allclose(merged.parts[hub].std, full.parts[hub].std, rtol=1e-10)
        assert full.parts[hub].count == 20 * 256


def test_stats_errors_are_clear(tmp_path):
    with pytest.raises(TheiaError, match="feature statistics not found"):
        TeacherStats.load(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TheiaError, match="unreadable feature statistics"):
        TeacherStats.load(tmp_path / "junk.safetensors")
    stats = TeacherStats({"openai/clip-vit-large-patch14": 8})
    stats.update({"openai/clip-vit-large-patch14": torch.randn(2, 4, 8)})
    with pytest.raises(TheiaError, match="no statistics for teacher 'facebook/dinov2-large'"):
        stats.check({"facebook/dinov2-large": (1024, 16, 16)})
    with pytest.raises(TheiaError, match="8 channels in the statistics"):
        stats.check({"openai/clip-vit-large-patch14": (1024, 16, 16)})
    with pytest.raises(TheiaError, match="cannot merge"):
        stats.merge(TeacherStats({"facebook/dinov2-large": 8}))
