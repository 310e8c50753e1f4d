"""The networks of a bundle as torch modules: exactly what export traces into each ONNX graph.

The torch backend runs these same modules eagerly, so "torch vs onnxruntime vs TensorRT"
compares one definition of each graph. Inputs and outputs are batch 1 with static shapes
(the robot runs one camera frame at a time; static shapes let onnxruntime and TensorRT plan
everything ahead).

A policy with several views (cameras x observation steps, V > 1) takes ``tokens``
``[1, V, 196, C]`` (time-major: oldest step first, cameras in the bundle's order) and, with
an observation history (T > 1), ``state`` ``[1, T, S]``; a one-view, one-step policy keeps the
original ``[1, 196, C]`` / ``[1, S]`` inputs, so its graphs are exactly those of earlier
bundles. The encoder graph is shared by every camera (one image per call).

Imports torch and ``policies``: only the torch backend and ``training.export`` load this.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.encoder import TheiaEncoder
from policies.preprocess import MEAN, STD
from theia_ros.errors import TheiaError
from theia_ros.runtime.bundle import GRAPH_IO
from theia_ros.runtime.torch_resize import AntialiasResize, BilinearResizeNHWC

__all__ = ["GRAPH_IO", "build_graphs", "example_inputs", "input_shapes"]


def _tokens_to_map(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """``[..., N, C]`` -> ``[..., C, grid, grid]`` with a static grid (no isqrt in the graph)."""
    return tokens.transpose(-1, -2).reshape(*tokens.shape[:-2], tokens.shape[-1], grid, grid)


def input_shapes(policy: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of the head-side graph inputs ``tokens`` and ``state`` (see module doc)."""
    cfg, enc = policy.config, policy.encoder.config
    tokens: tuple[int, ...] = (enc.num_spatial_tokens, enc.embed_dim)
    views = len(cfg.cameras) * cfg.n_obs_steps
    return {"tokens": (1, views, *tokens) if views > 1 else (1, *tokens),
            "state": ((1, cfg.n_obs_steps, cfg.state_dim) if cfg.n_obs_steps > 1
                      else (1, cfg.state_dim))}


class EncoderGraph(nn.Module):
    """uint8 RGB ``[1, H, W, 3]`` -> spatial tokens ``[1, 196, C]`` float32.

    The maths of ``policies.preprocess`` with the encoder's resize mode, for a fixed camera
    size ``image_hw``, then the ViT. ``antialias``: two matrix products with uint8 rounding
    (``AntialiasResize``), then ``x / 255`` and the mean/std as one scale and one offset;
    bit-identical to ``policies.preprocess`` up to that last affine map. ``bilinear``: the
    gathers of ``BilinearResizeNHWC`` with the pixel scale folded into their weights;
    matches ``policies.preprocess`` to float32 rounding.
    """

    def __init__(self, encoder: TheiaEncoder, image_hw: tuple[int, int]):
        super().__init__()
        self.encoder = encoder
        size = encoder.config.img_size
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.scale = 1.0 / (255.0 * STD)
        self.offset = MEAN / STD
        self.mode = encoder.config.resize
        self.resize: nn.Module | None = None
        if self.image_hw != (size, size):
            self.resize = (AntialiasResize(self.image_hw, size) if self.mode == "antialias"
                           else BilinearResizeNHWC(self.image_hw, size, out_scale=self.scale))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.resize is None:
            # cast before the permute: TensorRT takes uint8 only at the graph's edge
            x = image.to(torch.float32).permute(0, 3, 1, 2) * self.scale
        elif self.mode == "antialias":
            x = self.resize(image) * self.scale  # [1, 3, 224, 224], whole numbers x scale
        else:
            x = self.resize(image).permute(0, 3, 1, 2)  # scaled float [1, 3, 224, 224]
        return self.encoder.forward_features(x - self.offset)  # input in [-1, 1]


