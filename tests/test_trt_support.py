"""Static TensorRT check: our exported graphs pass; graphs TensorRT would reject fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from helpers_export import make_bundle, make_policy
from onnx import TensorProto, helper, numpy_helper

from policies.policy import save_policy
from theia_ros.cli import main as cli_main
from theia_ros.errors import TheiaError
from training.export import ExportOptions, export_bundle
from training.export import trt_support as trt


def _problems(bundle: Path, version: str) -> dict[str, list[str]]:
    return {p.name: [x.line() for x in trt.check_model(onnx.load(str(p)), version)]
            for p in sorted(bundle.glob("*.onnx"))}


# The Jetson path (opset 17, TorchScript exporter) against both versions; the default
# export (dynamo, opset 18) against 10.3, for which auto selects it.
@pytest.mark.parametrize(("kind", "exporter", "opset", "versions"), [
    ("cnn_mlp", "dynamo", 18, "auto"),
    ("cnn_mlp", "torchscript", 17, "8.6,10.3"),
    ("diffusion", "torchscript", 17, "8.6,10.3"),
    ("diffusion", "dynamo", 18, "10.3"),
])
def test_exported_graphs_pass(tmp_path: Path, kind: str, exporter: str, opset: int,
                              versions: str) -> None:
    _, bundle, _ = make_bundle(tmp_path, kind, exporter=exporter, opset=opset,
                               fused=kind == "cnn_mlp", trt=versions)
    checked = trt.resolve_targets(versions, opset)[0]
    assert checked  # something was checked
    for version in checked:
        graphs = _problems(bundle, version)
        assert len(graphs) == 3  # encoder + head + fused, or encoder + condition + denoiser
        assert all(not lines for lines in graphs.values()), graphs
    doc = onnx.load(str(bundle / "encoder.onnx"))
    assert {n.op_type for n in doc.graph.node} <= set(trt._TYPES)
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert meta["export"]["tensorrt_static_check"] == checked


def test_dynamo_diffusion_is_not_for_tensorrt_8_6(tmp_path: Path) -> None:
    """Mish (opset 18) exists only from TensorRT 10: the 8.6 check names it."""
    _, bundle, _ = make_bundle(tmp_path, "diffusion", exporter="dynamo", trt="none")
    lines = _problems(bundle, "8.6")["denoiser.onnx"]
    assert any("opset 18" in line for line in lines)
    assert any("(Mish)" in line and "8.6" in line for line in lines)
    assert not any(_problems(bundle, "10.3").values())


def test_every_encoded_op_has_the_type_constraint_its_column_means() -> None:
    # else the dtype check would silently skip that op
    for op in trt._TYPES:
        schema = onnx.defs.get_schema(op, 20, "")
        names = {p.type_str for p in (*schema.inputs, *schema.outputs)}
        assert set(trt._CONSTRAINTS.get(op, ("T",))) <= names, op


# ---------------------------------------------------------------- hand-built graphs


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None,
           opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name: str, elem: int, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _binary(op: str, elem: int, opset: int = 17) -> onnx.ModelProto:
    return _model([helper.make_node(op, ["a", "b"], ["y"], name="n")],
                  [_vi("a", elem, [2, 2]), _vi("b", elem, [2, 2])], [_vi("y", elem, [2, 2])],
                  opset=opset)


def test_a_plain_float_graph_passes_both() -> None:
    # the control for the failures below: same shapes, supported types
    for version in trt.TARGETS:
        assert trt.check_model(_binary("MatMul", TensorProto.FLOAT), version) == []


@pytest.mark.parametrize(("model", "version", "expect"), [
    (_binary("MatMul", TensorProto.INT32), "10.3", "tensor 'a' is INT32"),
    (_binary("Add", TensorProto.BFLOAT16), "8.6", "is BF16"),
    (_binary("MatMul", TensorProto.FLOAT, opset=21), "10.3", "opset 21"),
    (_binary("MatMul", TensorProto.FLOAT, opset=18), "8.6", "opset 18"),
    (_model([helper.make_node("Unique", ["x"], ["y"], name="u")],
            [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [None])]),
     "10.3", "(Unique): not in the operator subset"),
    (_model([helper.make_node("FusedMatMul", ["a", "b"], ["y"], name="f",
                              domain="com.microsoft")],
            [_vi("a", TensorProto.FLOAT, [2, 2]), _vi("b", TensorProto.FLOAT, [2, 2])],
            [_vi("y", TensorProto.FLOAT, [2, 2])]), "10.3", "custom-domain op"),
])
def test_unsupported_graphs_fail(model: onnx.ModelProto, version: str, expect: str) -> None:
    lines = [p.line() for p in trt.check_model(model, version)]
    assert any(expect in line for line in lines), lines


def test_uint8_only_at_the_graph_edge() -> None:
    ok = _model([helper.make_node("Cast", ["img"], ["x"], to=TensorProto.FLOAT, name="c")],
                [_vi("img", TensorProto.UINT8, [1, 4, 4, 3])],
                [_vi("x", TensorProto.FLOAT, [1, 4, 4, 3])])
    inner = _model([helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8, name="c"),
                    helper.make_node("Cast", ["u"], ["y"], to=TensorProto.FLOAT, name="d")],
                   [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])])
    for version in trt.TARGETS:
        assert trt.check_model(ok, version) == []
        lines = [p.line() for p in trt.check_model(inner, version)]
        assert any("'u' is UINT8 inside the graph" in line for line in lines), lines


def test_slice_axes_must_be_constant() -> None:
    def slice_model(axes_from_input: bool) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("st", "en")]
        inputs = [_vi("x", TensorProto.FLOAT, [4, 4])]
        if axes_from_input:
            inputs.append(_vi("ax", TensorProto.INT64, [1]))
        else:
            inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
        node = helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"], name="s")
        return _model([node], inputs, [_vi("y", TensorProto.FLOAT, [4, None])], inits)

    for version in trt.TARGETS:
        assert trt.check_model(slice_model(False), version) == []
        lines = [p.line() for p in trt.check_model(slice_model(True), version)]
        assert any("'axes' must be an initializer" in line for line in lines), lines


def test_layernorm_extra_outputs_only_for_8_6() -> None:
    inits = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("g", "b")]
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean"], name="ln",
                            axis=-1)
    model = _model([node], [_vi("x", TensorProto.FLOAT, [2, 4])],
                   [_vi("y", TensorProto.FLOAT, [2, 4]), _vi("mean", TensorProto.FLOAT, [2, 1])],
                   inits)
    assert trt.check_model(model, "8.6") == []  # no such restriction in the 8.6 table
    lines = [p.line() for p in trt.check_model(model, "10.3")]
    assert any("only output Y" in line for line in lines), lines


def test_resize_modes() -> None:
    def resize(**attrs: object) -> onnx.ModelProto:
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
        node = helper.make_node("Resize", ["x", "", "sc"], ["y"], name="r", **attrs)
        return _model([node], [_vi("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                      [_vi("y", TensorProto.FLOAT, [1, 1, 8, 8])], [scales])

    assert trt.check_model(resize(mode="linear"), "10.3") == []
    assert any("mode 'cubic'" in p.line()
               for p in trt.check_model(resize(mode="cubic"), "8.6"))


# ---------------------------------------------------------------- export integration


def test_resolve_targets() -> None:
    assert trt.resolve_targets("auto", 18)[0] == ["10.3"]
    assert "--opset 17" in trt.resolve_targets("auto", 18)[1][0]
    assert trt.resolve_targets("auto", 17)[0] == ["8.6", "10.3"]
    assert trt.resolve_targets("none", 18) == ([], [])
    with pytest.raises(TheiaError, match="--opset 17"):
        trt.resolve_targets("8.6", 18)
    with pytest.raises(TheiaError, match="unknown TensorRT"):
        trt.resolve_targets("7.1", 17)


def test_cli_refuses_a_target_that_cannot_read_the_opset(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy_dir = save_policy(make_policy("cnn_mlp"), tmp_path / "policy")
    argv = ["export", "--policy", str(policy_dir), "--out", str(tmp_path / "b"),
            "--image-size", "32x48", "--trt", "8.6"]
    assert cli_main(argv) == 2
    assert "TensorRT 8.6" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_export_fails_when_tensorrt_would_reject_a_graph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend 10.3 lacked Erf (the ViT's GELU): the export must stop, naming node and op."""
    table = dict(trt._TYPES)
    table["Erf"] = (table["Erf"][0], None)
    monkeypatch.setattr(trt, "_TYPES", table)
    policy_dir = save_policy(make_policy("cnn_mlp"), tmp_path / "policy")
    out = tmp_path / "bundle"
    with pytest.raises(TheiaError, match=r"encoder\.onnx: TensorRT 10\.3 .*\(Erf\)"):
        export_bundle(policy_dir, out, ExportOptions(image_hw=(32, 48), exporter="torchscript"),
                      log=lambda _m: None)
    assert not out.exists()
    # skipping the check exports the same policy
    export_bundle(policy_dir, out, ExportOptions(image_hw=(32, 48), exporter="torchscript",
                                                 trt="none"), log=lambda _m: None)
    assert (out / "encoder.onnx").is_file()
