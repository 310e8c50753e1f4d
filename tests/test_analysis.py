"""Representation measures (paper Section 5 / Appendix G) on hand-built token sets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from theia_ros.errors import TheiaError
from training.analysis import (
    NORM_HIST_BINS,
    cosine_to_mean,
    norm_entropy,
    norms_constant,
    pca_evr_auc,
    pca_explained_variance,
    pca_rgb,
    representation_measures,
    side_by_side,
    token_norms,
    write_norm_map,
    write_png,
)


def test_token_norms_and_shape_checks() -> None:
    tokens = np.zeros((2, 4, 3))
    tokens[0, 1] = [3.0, 4.0, 0.0]
    norms = token_norms(tokens)
    assert norms.shape == (2, 4) and norms[0, 1] == 5.0 and norms[1].sum() == 0
    with pytest.raises(TheiaError, match=r"\[N, P, C\]"):
        token_norms(np.zeros((4, 3)))
    with pytest.raises(TheiaError, match="NaN"):
        token_norms(np.full((1, 4, 3), np.nan))


def test_norm_entropy_known_values() -> None:
    # Bins span [0, max]: 1.0 falls in bin 50, 2.0 in the last bin -> two equal bins -> ln 2.
    assert norm_entropy(np.array([1.0, 1.0, 2.0, 2.0])) == pytest.approx(math.log(2))
    assert norm_entropy(np.full(50, 7.0)) == 0.0
    # One token in each bin -> the maximum, ln(bins).
    centres = (np.arange(NORM_HIST_BINS) + 0.5) / NORM_HIST_BINS
    assert norm_entropy(centres) == pytest.approx(math.log(NORM_HIST_BINS))


def test_norm_entropy_is_scale_free_and_drops_with_outliers() -> None:
    rng = np.random.default_rng(0)
    norms = rng.uniform(5.0, 10.0, size=2000)
    base = norm_entropy(norms)
    assert norm_entropy(norms * 13.0) == pytest.approx(base)
    with_outliers = np.concatenate([norms, [200.0, 210.0]])  # two high-norm register-like tokens
    assert norm_entropy(with_outliers) < base - 1.0


def test_pca_evr_matches_svd_and_auc_bounds() -> None:
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(3, 196, 8)) * np.arange(1, 9)  # anisotropic
    evr = pca_explained_variance(tokens)
    flat = tokens.reshape(-1, 8)
    s = np.linalg.svd(flat - flat.mean(0), compute_uv=False) ** 2
    np.testing.assert_allclose(evr, s / s.sum(), rtol=1e-9)
    assert np.all(np.diff(evr) <= 1e-12) and evr.sum() == pytest.approx(1.0)

    one_direction = rng.normal(size=(2, 196, 1)) * np.ones((1, 1, 16))
    assert pca_evr_auc(one_direction) == pytest.approx(1.0)
    isotropic = rng.normal(size=(20, 196, 16))
    assert pca_evr_auc(isotropic) == pytest.approx(17 / 32, abs=0.02)


def test_cosine_to_mean() -> None:
    a = np.random.default_rng(2).normal(size=(1, 196, 4))
    assert cosine_to_mean(np.concatenate([a, a, a])) == pytest.approx(1.0)
    assert cosine_to_mean(np.concatenate([a, -a])) == 0.0  # mean is zero
    b = np.zeros_like(a)
    b[0, 0, 0] = 1.0
    c = np.zeros_like(a)
    c[0, 1, 0] = 1.0
    assert cosine_to_mean(np.concatenate([b, c])) == pytest.approx(1 / math.sqrt(2))


def test_representation_measures_report() -> None:
    tokens = np.random.default_rng(3).normal(size=(2, 196, 6)).astype(np.float32)
    report = representation_measures(tokens)
    assert report["num_tokens"] == 392 and report["channels"] == 6
    assert report["norm_entropy_nats"] == pytest.approx(norm_entropy(token_norms(tokens)))
    assert report["pca_evr_auc"] == pytest.approx(pca_evr_auc(tokens))
    assert 0 < report["pca_top1_evr"] < 1


def test_constant_norms_are_detected_and_said(tmp_path: Path) -> None:
    """A final LayerNorm with weight 1 and bias 0 gives every token the norm sqrt(C)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 196, 32))
    ln = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    norms = token_norms(ln)
    np.testing.assert_allclose(norms, math.sqrt(32), rtol=1e-9)
    report = representation_measures(ln)
    assert report["norms_constant"] and report["norm_entropy_nats"] == 0.0
    weighted = ln * rng.uniform(0.2, 2.0, size=32)  # a trained LayerNorm weight
    assert not norms_constant(token_norms(weighted))
    assert not representation_measures(weighted)["norms_constant"]
    assert norms_constant(np.zeros(196)) and not norms_constant(np.r_[np.ones(195), 1.05])

    from PIL import Image

    image = np.full((30, 50, 3), 200, np.uint8)
    flat = write_norm_map(tmp_path / "flat.png", image, norms[0], "flat")
    varied = write_norm_map(tmp_path / "varied.png", image, token_norms(weighted)[0], "varied")
    with Image.open(flat) as a, Image.open(varied) as b:
        assert a.size == b.size and a.size[0] > 2 * a.size[1]  # input | map + colour bar
        assert np.asarray(a).tobytes() != np.asarray(b).tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.png", "varied.png"]


def test_pca_rgb_separates_two_regions() -> None:
    rng = np.random.default_rng(4)
    tokens = rng.normal(scale=0.01, size=(1, 196, 10))
    grid = np.zeros((14, 14), bool)
    grid[:, :7] = True
    tokens[0, grid.ravel(), 0] += 5.0  # left half differs along one direction
    pic = pca_rgb(tokens)
    assert pic.shape == (1, 14, 14, 3) and pic.dtype == np.uint8
    first = pic[0, :, :, 0].astype(int)
    assert abs(first[:, :7].mean() - first[:, 7:].mean()) > 200


def test_side_by_side_and_atomic_png(tmp_path: Path) -> None:
    image = np.full((30, 50, 3), 200, np.uint8)
    both = side_by_side(image, np.zeros((14, 14, 3), np.uint8), size=56)
    assert both.shape == (56, 112, 3) and both[:, :56].min() == 200 and both[:, 56:].max() == 0
    out = write_png(tmp_path / "sub" / "a.png", both)
    assert out.is_file() and not list(out.parent.glob(".*"))
    with pytest.raises(TypeError):
        write_png(tmp_path / "sub" / "bad.png", np.zeros((4, 4, 3), np.complex64))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.png"]
