"""One torch module -> one checked ONNX file.

Exporter choice: torch's ``dynamo`` exporter (``torch.export`` + onnxscript) by default. It is
torch's default and maintained path (the TorchScript exporter is deprecated), it emits opset
18 natively, and our graphs are plain static-shape modules that ``torch.export`` traces
without graph breaks. Opset 18 needs onnxruntime >= 1.14 and TensorRT >= 10 (JetPack >= 6.1).
For TensorRT 8.6 (JetPack 6.0) export with ``opset=17``: dynamo then converts down with the
ONNX version converter, and we check the result really is opset 17; ``exporter="torchscript"``
is the fallback that emits 17 directly. Either way the parity check decides.

Files are single (no external data; Theia-Base is ~350 MB, far below protobuf's 2 GB) so a
checksum covers the whole graph.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch

from theia_ros.atomic import commit
from theia_ros.errors import TheiaError

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18


def export_graph(module: torch.nn.Module, inputs: dict[str, torch.Tensor], output_name: str,
                 path: Path, opset: int = DEFAULT_OPSET, exporter: str = "dynamo") -> Path:
    """Trace ``module(*inputs.values())`` to ``path`` (atomically), then ``onnx.checker`` it.

    Args:
        module: an eval-mode module with static-shape inputs.
        inputs: example inputs, in the module's argument order; their names become the
            graph's input names.
        output_name: the graph's single output name.
        path: the ``.onnx`` file to write.
        opset: ONNX opset (18 by default, see module docstring).
        exporter: ``dynamo`` or ``torchscript``.
    """
    if exporter not in EXPORTERS:
        raise TheiaError(f"exporter {exporter!r} unknown; choose one of {EXPORTERS}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    args = tuple(inputs.values())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about constants; parity decides
        if exporter == "dynamo":
            torch.onnx.export(module, args, str(tmp), dynamo=True, opset_version=opset,
                              input_names=list(inputs), output_names=[output_name],
                              external_data=False, verbose=False)
        else:
            torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset,
                              input_names=list(inputs), output_names=[output_name],
                              do_constant_folding=True)
    check_graph(tmp, list(inputs), output_name, opset)
    commit(tmp, path)
    return path


def check_graph(path: Path, input_names: list[str], output_name: str, opset: int) -> None:
    """``onnx.checker`` (full, with shape inference) + names and opset as the bundle needs."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise TheiaError(f"{path.name}: onnx.checker rejects the exported graph: "
                         f"{str(exc).splitlines()[0]}") from exc
    model = onnx.load(str(path), load_external_data=False)
    names = [i.name for i in model.graph.input]
    outs = [o.name for o in model.graph.output]
    if names != input_names or outs != [output_name]:
        raise TheiaError(f"{path.name}: exported inputs {names} / outputs {outs}, expected "
                         f"{input_names} / {[output_name]}")
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version != opset:
        raise TheiaError(f"{path.name}: exported opset {version}, asked for {opset} (the "
                         "version converter failed; try --exporter torchscript or --opset 18)")
