"""Feature cache: bf16 normalised targets, resumable per-rank extraction, checked manifest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_distill import CDIV_TINY_SHAPES, make_dataset, tiny_teachers

from theia_ros.errors import TheiaError
from training.distill.cache import FeatureCache, extract_features, from_bf16_bits, to_bf16_bits
from training.distill.stats import TeacherStats, load_stats
from training.distill.teachers import run_teachers

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    teachers = tiny_teachers()
    shards, stats, cache_dir = make_dataset(tmp, n=36, shard_size=16, teachers=teachers)
    return tmp, shards, stats, cache_dir, teachers


def test_bf16_bits_round_trip():
    x = torch.randn(5, 7) * 3
    bits = to_bf16_bits(x)
    assert bits.dtype == np.uint16
    back = from_bf16_bits(bits)
    torch.testing.assert_close(back, x.to(torch.bfloat16).float(), rtol=0, atol=0)
    assert (back - x).abs().max() <= 3 * x.abs().max() * 2 ** -8


def test_cache_holds_normalised_teacher_features(data):
    _, shards, stats, cache_dir, teachers = data
    cache = FeatureCache(cache_dir, CDIV_TINY_SHAPES, shards, stats.hash())
    norm = stats.torch_mean_std()
    images = torch.from_numpy(shards.read(16, 20)).permute(0, 3, 1, 2)
    feats = run_teachers(teachers, images)
    for hub, x in feats.items():
        stored = from_bf16_bits(np.ascontiguousarray(cache.array(1, hub)[0:4]))
        expect = (x - norm[hub][0]) / norm[hub][1]
        assert stored.shape == expect.shape == (4, 256, CDIV_TINY_SHAPES[hub][0])
        torch.testing.assert_close(stored, expect, rtol=1e-2, atol=1e-2)
    # normalised over the whole set: per-channel mean ~0 and std ~1
    allv = torch.cat([from_bf16_bits(np.ascontiguousarray(cache.array(i, hub)))
                      for i in range(len(shards.shards))
                      for hub in ["facebook/dinov2-large"]])
    flat = allv.reshape(-1, allv.shape[-1])
    assert flat.mean(0).abs().max() < 0.02 and (flat.std(0) - 1).abs().max() < 0.02


def test_extract_resumes_and_splits_by_rank(data, tmp_path):
    _, shards, stats, cache_dir, teachers = data
    out = tmp_path / "c2"
    assert extract_features(shards, teachers, stats, out, batch_size=16, rank=1, world_size=2,
                            progress=False) == 1  # shards 1 of 0..2
    assert extract_features(shards, teachers, stats, out, batch_size=16, progress=False,
                            stop_after_shards=1) == 1  # "killed" after shard 0
    with pytest.raises(TheiaError, match="cache incomplete, 1 of 3 shards missing"):
        FeatureCache(out, CDIV_TINY_SHAPES, shards, stats.hash())
    assert extract_features(shards, teachers, stats, out, batch_size=16, progress=False) == 1
    cache = FeatureCache(out, CDIV_TINY_SHAPES, shards, stats.hash())
    ref = FeatureCache(cache_dir, CDIV_TINY_SHAPES, shards, stats.hash())
    for i in range(3):
        for hub in CDIV_TINY_SHAPES:
            np.testing.assert_array_equal(cache.array(i, hub), ref.array(i, hub))
    assert not list(out.glob("*.tmp*"))


def test_cache_mismatches_are_clear_errors(data, tmp_path):
    tmp, shards, stats, cache_dir, teachers = data
    two = {h: s for h, s in CDIV_TINY_SHAPES.items() if "vit-huge" not in h}
    with pytest.raises(TheiaError, match="cache built for teachers"):
        FeatureCache(cache_dir, two, shards, stats.hash())
    wrong = dict(CDIV_TINY_SHAPES, **{"facebook/dinov2-large": (1024, 16, 16)})
    with pytest.raises(TheiaError, match=r"facebook/dinov2-large has shape \[40, 16, 16\]"):
        FeatureCache(cache_dir, wrong, shards, stats.hash())
    with pytest.raises(TheiaError, match="statistics differ"):
        FeatureCache(cache_dir, CDIV_TINY_SHAPES, shards, "0123456789abcdef")
    with pytest.raises(TheiaError, match=r"manifest\.json: missing"):
        FeatureCache(tmp_path, CDIV_TINY_SHAPES, shards, stats.hash())
    # targets made from other teacher inputs are other targets
    with pytest.raises(TheiaError, match="cache teacher inputs differ"):
        FeatureCache(cache_dir, CDIV_TINY_SHAPES, shards, stats.hash(), "aligned")
    for t in teachers:
        t.inputs = "aligned"
    try:
        with pytest.raises(TheiaError, match="cache teacher inputs differ"):
            extract_features(shards, teachers, stats, cache_dir, progress=False)
    finally:
        for t in teachers:
            t.inputs = "published"
    # extracting other teachers into an existing cache folder is refused
    with pytest.raises(TheiaError, match="cache built for teachers"):
        extract_features(shards, teachers[:2], stats.subset(two), cache_dir, progress=False)
    # statistics that lack a teacher
    with pytest.raises(TheiaError, match="no statistics for teacher"):
        extract_features(shards, teachers, stats.subset(two), tmp_path / "x", progress=False)
    # a truncated feature file is caught when opened
    stats2 = TeacherStats.load(tmp / "stats.safetensors")
    assert stats2.hash() == stats.hash() and stats2.teacher_inputs == "published"
    with pytest.warns(UserWarning, match="statistics of 'published' teacher inputs, but the "
                                         "teachers run with 'aligned'"):
        load_stats(tmp / "stats.safetensors", "aligned")
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in cache_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    victim = bad / "feats_00001__facebook--dinov2-large.npy"
    np.save(victim, np.zeros((3, 256, 40), np.uint16))
    with pytest.raises(TheiaError, match="expected uint16"):
        FeatureCache(bad, CDIV_TINY_SHAPES, shards, stats2.hash()).array(
            1, "facebook/dinov2-large")
