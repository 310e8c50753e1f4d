"""Every field of ``bundle.yaml``, typed and bounded: the one place that lists them.

``theia_ros.runtime.bundle.read_bundle`` parses the file with ``theia_ros.schema.parse``
against ``BundleDoc`` (types, ranges, choices, unknown fields), then checks the rules that
span sections (lengths against dims, declared graph shapes against the policy) and the
files themselves. Export (``training.export.bundle_writer``) checks what it writes against
the same classes, so writer and reader cannot drift apart.

To add a field: add it here with a default (bundles written before it still load), write it
in ``bundle_writer._bundle_yaml``, and read it where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from theia_ros.schema import fld
from theia_ros.types import ACTION_DIM, ActionKind

FORMAT = "theia-ros-bundle"
FORMAT_VERSION = 1
POLICY_TYPES = ("cnn_mlp", "diffusion")
ACTION_KINDS = tuple(k.value for k in ActionKind)
NORM_MODES = ("mean_std", "min_max")
TENSOR_DTYPES = ("uint8", "float32")
# The units adapters take and report; the runtime converts nothing, so a bundle must use them.
UNITS = ("m", "rad", "open_fraction")
ACTION_UNITS = ("m", "m", "m", "rad", "rad", "rad", "open_fraction")
MAX_SIDE_PX = 8192
MAX_DIM = 1 << 16


def state_units(state_dim: int) -> tuple[str, ...]:
    """Arm joint positions in rad, then the gripper open fraction."""
    return ("rad",) * (state_dim - 1) + ("open_fraction",)


@dataclass(frozen=True)
class PolicySection:
    """``policy:`` what the numbers in and out mean."""

    type: str = fld(choices=POLICY_TYPES)
    action_kind: str = fld(choices=ACTION_KINDS)
    action_dim: int = fld(choices=(ACTION_DIM,))
    horizon: int = fld(ge=1, le=1000)
    control_rate_hz: float = fld(gt=0, le=1000)
    state_dim: int = fld(ge=2, le=64)
    n_obs_steps: int = fld(1, ge=1, le=64)  # observation history length T
    # the dataset's robot_type; None: exported before bundles recorded it
    robot_type: str | None = fld(None)
    action_units: list[str] | None = fld(None, choices=UNITS)  # None: ACTION_UNITS
    state_units: list[str] | None = fld(None, choices=UNITS)  # None: state_units(S)
    state_layout: str = fld("")
    source: str = fld("")


@dataclass(frozen=True)
class CameraSection:
    """``camera:`` the image the encoder graph takes."""

    name: str = fld()
    height: int = fld(ge=1, le=MAX_SIDE_PX)
    width: int = fld(ge=1, le=MAX_SIDE_PX)
    encoding: str = fld("rgb8", choices=("rgb8",))


@dataclass(frozen=True)
class EncoderSection:
    """``encoder:`` which encoder, and the token grid it outputs."""

    embed_dim: int = fld(ge=1, le=MAX_DIM)
    num_tokens: int = fld(ge=1, le=MAX_DIM)
    id: str | None = fld(None)
    config: dict[str, Any] = fld({})
    image_size: int | None = fld(None, ge=1, le=MAX_SIDE_PX)
    preprocess: dict[str, Any] = fld({})


@dataclass(frozen=True)
class NormStats:
    """One field's statistics; ``offset``/``scale`` are what the runtime applies."""

    offset: list[float] = fld(min_len=1, max_len=64)
    scale: list[float] = fld(gt=0, min_len=1, max_len=64)
    mode: str | None = fld(None, choices=NORM_MODES)
    mean: list[float] | None = fld(None)
    std: list[float] | None = fld(None)
    min: list[float] | None = fld(None)
    max: list[float] | None = fld(None)


@dataclass(frozen=True)
class NormalizationSection:
    """``normalization:`` host-side state/action normalisation."""

    state: NormStats = fld()
    action: NormStats = fld()
    mode: str | None = fld(None, choices=NORM_MODES)
    where: str = fld("")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output."""

    shape: list[int] = fld(ge=1, le=MAX_DIM * 4, min_len=1, max_len=8)
    dtype: str = fld(choices=TENSOR_DTYPES)


@dataclass(frozen=True)
class GraphSpec:
    """``graphs.<name>:`` a graph file and its declared inputs and output."""

    file: str = fld()
    inputs: dict[str, TensorSpec] = fld()
    output: dict[str, TensorSpec] = fld()


@dataclass(frozen=True)
class InputsSection:
    """``inputs:`` the ROS topics the nodes expect."""

    topics: dict[str, str] = fld({})


@dataclass(frozen=True)
class ExportSection:
    """``export:`` how the bundle was made (informational)."""

    opset: int | None = fld(None, ge=1, le=1000)
    exporter: str | None = fld(None)
    torch: str | None = fld(None)
    parity_tolerance: float | None = fld(None, ge=0)
    parity: list[Any] = fld([])
    tensorrt_static_check: Any = fld(None)  # the TensorRT versions the graphs were checked for


@dataclass(frozen=True)
class DiffusionSection:
    """``diffusion:`` the host-side DDIM loop (scheduler: ``runtime.ddim.DDIMConfig``)."""

    num_inference_steps: int = fld(ge=1, le=1000)
    cond_dim: int = fld(ge=1, le=MAX_DIM)
    scheduler: dict[str, Any] = fld()
    sampler: str = fld("")


@dataclass(frozen=True)
class BundleDoc:
    """The whole ``bundle.yaml``."""

    format: str = fld(choices=(FORMAT,))
    format_version: int = fld(choices=(FORMAT_VERSION,))
    policy: PolicySection = fld()
    camera: CameraSection = fld()
    encoder: EncoderSection = fld()
    normalization: NormalizationSection = fld()
    graphs: dict[str, GraphSpec] = fld()
    inputs: InputsSection = fld(InputsSection())
    diffusion: DiffusionSection | None = fld(None)
    export: ExportSection | None = fld(None)
    torch: str | None = fld(None)  # the policy checkpoint copy, relative to the bundle
    # every camera in the head's order, all at ``camera``'s size (None: just ``camera.name``)
    cameras: list[str] | None = fld(None, min_len=1, max_len=16)
    created_by: str = fld("")
    created_at: str = fld("")
