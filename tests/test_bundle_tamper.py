"""Tampered bundles whose checksums were recomputed after the edit: each one must end in one
clear ``TheiaError`` line naming the file and field, never a traceback, a silent load, or a
bundle that loads and then faults every episode.

Every case edits a fresh copy of a real exported bundle (a tiny random-weight policy through
the production export), re-signs ``SHA256SUMS`` the way export does (``write_sums``) unless
the case is about the sums or links themselves, and opens it with the onnxruntime backend.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers_export import make_bundle

from theia_ros.errors import TheiaError
from theia_ros.runtime import load
from theia_ros.runtime.bundle import read_sums, write_sums

Mutate = Callable[[Path], None]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tamper")
    return {kind: make_bundle(root, kind, fused=True)[1] for kind in ("cnn_mlp", "diffusion")}


def _doc(b: Path) -> dict:
    return yaml.safe_load((b / "bundle.yaml").read_text())


def _put(b: Path, doc: dict) -> None:
    (b / "bundle.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def edit(fn: Callable[[dict], object]) -> Mutate:
    """A case that changes the parsed bundle.yaml in place."""
    def mutate(b: Path) -> None:
        doc = _doc(b)
        fn(doc)
        _put(b, doc)
    return mutate


def raw(data: bytes) -> Mutate:
    """A case that replaces bundle.yaml with these bytes."""
    return lambda b: (b / "bundle.yaml").write_bytes(data)


def setp(path: str, value: object) -> Mutate:
    """Set the dotted field ``path`` (``policy.horizon``) of bundle.yaml to ``value``."""
    def fn(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value
    return edit(fn)


def delp(path: str) -> Mutate:
    def fn(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        del node[last]
    return edit(fn)


def _redeclare(doc: dict) -> None:
    """Rewrite every graph's declared shapes from the (edited) dims, as export would, so only
    the ONNX graphs themselves can disagree."""
    pol, cam, enc = doc["policy"], doc["camera"], doc["encoder"]
    chunk = [1, pol["horizon"], pol["action_dim"]]
    shapes = {"image": [1, cam["height"], cam["width"], 3],
              "tokens": [1, enc["num_tokens"], enc["embed_dim"]], "state": [1, pol["state_dim"]],
              "actions": chunk, "noisy": chunk, "model_output": chunk, "timestep": [1]}
    if "diffusion" in doc:
        shapes["cond"] = [1, doc["diffusion"]["cond_dim"]]
    shapes["output"] = shapes.get("cond", chunk)
    for g in doc["graphs"].values():
        for part in ("inputs", "output"):
            for name, spec in g[part].items():
                spec["shape"] = list(shapes[name])


def consistent(fn: Callable[[dict], object]) -> Mutate:
    """Edit dims, keep bundle.yaml self-consistent and drop the torch copy: only the ONNX
    graphs' real input/output shapes can reveal the edit."""
    def inner(doc: dict) -> None:
        fn(doc)
        doc.pop("torch", None)
        _redeclare(doc)

    def mutate(b: Path) -> None:
        edit(inner)(b)
        shutil.rmtree(b / "torch")
    return mutate


def link_outside(target: Callable[[Path], Path]) -> Mutate:
    def mutate(b: Path) -> None:
        dst = target(b)
        (b / "head.onnx").unlink()
        os.symlink(dst, b / "head.onnx")
    return mutate


def _outside_copy(b: Path) -> Path:
    out = b.parent / "elsewhere.onnx"
    shutil.copy(b / "head.onnx", out)
    return out


def _nest(depth: int) -> bytes:
    return b"format: theia-ros-bundle\nx: " + b"[" * depth + b"]" * depth + b"\n"


def _scale_up(doc: dict) -> None:
    doc["normalization"]["action"]["scale"] = [s * 1000 for s in
                                               doc["normalization"]["action"]["scale"]]


def _torch_json(key: str, value: object) -> Mutate:
    import json

    def mutate(b: Path) -> None:
        p = b / "torch" / "policy.json"
        d = json.loads(p.read_text())
        d[key] = value
        p.write_text(json.dumps(d))
    return mutate


NAN, INF = math.nan, math.inf

