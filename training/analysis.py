"""Representation measures from the Theia paper (Section 5, Appendix G) and pictures of tokens.

Given spatial tokens ``[N, P, C]`` (N images, P = 196 tokens, C channels):

- **Norm entropy** (the measure that correlated with robot-learning success): the L2 norm of
  every token, pooled over all N x P tokens, binned into a histogram of
  ``NORM_HIST_BINS = 100`` equal-width bins spanning ``[0, max]`` of those norms (so the
  measure is scale-free and float noise among equal norms does not spread over bins); bin
  counts divided by N x P give p_i; entropy ``-sum p_i ln p_i`` in **nats** (natural log).
  Maximum ``ln 100 = 4.605``; 0 when all norms are equal (e.g. a random-init ViT, whose final
  LayerNorm with unit weights gives every token the norm sqrt(C)). High-norm outlier tokens
  squeeze the other tokens into a few low bins and lower it. The bins and log base are fixed
  so numbers compare across runs and models.
- **PCA explained-variance AUC**: PCA of all N x P tokens (centred, covariance eigenvalues),
  explained-variance ratios sorted high to low, cumulative sum c_k for k = 1..C, and
  ``AUC = (1/C) sum_k c_k`` in (0, 1]; 1 means all variance in one component, isotropic
  tokens give (C + 1) / (2C) ~ 0.5. Lower = variance spread over more directions.
- **Cosine similarity to the mean**: each image's representation (its P x C tokens
  flattened), cosine similarity to the mean representation over the N images, averaged.
- **Norm map**: per-image 14 x 14 token norms clipped to ``[0, 2 * median]`` (that image's
  median) and colour-mapped (viridis), as in the paper's Figure 10, with a colour bar.
- **Constant norms**: when every token's norm falls in one histogram bin (spread below
  max / 100), entropy is 0 and the maps are flat. That is what a final LayerNorm whose
  weight is still uniform does (random init, a short smoke distillation): it scales every
  token to the same length, ``sqrt(C) * weight``. The measures then say nothing about the
  encoder, and ``norms_constant`` says so.
- **PCA picture**: the first three principal components of the tokens (fitted jointly over
  all images given, so colours compare across images) as RGB.

Example::

    tokens = encoder.encode(images).numpy()          # [N, 196, C]
    report = representation_measures(tokens)         # {"norm_entropy_nats": ..., ...}
    write_norm_map("norm.png", image, token_norms(tokens)[0], "door.png")
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from theia_ros.atomic import atomic_write
from theia_ros.errors import TheiaError

NORM_HIST_BINS = 100
ENTROPY_LOG_BASE = "e"  # nats
_PCA_PERCENTILES = (1.0, 99.0)


def _as_tokens(tokens: np.ndarray) -> np.ndarray:
    """Check ``[N, P, C]`` and return float64 (PCA/entropy sums need the precision)."""
    arr = np.asarray(tokens)
    if arr.ndim != 3 or 0 in arr.shape:
        raise TheiaError(f"tokens must be a non-empty [N, P, C] array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise TheiaError("tokens contain NaN or infinite values")
    return arr.astype(np.float64)


def token_norms(tokens: np.ndarray) -> np.ndarray:
    """``[N, P, C]`` -> L2 norm of every token ``[N, P]``."""
    return np.linalg.norm(_as_tokens(tokens), axis=-1)


def norm_entropy(norms: np.ndarray, bins: int = NORM_HIST_BINS) -> float:
    """Shannon entropy (nats) of the histogram of all norms (``bins`` bins over [0, max])."""
    flat = np.asarray(norms, dtype=np.float64).ravel()
    if flat.size == 0:
        raise TheiaError("no token norms to take the entropy of")
    if flat.min() < 0:
        raise TheiaError("norms must be >= 0")
    top = float(flat.max())
    counts, _ = np.histogram(flat, bins=bins, range=(0.0, top if top > 0 else 1.0))
    p = counts[counts > 0] / flat.size
    return max(0.0, float(-(p * np.log(p)).sum()))  # no "-0.0" for a single bin


def norms_constant(norms: np.ndarray, bins: int = NORM_HIST_BINS) -> bool:
    """All norms in one entropy histogram bin (so the entropy is 0 and the maps are flat)."""
    flat = np.asarray(norms, dtype=np.float64).ravel()
    top = float(flat.max())
    return top <= 0 or float(flat.max() - flat.min()) < top / bins


CONSTANT_NORMS_NOTE = (
    "every token has the same L2 norm: the encoder's final LayerNorm normalises each token "
    "and, with its weight still uniform (random init or barely trained), scales all of them "
    "to sqrt(C) x weight. Norm entropy is 0 and the norm maps are flat by construction; "
    "they say nothing about this encoder (use a trained checkpoint)")


def pca_explained_variance(tokens: np.ndarray) -> np.ndarray:
    """``[N, P, C]`` (or ``[M, C]``) -> explained-variance ratios ``[C]``, largest first."""
    arr = np.asarray(tokens, dtype=np.float64)
    flat = arr.reshape(-1, arr.shape[-1])
    if flat.shape[0] < 2:
        raise TheiaError("PCA needs at least two tokens")
    centred = flat - flat.mean(axis=0, keepdims=True)
    cov = centred.T @ centred / (flat.shape[0] - 1)
    eig = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    total = eig.sum()
    if total <= 0:
        return np.full_like(eig, 1.0 / eig.size)  # constant tokens: no preferred direction
    return eig / total


def pca_evr_auc(tokens: np.ndarray) -> float:
    """Area under the cumulative explained-variance curve, x normalised to (0, 1]."""
    evr = pca_explained_variance(_as_tokens(tokens))
    return float(np.cumsum(evr).mean())


def cosine_to_mean(tokens: np.ndarray) -> float:
    """Mean cosine similarity of each image's flattened tokens to the mean over images."""
    arr = _as_tokens(tokens)
    reps = arr.reshape(arr.shape[0], -1)
    mean = reps.mean(axis=0)
    denom = np.linalg.norm(reps, axis=1) * np.linalg.norm(mean)
    cos = np.divide(reps @ mean, denom, out=np.zeros(len(reps)), where=denom > 0)
    return float(cos.mean())


