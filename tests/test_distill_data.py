"""Image shards (resize once, corrupt files skipped, resumable) and the batch plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_distill import write_images

from theia_ros.errors import TheiaError
from training.distill.images import ImageShards, load_resized, prepare_images, scan_images
from training.distill.loader import BatchPlan, BatchReader, contiguous_ranges, iterate_batches


def test_prepare_skips_and_counts_corrupt_images(tmp_path):
    write_images(tmp_path / "src", 20, classes=3, corrupt=3)
    index = prepare_images(tmp_path / "src", tmp_path / "out", shard_size=8, progress=False)
    assert index is not None
    assert index["num_images"] == 20
    assert index["skipped_count"] == 3
    assert sorted(s["file"].split("/")[-1] for s in index["skipped"]) == [
        "broken_0.jpg", "broken_1.jpg", "broken_2.jpg"]
    shards = ImageShards(tmp_path / "out")
    assert shards.num_images == 20
    assert sum(s.count for s in shards.shards) == 20 and len(shards.shards) == 3
    batch = shards.read(5, 19)  # spans shards
    assert batch.shape == (14, 224, 224, 3) and batch.dtype == np.uint8
    # rows are the decoded files in the plan's (shuffled) order
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    meta0 = json.loads((tmp_path / "out" / "images_00000.json").read_text())
    first = meta0["files"][0]
    assert first in plan["files"]
    np.testing.assert_array_equal(shards.read(0, 1)[0],
                                  load_resized(tmp_path / "src" / first, 224, "crop"))
    assert meta0["labels"][0] == int(first.split("/")[0].split("_")[1])


def test_prepare_resumes_to_the_same_result(tmp_path):
    write_images(tmp_path / "src", 21, corrupt=1, flat=True)
    full = prepare_images(tmp_path / "src", tmp_path / "a", shard_size=5, progress=False)
    part = prepare_images(tmp_path / "src", tmp_path / "b", shard_size=5, progress=False,
                          stop_after_shards=2)
    assert part is None and not (tmp_path / "b" / "index.json").exists()
    # two "ranks": each writes only its own shards; the last one completes the index
    assert prepare_images(tmp_path / "src", tmp_path / "b", shard_size=5, progress=False,
                          rank=1, world_size=2) is None
    resumed = prepare_images(tmp_path / "src", tmp_path / "b", shard_size=5, progress=False)
    assert resumed is not None and full is not None
    assert resumed["hash"] == full["hash"] and resumed["skipped_count"] == 1
    np.testing.assert_array_equal(ImageShards(tmp_path / "a").read(0, 21),
                                  ImageShards(tmp_path / "b").read(0, 21))


def test_prepare_bad_input_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TheiaError, match="no image files"):
        scan_images(tmp_path / "empty")
    with pytest.raises(TheiaError, match="not a folder"):
        scan_images(tmp_path / "missing")
    write_images(tmp_path / "src", 4, flat=True)
    prepare_images(tmp_path / "src", tmp_path / "out", shard_size=4, progress=False)
    with pytest.raises(TheiaError, match="prepared with"):
        prepare_images(tmp_path / "src", tmp_path / "out", shard_size=2, progress=False)
    with pytest.raises(TheiaError, match=r"index\.json: missing"):
        ImageShards(tmp_path / "nothing")


@pytest.mark.parametrize("world", [1, 2, 3])
def test_batch_plan_partitions_each_epoch(world):
    n, batch, chunk = 103, 4, 5
    plans = [BatchPlan(n, batch, world, r, chunk, seed=7) for r in range(world)]
    steps = plans[0].steps_per_epoch
    assert steps == n // (batch * world)
    for epoch in (0, 1):
        seen = []
        for plan in plans:
            for s in range(steps):
                ranges = plan.ranges(epoch, s)
                assert sum(b - a for a, b in ranges) == batch
                assert len(ranges) <= batch // chunk + 2  # few contiguous runs per batch
                seen.extend(i for a, b in ranges for i in range(a, b))
        assert len(seen) == len(set(seen)) == steps * batch * world  # disjoint, full batches
        assert all(0 <= i < n for i in seen)
    # deterministic, and a new order each epoch
    assert plans[0].ranges(1, 0) == BatchPlan(n, batch, world, 0, chunk, seed=7).ranges(1, 0)
    assert plans[0].ranges(0, 0) != plans[0].ranges(1, 0)


def test_batch_plan_rejects_bad_sizes():
    with pytest.raises(TheiaError, match="cannot fill"):
        BatchPlan(5, 4, world_size=2)
    with pytest.raises(TheiaError, match="bad batch plan"):
        BatchPlan(100, 4, world_size=2, rank=2)


def test_reader_returns_the_planned_images(tmp_path):
    write_images(tmp_path / "src", 30, flat=True)
    prepare_images(tmp_path / "src", tmp_path / "out", shard_size=7, progress=False)
    shards = ImageShards(tmp_path / "out")
    plan = BatchPlan(26, 6, chunk=4, seed=3)
    reader = BatchReader(shards, None)
    got = list(iterate_batches(plan, reader, epoch=2, start_step=1, depth=2, workers=2))
    assert [s for s, _ in got] == list(range(1, plan.steps_per_epoch))
    for step, batch in got:
        expect = np.concatenate([shards.read(a, b) for a, b in plan.ranges(2, step)])
        np.testing.assert_array_equal(batch["images"].numpy(), expect)
    assert contiguous_ranges(26, 30, 1, 2, 3) == [[(29, 30)]]
