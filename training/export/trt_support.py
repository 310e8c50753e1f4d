"""Static check of exported ONNX graphs against TensorRT's ONNX-parser support table.

TensorRT cannot run on the machines that export (no NVIDIA runtime, and its wheels are too
large to carry), so an export a robot's TensorRT would reject must fail here, from the
facts the parser documents. Targets are the TensorRT versions the Docker images pin:

- ``8.6``: ``docker/Dockerfile.jetson`` (``dustynv/ros:humble-ros-base-l4t-r36.2.0``,
  L4T r36.2 = JetPack 6.0, TensorRT 8.6.2);
- ``10.3``: ``docker/Dockerfile.desktop`` (``nvcr.io/nvidia/tensorrt:24.08-py3``) and
  JetPack 6.1 / 6.2.

Where the facts come from (github.com/onnx/onnx-tensorrt):

- 8.6: ``docs/operators.md`` on tag ``release/8.6-GA`` (identical on branch ``8.6-GA``);
  UINT8 network I/O from ``docs/Changelog.md`` ("TensorRT 8.5 GA": "Added support for
  importing ONNX networks with UINT8 I/O types"); the ConstantOfShape and Constant
  exceptions from ``builtin_op_importers.cpp`` on the same tag (see ``_TYPE_OVERRIDES``).
- 10.3: ``docs/operators.md`` on tag ``release/10.1-GA``, the newest release branch in the
  stored copy of the repository. ``docs/Changelog.md`` lists only additions for 10.2 and
  10.3 (tensor ``axes`` for Slice, a ScatterElements plugin), so the 10.1 table is a
  conservative stand-in: a graph it accepts, 10.3 accepts.

Checked per graph: the opset of the default domain; every node's op is in the table (of
the subset encoded here: ops torch's exporters emit for ViTs, CNN heads and 1-D U-Nets)
and marked supported; the element types of the op's main type constraint; UINT8 only as a
graph input or output; graph input/output types; the table's restrictions for these ops
(inputs that must be initializers, attribute values, unused outputs). Not checked: what
TensorRT only finds while building an engine (shapes, layer fusions, tactics, memory).

Example::

    check_graph_file(Path("bundle/encoder.onnx"), ["10.3"])   # raises TheiaError if not
    problems = check_model(onnx.load("denoiser.onnx"), "8.6")  # [] when parseable
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, defs, shape_inference

from theia_ros.errors import TheiaError


@dataclass(frozen=True)
class Target:
    """One TensorRT version's ONNX-parser facts.

    Args:
        version: TensorRT version this target stands for.
        opset_min: lowest default-domain opset the table states (None: not stated).
        opset_max: highest default-domain opset.
        io_types: element types allowed on graph inputs and outputs.
        int64_as_int32: the parser casts INT64 down to INT32 (before TensorRT 9).
        where: which image / JetPack runs this version.
        source: repository ref of the operator table.
    """

    version: str
    opset_min: int | None
    opset_max: int
    io_types: frozenset[str]
    int64_as_int32: bool
    where: str
    source: str


TARGETS: dict[str, Target] = {
    # "TensorRT 8.6 supports operators up to Opset 17"; data types DOUBLE, FLOAT32, FLOAT16,
    # INT8, BOOL, limited INT32/INT64 ("cast down INT64 to INT32"), DOUBLE cast to FLOAT.
    "8.6": Target("8.6", None, 17,
                  frozenset({"FP32", "FP16", "INT8", "BOOL", "INT32", "INT64", "UINT8"}),
                  True, "Jetson image (L4T r36.2, JetPack 6.0)",
                  "onnx/onnx-tensorrt release/8.6-GA docs/operators.md"),
    # "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"
    # (header not updated on the 10.1 branch); "UINT8 is only supported as network input or
    # output tensor types"; INT8/INT4/FP8 only through quantization.
    "10.3": Target("10.3", 9, 20,
                   frozenset({"FP32", "FP16", "BF16", "INT32", "INT64", "UINT8", "BOOL"}),
                   False, "desktop image (nvcr.io/nvidia/tensorrt:24.08) and JetPack 6.1/6.2",
                   "onnx/onnx-tensorrt release/10.1-GA docs/operators.md"),
}

# op -> (TensorRT 8.6 "Supported Types", TensorRT 10.x "Supported Types"); None: the op is not
# in that version's table. Copied from the two docs/operators.md files named above; ops not
# listed here fail the check until someone reads the table for them and adds a row.
_F = "FP32 FP16"
_TYPES: dict[str, tuple[str | None, str | None]] = {
    "Abs": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Add": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "And": ("BOOL", "BOOL"),
    "BatchNormalization": (_F, f"{_F} BF16"),
    "Cast": (f"{_F} INT32 INT8 UINT8 BOOL", f"{_F} BF16 INT32 INT64 UINT8 BOOL"),
    "Clip": (f"{_F} INT8", f"{_F} BF16"),
    "Concat": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Constant": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    # 10.x table says "INF64": read as INT64.
    "ConstantOfShape": ("FP32", f"{_F} BF16 INT32 INT64 BOOL"),
    "Conv": (f"{_F} INT8", f"{_F} BF16"),
    "ConvTranspose": (f"{_F} INT8", f"{_F} BF16"),
    "Cos": (_F, f"{_F} BF16"),
    "Div": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Equal": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Erf": (_F, f"{_F} BF16"),
    "Exp": (_F, f"{_F} BF16"),
    "Expand": (f"{_F} INT32 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Flatten": (f"{_F} INT32 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Floor": (_F, f"{_F} BF16"),
    "Gather": (f"{_F} INT8 INT32 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "GatherElements": (f"{_F} INT8 INT32 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Gelu": (None, f"{_F} BF16 INT8 INT32 INT64"),
    "Gemm": (f"{_F} INT8", f"{_F} BF16"),
    "GlobalAveragePool": (f"{_F} INT8", f"{_F} BF16"),
    "Greater": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "GroupNormalization": (_F, f"{_F} BF16"),
    "HardSigmoid": (f"{_F} INT8", f"{_F} BF16"),
    "HardSwish": (f"{_F} INT8", f"{_F} BF16"),
    "Identity": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "InstanceNormalization": (_F, f"{_F} BF16"),
    "LayerNormalization": (_F, f"{_F} BF16"),
    "LeakyRelu": (f"{_F} INT8", f"{_F} BF16"),
    "Less": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Log": (_F, f"{_F} BF16"),
    "MatMul": (_F, f"{_F} BF16"),
    "Max": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Min": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Mish": (None, _F),
    "Mul": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Neg": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Not": ("BOOL", "BOOL"),
    "Or": ("BOOL", "BOOL"),
    "Pad": (f"{_F} INT8 INT32", f"{_F} BF16 INT32 INT64"),
    "Pow": (_F, f"{_F} BF16"),
    "Range": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Reciprocal": (_F, f"{_F} BF16"),
    "ReduceMean": (_F, f"{_F} BF16 INT32 INT64"),
    "Relu": (f"{_F} INT8", f"{_F} BF16 INT32 INT64"),
    "Reshape": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Resize": (_F, f"{_F} BF16"),
    "Shape": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Sigmoid": (f"{_F} INT8", f"{_F} BF16"),
    "Sin": (_F, f"{_F} BF16"),
    "Slice": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Softmax": (_F, f"{_F} BF16"),
    "Softplus": (f"{_F} INT8", f"{_F} BF16"),
    "Split": (f"{_F} INT32 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Sqrt": (_F, f"{_F} BF16"),
    "Squeeze": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Sub": (f"{_F} INT32", f"{_F} BF16 INT32 INT64"),
    "Tanh": (f"{_F} INT8", f"{_F} BF16"),
    "Tile": (f"{_F} INT32 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Transpose": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Unsqueeze": (f"{_F} INT32 INT8 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
    "Where": (f"{_F} INT32 BOOL", f"{_F} BF16 INT32 INT64 BOOL"),
}

# Where the 8.6 table's types column is narrower than what the 8.6 parser does: its
# ConstantOfShape importer takes a ``value`` of any type but UINT8 (``notInvalidType(...,
# {"UINT8"})``), and torch's TorchScript exporter emits INT64 ConstantOfShape for shapes.
_TYPE_OVERRIDES: dict[tuple[str, str], str] = {
    ("8.6", "ConstantOfShape"): f"{_F} INT32 INT64 INT8 BOOL",
}

# The type constraint the table's types column refers to (default: "T").
_CONSTRAINTS: dict[str, tuple[str, ...]] = {
    "Cast": ("T1", "T2"),
    "ConstantOfShape": ("T2",),
    "Identity": ("V",),
    "Resize": ("T1",),
}

_ONNX_TO_TABLE = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16",
                  TensorProto.BFLOAT16: "BF16", TensorProto.INT32: "INT32",
                  TensorProto.INT64: "INT64", TensorProto.INT8: "INT8",
                  TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL",
                  # "TensorRT will attempt to cast DOUBLE down to FLOAT" (both tables)
                  TensorProto.DOUBLE: "FP32"}

_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                 "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


@dataclass(frozen=True)
class Problem:
    """One reason TensorRT's parser would reject a graph."""

    node: str
    op: str
    what: str

    def line(self) -> str:
        where = "graph" if self.node == "(graph)" else f"node {self.node!r} ({self.op})"
        return f"{where}: {self.what}"


