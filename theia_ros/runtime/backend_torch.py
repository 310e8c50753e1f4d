"""torch backend: the bundle's ``torch/`` policy checkpoint run eagerly (the reference).

The bundle carries a copy of the policy checkpoint (``torch/policy.json`` +
``torch/model.safetensors``; safetensors, never pickle). This backend loads it with
``policies.policy.load_policy`` and runs the *same* graph modules export traced
(``torch_modules.build_graphs``), so it is the ground truth the ONNX/TensorRT backends are
compared with, and the "torch eager" reference of ``theia bench``. torch is imported only here.

Example::

    sessions = open_modules(meta, ["encoder", "head"], device="cpu", threads=2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from policies.policy import load_policy
from theia_ros.errors import TheiaError
from theia_ros.runtime.bundle import GRAPH_IO, BundleMeta
from theia_ros.runtime.torch_modules import build_graphs


class TorchGraph:
    """One graph module; numpy in, numpy out."""

    def __init__(self, module: torch.nn.Module, inputs: tuple[str, ...], device: torch.device):
        self.module = module
        self.inputs = inputs
        self.device = device

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
                for n in self.inputs]
        out = self.module(*args)
        return out.float().cpu().numpy()


def open_modules(meta: BundleMeta, names: Sequence[str], device: str = "cpu",
                 threads: int | None = None) -> dict[str, TorchGraph]:
    """{graph name: torch module session} from the bundle's torch copy of the policy."""
    root = meta.torch_dir
    if root is None or not root.is_dir():
        raise TheiaError(f"{meta.root}: this bundle has no torch/ copy of the policy (exported "
                         "with --no-torch-copy); use the onnxruntime or tensorrt backend")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    policy = load_policy(root, device=dev, verify=False)  # the bundle's SHA256SUMS covers it
    if policy.config.type != meta.policy_type:
        raise TheiaError(f"{root}: policy type {policy.config.type!r} != bundle.yaml "
                         f"{meta.policy_type!r}")
    if policy.encoder.config.resize != meta.resize_mode:
        raise TheiaError(f"{root}: the policy resizes images with "
                         f"{policy.encoder.config.resize!r}, bundle.yaml says "
                         f"{meta.resize_mode!r} (a modified bundle? re-export it)")
    graphs = build_graphs(policy, meta.image_hw, fused="fused" in names)
    missing = [n for n in names if n not in graphs]
    if missing:
        raise TheiaError(f"torch backend: no graph {missing} for a {meta.policy_type} policy")
    return {n: TorchGraph(graphs[n].to(dev), GRAPH_IO[n][0], dev) for n in names}