class CnnMlpGraph(nn.Module):
    """tokens ``[1, 196, C]`` + normalised state ``[1, S]`` -> normalised actions ``[1, H, 7]``."""

    def __init__(self, head: nn.Module, grid: int):
        super().__init__()
        self.head = head
        self.grid = grid

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.head(_tokens_to_map(tokens, self.grid), state)


class ConditionGraph(nn.Module):
    """tokens ``[1, 196, C]`` + normalised state ``[1, S]`` -> diffusion condition ``[1, D]``."""

    def __init__(self, cond_encoder: nn.Module, grid: int):
        super().__init__()
        self.cond_encoder = cond_encoder
        self.grid = grid

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.cond_encoder(_tokens_to_map(tokens, self.grid), state)


class DenoiserGraph(nn.Module):
    """One denoiser call: noisy ``[1, H, 7]``, timestep ``[1]`` float32, cond ``[1, D]``
    -> model output ``[1, H, 7]`` (noise or clean sample, per the scheduler's prediction type).

    The timestep is a float input (exact for integers below 2**24) because TensorRT handles
    int64 inputs poorly; the step embedding casts it to float anyway.
    """

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
        return self.denoiser(noisy, timestep, cond)


class FusedGraph(nn.Module):
    """uint8 image ``[1, H, W, 3]`` + normalised state ``[1, S]`` -> the head's output
    (normalised actions for CNN-MLP, the condition for diffusion): one call per control step."""

    def __init__(self, encoder: EncoderGraph, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(image), state)


def build_graphs(policy: nn.Module, image_hw: tuple[int, int], fused: bool = False
                 ) -> dict[str, nn.Module]:
    """A ``policies.policy.Policy`` -> {graph name: module} in eval mode (bundle graph names)."""
    grid = policy.encoder.config.grid
    graphs: dict[str, nn.Module] = {"encoder": EncoderGraph(policy.encoder, image_hw)}
    if policy.config.type == "cnn_mlp":
        graphs["head"] = CnnMlpGraph(policy.head, grid)
        tail = "head"
    else:
        graphs["condition"] = ConditionGraph(policy.head.cond_encoder, grid)
        graphs["denoiser"] = DenoiserGraph(policy.head.denoiser)
        tail = "condition"
    if fused:
        if len(policy.config.cameras) * policy.config.n_obs_steps > 1:
            raise TheiaError("a fused encoder+head graph needs a one-camera, one-step policy "
                             f"(this one: cameras {list(policy.config.cameras)}, n_obs_steps "
                             f"{policy.config.n_obs_steps})")
        graphs["fused"] = FusedGraph(graphs["encoder"], graphs[tail])
    return {k: v.eval() for k, v in graphs.items()}


def example_inputs(policy: nn.Module, image_hw: tuple[int, int], seed: int = 0
                   ) -> dict[str, dict[str, torch.Tensor]]:
    """Random inputs of the right shapes/dtypes for every graph: {graph: {input name: x}}."""
    g = torch.Generator().manual_seed(seed)
    cfg = policy.config
    image = torch.randint(0, 256, (1, *image_hw, 3), dtype=torch.uint8, generator=g)
    shapes = input_shapes(policy)
    tokens = torch.randn(shapes["tokens"], generator=g)
    state = torch.randn(shapes["state"], generator=g)
    out: dict[str, dict[str, torch.Tensor]] = {"encoder": {"image": image}}
    if cfg.type == "cnn_mlp":
        out["head"] = {"tokens": tokens, "state": state}
    else:
        hc = policy.head.config
        out["condition"] = {"tokens": tokens, "state": state}
        out["denoiser"] = {
            "noisy": torch.randn(1, cfg.horizon, cfg.action_dim, generator=g),
            "timestep": torch.tensor([float(hc.num_train_timesteps // 2)]),
            "cond": torch.randn(1, hc.cond_dim, generator=g),
        }
    if len(shapes["tokens"]) == 3 and len(shapes["state"]) == 2:
        out["fused"] = {"image": image, "state": state}
    return out