@dataclass
class _Graph:
    """What the rules need to know about a graph, computed once."""

    model: onnx.ModelProto
    types: dict[str, int]
    constants: set[str]
    io_names: set[str]
    consumed: set[str]
    opset: int


def _type_name(elem_type: int) -> str:
    return _ONNX_TO_TABLE.get(elem_type, TensorProto.DataType.Name(elem_type))


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


# ---------------------------------------------------------------- restrictions (table text)


def _must_be_initializer(index: int, what: str) -> Callable[[onnx.NodeProto, _Graph], str | None]:
    """The table's "`<what>` must be an initializer"; a Constant node's output counts (the
    parser's Constant importer returns weights)."""
    def rule(node: onnx.NodeProto, g: _Graph) -> str | None:
        name = _input(node, index)
        if name and name not in g.constants:
            return f"input {what!r} must be an initializer (constant), got a computed tensor"
        return None
    return rule


def _constant_attrs(node: onnx.NodeProto, _g: _Graph) -> str | None:
    # 10.x: "`sparse_value`, `value_string`, and `value_strings` attributes are unsupported";
    # the 8.6 Constant importer asserts the same.
    bad = [a.name for a in node.attribute
           if a.name in ("sparse_value", "value_string", "value_strings")]
    return f"attribute {bad[0]!r} is unsupported" if bad else None