def representation_measures(tokens: np.ndarray) -> dict[str, float | int | str]:
    """All measures for one model's tokens ``[N, P, C]`` (see the module docstring)."""
    arr = _as_tokens(tokens)
    norms = np.linalg.norm(arr, axis=-1)
    evr = pca_explained_variance(arr)
    median = float(np.median(norms))
    return {
        "num_images": int(arr.shape[0]),
        "num_tokens": int(norms.size),
        "channels": int(arr.shape[-1]),
        "norm_entropy_nats": norm_entropy(norms),
        "norm_entropy_bins": NORM_HIST_BINS,
        "norm_entropy_max_nats": math.log(NORM_HIST_BINS),
        "pca_evr_auc": float(np.cumsum(evr).mean()),
        "pca_top1_evr": float(evr[0]),
        "cosine_to_mean": cosine_to_mean(arr),
        "norm_mean": float(norms.mean()),
        "norm_median": median,
        "norm_max": float(norms.max()),
        "outlier_fraction_gt_2x_median": float((norms > 2 * median).mean()),
        "norms_constant": norms_constant(norms),
    }


# ----------------------------------------------------------------------------- pictures

def _grid(values: np.ndarray) -> np.ndarray:
    """``[P, ...]`` with P square -> ``[g, g, ...]``."""
    side = math.isqrt(values.shape[0])
    if side * side != values.shape[0]:
        raise TheiaError(f"{values.shape[0]} tokens do not form a square grid")
    return values.reshape(side, side, *values.shape[1:])


def _upsample(picture: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour ``[g, g, 3]`` -> ``[size, size, 3]`` (one block per token)."""
    from PIL import Image

    return np.asarray(Image.fromarray(picture).resize((size, size), Image.Resampling.NEAREST))


def write_norm_map(path: str | os.PathLike, image: np.ndarray, norms: np.ndarray,
                   title: str) -> Path:
    """Input image beside its token-norm map with a labelled colour bar (PNG, atomic).

    The colour scale is ``[0, 2 * median]`` of this image's norms (higher values saturate);
    constant norms are said in the title rather than left as an unexplained flat colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = np.asarray(norms, dtype=np.float64).ravel()
    upper = 2.0 * float(np.median(norms)) or 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.4),
                                      gridspec_kw={"width_ratios": [1, 1.22]})
    left.imshow(image)
    left.set_title("input", fontsize=9)
    left.set_axis_off()
    shown = right.imshow(_grid(norms), cmap="viridis", vmin=0.0, vmax=upper,
                         interpolation="nearest")
    right.set_axis_off()
    if norms_constant(norms):
        right.set_title(f"token norms: all {norms.mean():.3f} (constant:\nfinal LayerNorm, "
                        "nothing to map)", fontsize=9, color="#b22222")
    else:
        right.set_title(f"token norms (clipped at 2 x median = {upper:.2f})", fontsize=9)
    bar = fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    bar.set_label("token L2 norm", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def pca_rgb(tokens: np.ndarray) -> np.ndarray:
    """Tokens ``[N, P, C]`` -> uint8 pictures ``[N, g, g, 3]`` of the first 3 PCs (joint fit)."""
    arr = _as_tokens(tokens)
    n, p, c = arr.shape
    flat = arr.reshape(-1, c)
    centred = flat - flat.mean(axis=0, keepdims=True)
    # Right singular vectors = principal axes; 3 components (fewer if C < 3, padded).
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:3].T
    if proj.shape[1] < 3:
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    lo, hi = np.percentile(proj, _PCA_PERCENTILES, axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    rgb = np.clip((proj - lo) / span, 0.0, 1.0)
    pictures = (rgb * 255).round().astype(np.uint8).reshape(n, p, 3)
    return np.stack([_grid(pic) for pic in pictures])


def side_by_side(image: np.ndarray, picture: np.ndarray, size: int = 224) -> np.ndarray:
    """Input image ``[H, W, 3]`` beside a token picture ``[g, g, 3]`` -> ``[size, 2*size, 3]``."""
    from PIL import Image

    left = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return np.concatenate([left, _upsample(picture, size)], axis=1)


def write_png(path: str | os.PathLike, picture: np.ndarray) -> Path:
    """Write uint8 ``[H, W, 3]`` as PNG atomically."""
    from PIL import Image

    return atomic_write(path, lambda tmp: Image.fromarray(np.ascontiguousarray(picture)).save(
        tmp, format="PNG"))
