"""Tampered encoder checkpoints (``config.json``) and policies (``policy.json``): each edit ends
in one ``TheiaError`` line naming the file and field, checked against the weights' real
shapes before any network is built, so an impossible config never allocates.

The files are written by the real ``save_theia`` / ``save_policy`` (tiny random weights) and
the published layout by the test helper that imitates the hub checkpoints.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers_enc import write_published
from helpers_export import make_policy

from policies.checkpoint import load_encoder, load_theia, save_theia
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.policy import load_policy, save_policy
from policies.translators import TheiaModel, teacher_shapes
from theia_ros.errors import TheiaError

Edit = Callable[[dict], object]
HUGE_ENCODER = {"embed_dim": 8192, "num_heads": 64, "depth": 64}  # ~50e9 parameters


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    enc = TheiaEncoder(EncoderConfig(name="t", embed_dim=32, depth=1, num_heads=2))
    hub = "facebook/dinov2-large"
    model = TheiaModel(enc, teacher_shapes(["dinov2"]),
                       stats={hub: (torch.randn(1024), torch.rand(1024) + 0.5)})
    write_published(root / "published", "tiny", [hub], seed=0)
    return {"enc": save_theia(enc, root / "enc"), "theia": save_theia(model, root / "theia"),
            "published": root / "published",
            "cnn_mlp": save_policy(make_policy("cnn_mlp"), root / "cnn_mlp"),
            "diffusion": save_policy(make_policy("diffusion"), root / "diffusion")}


LOADERS = {"enc": load_encoder, "theia": load_theia, "published": load_theia,
           "cnn_mlp": load_policy, "diffusion": load_policy}
FILES = {"enc": "config.json", "theia": "config.json", "published": "config.json",
         "cnn_mlp": "policy.json", "diffusion": "policy.json"}


def setp(path: str, value: object) -> Edit:
    def fn(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value
    return fn


def many(**values: object) -> Callable[[str], Edit]:
    """Set several fields of one sub-mapping (``many(a=1)("encoder")``)."""
    return lambda part: lambda d: d[part].update(values)


def both(*edits: Edit) -> Edit:
    return lambda d: [e(d) for e in edits]


def scale_std(d: dict) -> None:
    d["normalization"]["action"]["std"] = [s * 10 for s in d["normalization"]["action"]["std"]]


RAW = object()  # marker: the edit value is the file's new bytes

# (case id, source, edit of the parsed JSON or raw bytes, regex of the one-line error)
CASES: list[tuple[str, str, object, str]] = [
    # --- encoder checkpoint config.json
    ("enc-huge-alloc", "enc", many(**HUGE_ENCODER)("encoder"),
     r"model\.safetensors: key 'encoder\.backbone\.cls_token' has shape \[1, 1, 32\]"),
    ("enc-embed-1e6", "enc", setp("encoder.embed_dim", 10**6), r"encoder\.embed_dim: must be"),
    ("enc-depth-1e6", "enc", setp("encoder.depth", 10**6), r"encoder\.depth: must be"),
    ("enc-depth-2", "enc", setp("encoder.depth", 2), r"missing key 'encoder\.backbone\.blocks\.1"),
    ("enc-heads-0", "enc", setp("encoder.num_heads", 0), r"encoder\.num_heads: must be"),
    ("enc-heads-3", "enc", setp("encoder.num_heads", 3), r"encoder: .*not divisible"),
    ("enc-img-225", "enc", setp("encoder.img_size", 225), r"encoder: .*multiple of patch"),
    ("enc-embed-str", "enc", setp("encoder.embed_dim", "big"), r"encoder\.embed_dim: must be an"),
    ("enc-eps-neg", "enc", setp("encoder.ln_eps", -1.0), r"encoder\.ln_eps"),
    ("enc-eps-nan", "enc", setp("encoder.ln_eps", float("nan")), r"encoder\.ln_eps: .*finite"),
    ("enc-encoder-missing", "enc", lambda d: d.pop("encoder"), r"encoder: missing"),
    ("enc-encoder-list", "enc", setp("encoder", [1]), r"encoder: must be a mapping"),
    ("enc-unknown-field", "enc", setp("encoder.mlp_ratio", 4), r"encoder\.mlp_ratio: unknown"),
    ("enc-top-unknown", "enc", setp("extra", 1), r"extra: unknown field"),
    ("enc-version-str", "enc", setp("format_version", "1"), r"format_version '1' not supported"),
    ("enc-version-0", "enc", setp("format_version", 0), r"format_version: must be in"),
    ("enc-teachers-dict", "enc", setp("teachers", {}), r"teachers: must be a list"),
    ("enc-not-utf8", "enc", (RAW, b'{"format": "\xff"}'), r"not UTF-8"),
    ("enc-json-list", "enc", (RAW, b"[1, 2]"), r"mapping at the top level"),
    ("enc-json-invalid", "enc", (RAW, b"{not json"), r"not valid JSON"),
    # --- checkpoint with a translator
    ("th-shape-neg", "theia", setp("teachers", [{"hub_id": "facebook/dinov2-large",
                                                 "shape": [1024, -16, 16]}]),
     r"teachers\[0\]\.shape\[1\]: must be in"),
    ("th-shape-huge", "theia", setp("teachers", [{"hub_id": "facebook/dinov2-large",
                                                  "shape": [10**9, 16, 16]}]),
     r"teachers\[0\]\.shape\[0\]: must be in"),
    ("th-shape-2d", "theia", setp("teachers", [{"hub_id": "facebook/dinov2-large",
                                                "shape": [1024, 16]}]),
     r"teachers\[0\]\.shape: must have 3\.\.3 items"),
    ("th-channels", "theia", setp("teachers", [{"hub_id": "facebook/dinov2-large",
                                                "shape": [512, 16, 16]}]),
     r"feature_stats|has shape|expected mean and std of length 512"),
    ("th-grid-20", "theia", setp("teachers", [{"hub_id": "facebook/dinov2-large",
                                               "shape": [1024, 20, 20]}]),
     r"config\.json: teacher feature size 20x20 not supported"),
    ("th-factor-1e9", "theia", setp("translator_hidden_factor", 1e9),
     r"translator_hidden_factor: must be in"),
    ("th-factor-str", "theia", setp("translator_hidden_factor", "x"),
     r"translator_hidden_factor: must be a number"),
    ("th-factor-2", "theia", setp("translator_hidden_factor", 2.0), r"has shape"),
    ("th-stats-unknown", "theia", setp("feature_stats", ["nobody/x"]),
     r"feature_stats: \['nobody/x'\] is not one of the teachers"),
    ("th-dup-teacher", "theia", lambda d: d["teachers"].append(dict(d["teachers"][0])),
     r"teachers: lists a hub_id twice"),
    # --- published (hub) layout
    ("pub-size-huge", "published", setp("target_feature_sizes.facebook/dinov2-large",
                                        [10**7, 16, 16]), r"target_feature_sizes\["),
    ("pub-factor-str", "published", setp("translator_hidden_size_factor", "abc"),
     r"translator_hidden_size_factor must be a number"),
    ("pub-factor-huge", "published", setp("translator_hidden_size_factor", 1e9),
     r"translator_hidden_size_factor must be a number"),
    # --- policy.json
    ("pol-huge-alloc", "cnn_mlp", both(many(**HUGE_ENCODER)("encoder"),
                                       setp("head.feature_dim", 8192)),
     r"model\.safetensors: key 'encoder\.backbone\.cls_token' has shape \[1, 1, 32\]"),
    ("pol-hidden-1e6", "cnn_mlp", setp("head.hidden_dim", 10**6), r"head\.hidden_dim: must be"),
    ("pol-hidden-65536", "cnn_mlp", setp("head.hidden_dim", 65536), r"key 'head\.mlp\.0\."),
    ("pol-horizon-str", "cnn_mlp", setp("horizon", "4"), r"horizon: must be an integer"),
    ("pol-horizon-0", "cnn_mlp", setp("horizon", 0), r"horizon: must be in"),
    ("pol-horizon-8", "cnn_mlp", setp("horizon", 8), r"head\.horizon: 4 disagrees"),
    ("pol-kind", "cnn_mlp", setp("action_kind", "joints"), r"action_kind: 'joints' unknown"),
    ("pol-type", "cnn_mlp", setp("type", "act"), r"type: 'act' unknown"),
    ("pol-fps-neg", "cnn_mlp", setp("fps", -5), r"fps: must be in"),
    ("pol-robot-int", "cnn_mlp", setp("robot_type", 3), r"robot_type: must be a string"),
    ("pol-head-state", "cnn_mlp", setp("head.state_dim", 6), r"head\.state_dim: 6 disagrees"),
    ("pol-head-grid", "cnn_mlp", setp("head.grid", 20), r"head\.grid: 20 disagrees"),
    ("pol-head-feature", "cnn_mlp", setp("head.feature_dim", 64), r"head\.feature_dim"),
    ("pol-head-unknown", "cnn_mlp", setp("head.dropout", 0.1), r"head\.dropout: unknown"),
    ("pol-head-list", "cnn_mlp", setp("head", [1]), r"head: must be a mapping"),
    ("pol-std-str", "cnn_mlp", setp("normalization.action.std", ["x"] * 7),
     r"normalization\.action\.std\[0\]: must be a number"),
    ("pol-mean-len", "cnn_mlp", setp("normalization.state.mean", [0.0] * 3),
     r"normalization\.state\.mean: has 3 numbers, expected 7"),
    ("pol-norm-missing", "cnn_mlp", lambda d: d.pop("normalization"), r"normalization: missing"),
    ("pol-norm-mode", "cnn_mlp", setp("normalization.mode", "zscore"),
     r"normalization\.mode: 'zscore' unknown"),
    ("pol-scale-x10", "cnn_mlp", scale_std,
     r"normalizer\.action\.scale disagrees with .*policy\.json"),
    ("pol-not-utf8", "cnn_mlp", (RAW, b'{"format": "\xfe"}'), r"not UTF-8"),
    ("pol-unknown-top", "cnn_mlp", setp("notes", "hi"), r"notes: unknown field"),
    ("dif-down-0", "diffusion", setp("head.down_dims", [0, 32]), r"head\.down_dims\[0\]"),
    ("dif-down-100", "diffusion", setp("head.down_dims", [16] * 100),
     r"head\.down_dims: must have 1\.\.8 items"),
    ("dif-groups-3", "diffusion", setp("head.n_groups", 3), r"not divisible by n_groups"),
    ("dif-steps", "diffusion", setp("head.num_inference_steps", 1000),
     r"num_inference_steps > num_train_timesteps"),
    ("dif-beta", "diffusion", setp("head.beta_schedule", "cosine"), r"beta_schedule 'cosine'"),
    ("dif-kernel-4", "diffusion", setp("head.kernel_size", 4), r"kernel_size must be odd"),
    ("dif-timesteps-1e12", "diffusion", setp("head.num_train_timesteps", 10**12),
     r"head\.num_train_timesteps: must be in"),
]


@pytest.mark.parametrize("case_id, source, change, pattern", CASES, ids=[c[0] for c in CASES])
def test_tampered_config_is_one_clear_error(sources: dict[str, Path], tmp_path: Path,
                                            case_id: str, source: str, change: object,
                                            pattern: str) -> None:
    import shutil

    d = tmp_path / source
    shutil.copytree(sources[source], d)
    path = d / FILES[source]
    if isinstance(change, tuple) and change[0] is RAW:
        path.write_bytes(change[1])
    else:
        doc = json.loads(path.read_text())
        change(doc)  # type: ignore[operator]
        path.write_text(json.dumps(doc))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TheiaError, match=pattern) as info:
        LOADERS[source](d)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 512, f"{case_id}: peak memory grew {grown_mb:.0f} MB before the error"


def test_untouched_sources_load(sources: dict[str, Path]) -> None:
    """The table's baseline: every source loads before it is tampered with."""
    for name, path in sources.items():
        assert LOADERS[name](path) is not None, name