def _layernorm_first_output(node: onnx.NodeProto, g: _Graph) -> str | None:
    # 10.x: "Only the first output `Y` is supported."
    used = [o for o in node.output[1:] if o and (o in g.consumed or o in g.io_names)]
    return f"only output Y is supported, but {used} are used" if used else None


def _resize(version: str) -> Callable[[onnx.NodeProto, _Graph], str | None]:
    def rule(node: onnx.NodeProto, g: _Graph) -> str | None:
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        mode = _attr(node, "mode", "nearest")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if coord not in _RESIZE_COORD:
            return f"coordinate_transformation_mode {coord!r} unsupported"
        if mode not in _RESIZE_MODES:
            return f"mode {mode!r} unsupported (nearest or linear)"
        if mode == "nearest" and nearest not in _RESIZE_NEAREST:
            return f"nearest_mode {nearest!r} unsupported"
        if version != "8.6":
            if _attr(node, "antialias", 0):
                return "antialias is not supported"
            policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
            if policy != "stretch":
                return f"keep_aspect_ratio_policy {policy!r} unsupported (stretch only)"
        return None
    return rule


def _rules(version: str) -> dict[str, list[Callable[[onnx.NodeProto, _Graph], str | None]]]:
    rules: dict[str, list] = {
        "Slice": [_must_be_initializer(3, "axes")],
        "Squeeze": [_must_be_initializer(1, "axes")],
        "Unsqueeze": [_must_be_initializer(1, "axes")],  # "must be a constant tensor"
        "Constant": [_constant_attrs],
        "Resize": [_resize(version)],
    }
    if version != "8.6":  # restrictions the 10.x table adds
        rules["LayerNormalization"] = [_layernorm_first_output]
        for op in ("ReduceMean", "Pad"):
            rules[op] = [_must_be_initializer(1 if op == "ReduceMean" else 3, "axes")]
    return rules


# ---------------------------------------------------------------- the check


def _analyse(model: onnx.ModelProto) -> _Graph:
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # best effort: types it cannot infer stay unknown
        inferred = model
    graph = inferred.graph
    types: dict[str, int] = {}
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    constants = {init.name for init in graph.initializer}
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constants.update(node.output)
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return _Graph(model, types, constants,
                  {v.name for v in (*graph.input, *graph.output)},
                  {i for n in graph.node for i in n.input if i}, opset)


def _constraint_tensors(node: onnx.NodeProto, opset: int) -> list[str]:
    """Names of the node's tensors bound to the type constraint the table's column means."""
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except defs.SchemaError:
        return []
    wanted = _CONSTRAINTS.get(node.op_type, ("T",))
    out = []
    for params, names in ((schema.inputs, node.input), (schema.outputs, node.output)):
        for i, name in enumerate(names):
            if not name or not params:
                continue
            param = params[min(i, len(params) - 1)]  # the last formal may be variadic
            if param.type_str in wanted:
                out.append(name)
    return out