# (case id, bundle kind, mutation, regex the one-line error must match, re-sign sums)
CASES: list[tuple[str, str, Mutate, str, bool]] = [
    # --- the file itself
    ("yaml-list", "cnn_mlp", raw(b"- a\n- b\n"), "mapping at the top level", True),
    ("yaml-empty", "cnn_mlp", raw(b""), "mapping at the top level", True),
    ("yaml-invalid", "cnn_mlp", raw(b"policy: [unclosed\n"), "not valid YAML", True),
    ("yaml-not-utf8", "cnn_mlp", raw(b"format: theia-ros-bundle\nname: \xff\xfe\n"),
     "not UTF-8", True),
    ("yaml-deep-nesting", "cnn_mlp", raw(_nest(20000)), "bundle.yaml", True),
    ("yaml-alias-bomb", "cnn_mlp",
     raw(b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
         b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n"),
     "format is None", True),
    ("yaml-5MB", "cnn_mlp", raw(b"# " + b"x" * (5 << 20) + b"\n"), "a metadata file", True),
    ("sums-not-utf8", "cnn_mlp",
     lambda b: (b / "SHA256SUMS").write_bytes(b"\xff" * 70 + b"  x\n"), "not UTF-8", False),
    ("unknown-top-field", "cnn_mlp", setp("extra", 1), r"extra: unknown field", True),
    ("format", "cnn_mlp", setp("format", "onnx-bundle"), "format is 'onnx-bundle'", True),
    ("format-version-str", "cnn_mlp", setp("format_version", "1"), "format_version '1'", True),
    # --- policy
    ("policy-not-mapping", "cnn_mlp", setp("policy", 5), r"policy: must be a mapping", True),
    ("policy-missing", "cnn_mlp", delp("policy"), r"policy: missing", True),
    ("policy-unknown-field", "cnn_mlp", setp("policy.horizn", 4),
     r"policy\.horizn: unknown field", True),
    ("type-unknown", "cnn_mlp", setp("policy.type", "transformer"),
     r"policy\.type: 'transformer' unknown", True),
    ("type-int", "cnn_mlp", setp("policy.type", 3), r"policy\.type: must be a string", True),
    ("action-kind", "cnn_mlp", setp("policy.action_kind", "joint_pos"),
     r"policy\.action_kind: 'joint_pos' unknown", True),
    ("action-dim-6", "cnn_mlp", setp("policy.action_dim", 6), r"policy\.action_dim", True),
    ("action-dim-str", "cnn_mlp", setp("policy.action_dim", "7"),
     r"policy\.action_dim: must be an integer", True),
    ("horizon-0", "cnn_mlp", setp("policy.horizon", 0), r"policy\.horizon: must be in", True),
    ("horizon-neg", "cnn_mlp", setp("policy.horizon", -3), r"policy\.horizon", True),
    ("horizon-1e9", "cnn_mlp", setp("policy.horizon", 10**9), r"policy\.horizon", True),
    ("horizon-str", "cnn_mlp", setp("policy.horizon", "ten"), r"policy\.horizon", True),
    ("horizon-float", "cnn_mlp", setp("policy.horizon", 4.5), r"policy\.horizon", True),
    ("horizon-bool", "cnn_mlp", setp("policy.horizon", True), r"policy\.horizon", True),
    ("horizon-4-to-10", "cnn_mlp", setp("policy.horizon", 10), r"graphs\.\w+\..*shape", True),
    ("rate-0", "cnn_mlp", setp("policy.control_rate_hz", 0), r"control_rate_hz", True),
    ("rate-neg", "cnn_mlp", setp("policy.control_rate_hz", -5.0), r"control_rate_hz", True),
    ("rate-nan", "cnn_mlp", setp("policy.control_rate_hz", NAN), r"control_rate_hz.*finite",
     True),
    ("rate-inf", "cnn_mlp", setp("policy.control_rate_hz", INF), r"control_rate_hz", True),
    ("rate-str", "cnn_mlp", setp("policy.control_rate_hz", "fast"), r"control_rate_hz", True),
    ("state-dim-0", "cnn_mlp", setp("policy.state_dim", 0), r"policy\.state_dim", True),
    ("state-dim-1000", "cnn_mlp", setp("policy.state_dim", 1000), r"policy\.state_dim", True),
    ("state-dim-6", "cnn_mlp", setp("policy.state_dim", 6),
     r"normalization\.state\.\w+: has 7 numbers, expected 6", True),
    ("action-units-mm", "cnn_mlp",
     setp("policy.action_units", ["mm", "mm", "mm", "rad", "rad", "rad", "open_fraction"]),
     r"policy\.action_units\[0\]: 'mm' unknown", True),
    ("action-units-deg", "cnn_mlp",
     setp("policy.action_units", ["m", "m", "m", "rad", "rad", "m", "open_fraction"]),
     r"policy\.action_units: .*nothing converts", True),
    ("action-units-str", "cnn_mlp", setp("policy.action_units", "m"),
     r"policy\.action_units: must be a list", True),
    ("state-units", "cnn_mlp", setp("policy.state_units", ["rad"] * 7),
     r"policy\.state_units", True),
    ("robot-type-int", "cnn_mlp", setp("policy.robot_type", 5), r"policy\.robot_type", True),
    # --- camera / encoder
    ("camera-missing", "cnn_mlp", delp("camera"), r"camera: missing", True),
    ("height-0", "cnn_mlp", setp("camera.height", 0), r"camera\.height", True),
    ("height-1e6", "cnn_mlp", setp("camera.height", 10**6), r"camera\.height", True),
    ("width-str", "cnn_mlp", setp("camera.width", "wide"), r"camera\.width", True),
    ("height-40-to-64", "cnn_mlp", setp("camera.height", 64),
     r"graphs\.\w+\.inputs\.image\.shape", True),
    ("encoding", "cnn_mlp", setp("camera.encoding", "bgr8"), r"camera\.encoding", True),
    ("embed-dim-1e9", "cnn_mlp", setp("encoder.embed_dim", 10**9), r"encoder\.embed_dim",
     True),
    ("embed-dim-32-to-64", "cnn_mlp", setp("encoder.embed_dim", 64), r"tokens\.shape", True),
    ("num-tokens-195", "cnn_mlp", setp("encoder.num_tokens", 195),
     r"encoder\.num_tokens: 195 is not a square", True),
    # --- normalisation
    ("norm-missing", "cnn_mlp", delp("normalization"), r"normalization: missing", True),
    ("scale-0", "cnn_mlp", setp("normalization.action.scale", [0.0] * 7),
     r"normalization\.action\.scale\[0\]", True),
    ("scale-neg", "cnn_mlp", setp("normalization.action.scale", [-1.0] * 7),
     r"normalization\.action\.scale\[0\]", True),
    ("scale-x1000", "cnn_mlp", edit(_scale_up),
     r"normalization\.action\.scale: disagrees with .*policy\.json", True),
    ("offset-len", "cnn_mlp", setp("normalization.action.offset", [0.0] * 3),
     r"normalization\.action\.offset: has 3 numbers, expected 7", True),
    ("offset-str", "cnn_mlp", setp("normalization.state.offset", ["a"] * 7),
     r"normalization\.state\.offset\[0\]: must be a number", True),
    ("offset-nan", "cnn_mlp", setp("normalization.action.offset", [NAN] * 7),
     r"normalization\.action\.offset\[0\]: must be a finite", True),
    # --- graphs and files
    ("graphs-list", "cnn_mlp", setp("graphs", ["encoder.onnx"]), r"graphs: must be a mapping",
     True),
    ("graph-head-missing", "cnn_mlp", delp("graphs.head"), r"graphs\.head: missing", True),
    ("graph-escape", "cnn_mlp", setp("graphs.head.file", "../head.onnx"),
     r"graphs\.head\.file '\.\./head\.onnx' must be a path inside", True),
    ("graph-abs", "cnn_mlp", setp("graphs.head.file", "/etc/passwd"), "inside the bundle",
     True),
    ("graph-file-int", "cnn_mlp", setp("graphs.head.file", 5), r"graphs\.head\.file", True),
    ("graph-unknown", "cnn_mlp", edit(lambda d: d["graphs"].update(
        bogus=dict(d["graphs"]["head"]))), r"graphs\.bogus: unknown graph", True),
    ("graph-input-names", "cnn_mlp", edit(lambda d: d["graphs"]["head"]["inputs"].update(
        extra=d["graphs"]["head"]["inputs"]["state"])), r"graphs\.head\.inputs: names", True),
    ("graph-dtype", "cnn_mlp", setp("graphs.head.output.actions.dtype", "float64"),
     r"graphs\.head\.output\.actions\.dtype", True),
    ("graph-shape-neg", "cnn_mlp", setp("graphs.encoder.inputs.image.shape", [1, -1, 56, 3]),
     r"graphs\.encoder\.inputs\.image\.shape\[1\]", True),
    ("graph-wrong-file", "cnn_mlp", setp("graphs.head.file", "encoder.onnx"),
     r"head\.onnx|encoder\.onnx: graph has inputs", True),
    ("link-outside", "cnn_mlp", link_outside(_outside_copy), "outside the bundle", True),
    ("link-dev-zero", "cnn_mlp", link_outside(lambda b: Path("/dev/zero")), "outside the bundle",
     False),
    ("torch-escape", "cnn_mlp", setp("torch", "../elsewhere"),
     r"torch '\.\./elsewhere/policy\.json' must be a path inside", True),
    ("torch-missing", "cnn_mlp", lambda b: shutil.rmtree(b / "torch"), r"torch/policy\.json",
     True),
    ("torch-copy-horizon", "cnn_mlp", _torch_json("horizon", 8),
     r"policy\.horizon: 4 disagrees with .*policy\.json", True),
    ("torch-copy-kind", "cnn_mlp", _torch_json("action_kind", "ee_absolute"),
     r"policy\.action_kind", True),
    # --- metadata consistent with itself, disagreeing with the ONNX graphs
    ("onnx-horizon", "cnn_mlp", consistent(lambda d: d["policy"].update(horizon=8)),
     r"head\.onnx: tensor 'actions' is tensor\(float\) \[1, 4, 7\]", True),
    ("onnx-camera", "cnn_mlp", consistent(lambda d: d["camera"].update(height=48, width=64)),
     r"encoder\.onnx: tensor 'image'", True),
    ("onnx-embed", "cnn_mlp", consistent(lambda d: d["encoder"].update(embed_dim=48)),
     r"encoder\.onnx: tensor 'tokens'", True),
    ("onnx-cond", "diffusion", consistent(lambda d: d["diffusion"].update(cond_dim=99)),
     r"condition\.onnx: tensor 'cond'", True),
    # --- diffusion
    ("diffusion-missing", "diffusion", delp("diffusion"), r"diffusion: missing", True),
    ("diffusion-in-cnn", "cnn_mlp", setp("diffusion", {"num_inference_steps": 5, "cond_dim": 3,
                                                       "scheduler": {}}),
     r"diffusion: present in a cnn_mlp bundle", True),
    ("steps-0", "diffusion", setp("diffusion.num_inference_steps", 0),
     r"diffusion\.num_inference_steps", True),
    ("steps-1e6", "diffusion", setp("diffusion.num_inference_steps", 10**6),
     r"diffusion\.num_inference_steps", True),
    ("steps-over-train", "diffusion", setp("diffusion.num_inference_steps", 101),
     r"diffusion\.num_inference_steps: must be in 1\.\.100", True),
    ("train-steps-1e12", "diffusion", setp("diffusion.scheduler.num_train_timesteps", 10**12),
     r"diffusion\.scheduler\.num_train_timesteps", True),
    ("beta-schedule", "diffusion", setp("diffusion.scheduler.beta_schedule", "cosine"),
     r"diffusion\.scheduler\.beta_schedule", True),
    ("prediction-type", "diffusion", setp("diffusion.scheduler.prediction_type", "x0"),
     r"diffusion\.scheduler\.prediction_type", True),
    ("steps-offset", "diffusion", setp("diffusion.scheduler.steps_offset", 1000),
     r"diffusion\.scheduler\.steps_offset", True),
    ("trained-betas", "diffusion", setp("diffusion.scheduler.trained_betas", [0.1] * 3),
     r"diffusion\.scheduler\.trained_betas", True),
    ("scheduler-list", "diffusion", setp("diffusion.scheduler", [1, 2]),
     r"diffusion\.scheduler: must be a mapping", True),
    ("scheduler-unknown", "diffusion", setp("diffusion.scheduler.betas_typo", 1),
     r"diffusion\.scheduler\.betas_typo: unknown field", True),
    ("cond-dim-99", "diffusion", setp("diffusion.cond_dim", 99), r"cond\.shape", True),
]


@pytest.mark.parametrize("case_id, kind, mutate, pattern, resign", CASES,
                         ids=[c[0] for c in CASES])
def test_tampered_bundle_is_one_clear_error(bundles: dict[str, Path], tmp_path: Path,
                                            case_id: str, kind: str, mutate: Mutate,
                                            pattern: str, resign: bool) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundles[kind], b, symlinks=True)
    names = list(read_sums(b))
    mutate(b)
    if resign:  # as an editor who knows the format would: sums match the edit
        write_sums(b, [n for n in names if (b / n).is_file()])
    with pytest.raises(TheiaError, match=pattern) as info:
        load(b, "onnxruntime")
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message


def test_case_table_covers_each_part() -> None:
    """The table attacks every section of bundle.yaml and the files around it."""
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 80
    for part in ("yaml", "policy", "horizon", "rate", "units", "camera", "embed", "scale",
                 "graph", "link", "torch", "onnx", "steps", "scheduler"):
        assert any(part in i for i in ids), part


def test_old_bundle_without_new_fields_still_loads(bundles: dict[str, Path],
                                                   tmp_path: Path, caplog) -> None:
    """Bundles exported before robot_type/state_units/action_units load, with a warning."""
    b = tmp_path / "old"
    shutil.copytree(bundles["cnn_mlp"], b)
    edit(lambda d: [d["policy"].pop(k, None) for k in ("robot_type", "state_units",
                                                       "action_units")])(b)
    write_sums(b, list(read_sums(b)))
    with caplog.at_level("WARNING"):
        rt = load(b, "onnxruntime")
    assert rt.meta.robot_type is None
    assert rt.meta.action_units == ("m", "m", "m", "rad", "rad", "rad", "open_fraction")
    assert "no policy.action_units" in caplog.text
    rt.close()
