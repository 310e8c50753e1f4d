"""Exponential moving average of a model's trainable weights (diffusion policies infer with it).

Decay warms up as ``1 - (1 + step) ** -power`` (capped at ``max_decay``), as in Chi et al.'s
diffusion policy, so early averages are not dominated by the random initialisation.

Example::

    ema = Ema(policy, power=0.75)
    ...; optimizer.step(); ema.update(policy)
    with ema.applied(policy):
        save_policy(policy, out)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class Ema:
    """Shadow copies of the ``requires_grad`` parameters of a module."""

    def __init__(self, model: nn.Module, power: float = 0.75, max_decay: float = 0.9999):
        self.power = power
        self.max_decay = max_decay
        self.step = 0
        self.shadow: dict[str, torch.Tensor] = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def decay(self) -> float:
        if self.step == 0:
            return 0.0
        return min(self.max_decay, 1.0 - (1.0 + self.step) ** -self.power)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(d).add_(p.detach(), alpha=1.0 - d)
        self.step += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the averaged weights into ``model``."""
        params = dict(model.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, t in self.shadow.items():
                params[n].copy_(t)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, t in saved.items():
                    params[n].copy_(t)