def check_model(model: onnx.ModelProto, version: str) -> list[Problem]:
    """Every reason TensorRT ``version``'s ONNX parser would reject ``model`` ([] if none)."""
    if version not in TARGETS:
        raise TheiaError(f"unknown TensorRT target {version!r}; known: {sorted(TARGETS)}")
    target = TARGETS[version]
    column = 0 if version == "8.6" else 1
    g = _analyse(model)
    problems: list[Problem] = []
    lo = target.opset_min if target.opset_min is not None else g.opset
    if not lo <= g.opset <= target.opset_max:
        problems.append(Problem("(graph)", "opset",
                                f"opset {g.opset} outside what TensorRT {version} reads "
                                f"({target.opset_min or 'up'} to {target.opset_max})"))
    for vi in (*g.model.graph.input, *g.model.graph.output):
        t = _type_name(vi.type.tensor_type.elem_type)
        if t not in target.io_types:
            problems.append(Problem(vi.name, "graph I/O", f"element type {t} unsupported "
                                    f"(TensorRT {version}: {sorted(target.io_types)})"))
    rules = _rules(version)
    for node in g.model.graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        if node.domain not in ("", "ai.onnx"):
            problems.append(Problem(name, f"{node.domain}::{node.op_type}",
                                    "custom-domain op (would need a TensorRT plugin)"))
            continue
        row = _TYPES.get(node.op_type)
        types_text = _TYPE_OVERRIDES.get((version, node.op_type)) or (row[column] if row
                                                                      else None)
        if types_text is None:
            why = (f"not in TensorRT {version}'s ONNX operator table" if row else
                   f"not in the operator subset this check encodes for TensorRT {version} "
                   "(read onnx-tensorrt docs/operators.md for it and add a row to "
                   "training/export/trt_support.py)")
            problems.append(Problem(name, node.op_type, why))
            continue
        allowed = set(types_text.split())
        for tensor in _constraint_tensors(node, g.opset):
            if tensor not in g.types:
                continue  # unknown after shape inference: nothing to check against
            t = _type_name(g.types[tensor])
            if target.int64_as_int32 and t == "INT64":
                t = "INT32"
            if t not in allowed:
                problems.append(Problem(name, node.op_type, f"tensor {tensor!r} is {t}; "
                                        f"TensorRT {version} supports {types_text}"))
        for tensor in (*node.input, *node.output):
            if (tensor and g.types.get(tensor) == TensorProto.UINT8
                    and tensor not in g.io_names):
                problems.append(Problem(name, node.op_type, f"tensor {tensor!r} is UINT8 "
                                        "inside the graph (UINT8 only as network I/O)"))
        for rule in rules.get(node.op_type, []):
            what = rule(node, g)
            if what:
                problems.append(Problem(name, node.op_type, what))
    return problems


def resolve_targets(spec: str | Sequence[str], opset: int) -> tuple[list[str], list[str]]:
    """``auto`` | ``none`` | ``8.6,10.3`` -> (versions to check, notes on versions left out).

    ``auto`` checks every pinned version that reads ``opset``; naming a version that cannot
    read it is an error (the export could never load there).
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)
             if s.strip()]
    if names in (["none"], []):
        return [], []
    if names == ["auto"]:
        chosen, notes = [], []
        for v, t in TARGETS.items():
            if (t.opset_min or 0) <= opset <= t.opset_max:
                chosen.append(v)
            else:
                notes.append(f"TensorRT {v} ({t.where}) not checked: it reads opset <= "
                             f"{t.opset_max}, this export is opset {opset} (use --opset "
                             f"{t.opset_max} --trt {v} for it)")
        return chosen, notes
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise TheiaError(f"--trt: unknown TensorRT version(s) {unknown}; choose from "
                         f"{sorted(TARGETS)}, auto or none")
    for v in names:
        t = TARGETS[v]
        if not (t.opset_min or 0) <= opset <= t.opset_max:
            raise TheiaError(f"--trt {v}: TensorRT {v} ({t.where}) reads ONNX opset <= "
                             f"{t.opset_max}, this export is opset {opset}: pass --opset "
                             f"{t.opset_max}")
    return names, []


def check_graph_file(path: Path, versions: Iterable[str]) -> None:
    """Raise a TheiaError naming the first rejected node (and how many more) per version."""
    versions = list(versions)
    if not versions:
        return
    model = onnx.load(str(path), load_external_data=False)
    for version in versions:
        problems = check_model(model, version)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TheiaError(f"{path.name}: TensorRT {version} ({TARGETS[version].where}) "
                             f"would reject it: {problems[0].line()}{more}; use "
                             "--trt none to skip this check")
