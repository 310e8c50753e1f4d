"""The distillation objective (paper Eq. 1) and the held-out similarity measure.

Per teacher ``i`` with normalised target ``t`` and translator output ``p`` (``[B, N, C]``)::

    L_i = 0.9 * (1 - cos(p, t)) + 0.1 * smooth_l1(p, t; beta=1)        (beta = 0.9 in Eq. 1)
    L   = sum_i (1 / M) * L_i                                           (alpha_i = 1/M)

Cosine granularity: we take the cosine **per token** (over the C channels of each of the
N spatial positions) and average over tokens and images (``cosine="token"``). Why: every
token is one feature vector in the teacher's space, and downstream use is per token (dense
features, PCA maps). A single cosine over the whole flattened ``N * C`` map (what the
published code does, ``cosine="map"``) lets a few high-norm tokens dominate the direction, so
low-norm tokens get almost no gradient from the cosine term; per token every position counts
equally. ``map`` is kept for reproducing the published recipe. Smooth-L1 is the mean over
all elements either way.

Example::

    total, parts = distill_loss(preds, targets)      # parts: {hub id: L_i}, detached
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from theia_ros.errors import TheiaError

COSINE_WEIGHT = 0.9  # beta in Eq. 1
SMOOTH_L1_BETA = 1.0


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, mode: str = "token") -> torch.Tensor:
    """``1 - cos`` averaged over the batch: per token (``token``) or per flattened map (``map``).

    Shapes: ``[B, N, C]`` both.
    """
    if mode == "token":
        return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8).mean()
    if mode == "map":
        return 1.0 - F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=-1,
                                         eps=1e-8).mean()
    raise TheiaError(f"cosine mode must be 'token' or 'map', got {mode!r}")


def teacher_loss(pred: torch.Tensor, target: torch.Tensor, cosine: str = "token",
                 cosine_weight: float = COSINE_WEIGHT) -> torch.Tensor:
    """Eq. 1 for one teacher: ``beta * L_cos + (1 - beta) * L_smoothL1`` (float32 maths)."""
    pred, target = pred.float(), target.float()
    return (cosine_weight * cosine_loss(pred, target, cosine)
            + (1.0 - cosine_weight) * F.smooth_l1_loss(pred, target, beta=SMOOTH_L1_BETA))


def distill_loss(preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                 cosine: str = "token", cosine_weight: float = COSINE_WEIGHT,
                 weights: Mapping[str, float] | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of per-teacher losses (default weights 1/M); returns (total, parts).

    Raises TheiaError when a teacher is missing on either side or the shapes disagree.
    """
    if set(preds) != set(targets):
        raise TheiaError(f"translator outputs {sorted(preds)} do not match targets "
                         f"{sorted(targets)}")
    m = len(preds)
    total = torch.zeros((), device=next(iter(preds.values())).device)
    parts: dict[str, torch.Tensor] = {}
    for hub, pred in preds.items():
        target = targets[hub]
        if pred.shape != target.shape:
            raise TheiaError(f"teacher {hub}: prediction {tuple(pred.shape)} vs target "
                             f"{tuple(target.shape)}")
        loss = teacher_loss(pred, target, cosine, cosine_weight)
        w = (weights or {}).get(hub, 1.0 / m)
        total = total + w * loss
        parts[hub] = loss.detach()
    return total, parts


@torch.no_grad()
def token_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-token cosine similarity ``[B, N, C] x [B, N, C] -> [B]`` (evaluation)."""
    return F.cosine_similarity(pred.float(), target.float(), dim=-1).mean(-1)
