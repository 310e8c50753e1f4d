"""Which teachers Theia distils from, and the shape of each teacher's feature map.

Torch-free on purpose: the distillation data tools (teacher feature extraction, feature
caches, statistics) need these facts without building any network.

Shapes are ``(C, H, W)`` of the *spatial* teacher features that the translators predict
(see ``/work/shared/reference/official-theia-format.md``). A translator for a teacher
outputs ``[B, H * W, C]`` tokens in the teacher's normalised feature space.

Example::

    spec = TEACHERS["facebook/dinov2-large"]      # TeacherSpec(..., channels=1024, ...)
    [t for t in TEACHER_SETS["cdiv"]]             # the three teachers of the main models
    teacher_id("openai/clip-vit-large-patch14")   # 'openai/clip-vit-large-patch14'
"""

from __future__ import annotations

from dataclasses import dataclass

from theia_ros.errors import TheiaError


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher vision foundation model.

    Args:
        hub_id: Hugging Face hub id of the teacher, e.g. ``facebook/dinov2-large``.
        short: short name used in CLI flags and logs, e.g. ``dinov2``.
        channels: feature channels C_t.
        height: feature-map rows H_t.
        width: feature-map columns W_t.
        feature: which activation is the target (for the feature extractor).
    """

    hub_id: str
    short: str
    channels: int
    height: int
    width: int
    feature: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C_t, H_t, W_t)``."""
        return (self.channels, self.height, self.width)

    @property
    def num_tokens(self) -> int:
        """``H_t * W_t``: tokens a translator outputs for this teacher."""
        return self.height * self.width

    @property
    def teacher_id(self) -> str:
        """Key used in module/state-dict names (hub id with '.' -> '_')."""
        return teacher_id(self.hub_id)


TEACHERS: dict[str, TeacherSpec] = {
    spec.hub_id: spec
    for spec in (
        TeacherSpec("openai/clip-vit-large-patch14", "clip", 1024, 16, 16,
                    "vision tower last hidden state, patch tokens (before post-LN)"),
        TeacherSpec("facebook/dinov2-large", "dinov2", 1024, 16, 16,
                    "last hidden state, patch tokens"),
        TeacherSpec("google/vit-huge-patch14-224-in21k", "vit", 1280, 16, 16,
                    "last hidden state, patch tokens"),
        TeacherSpec("facebook/sam-vit-huge", "sam", 256, 64, 64,
                    "vision encoder image embeddings"),
        TeacherSpec("LiheYoung/depth-anything-large-hf", "depth", 32, 64, 64,
                    "DPT head features before the final conv, resized to 64x64"),
    )
}

# Teacher sets of the published models (paper: C=CLIP, D=DINOv2, I/V=ViT, S=SAM, D=Depth).
TEACHER_SETS: dict[str, tuple[str, ...]] = {
    "cdiv": ("openai/clip-vit-large-patch14", "facebook/dinov2-large",
             "google/vit-huge-patch14-224-in21k"),
    "cddsv": ("openai/clip-vit-large-patch14", "facebook/dinov2-large",
              "google/vit-huge-patch14-224-in21k", "facebook/sam-vit-huge",
              "LiheYoung/depth-anything-large-hf"),
}

# Published checkpoints: theaiinstitute/theia-{size}-patch16-224-{set}.
PUBLISHED_MODELS: dict[str, tuple[str, str]] = {
    f"theaiinstitute/theia-{size}-patch16-224-{tset}": (f"theia_{size}", tset)
    for size in ("tiny", "small", "base")
    for tset in ("cdiv", "cddsv")
}


def teacher_id(hub_id: str) -> str:
    """Hub id -> the key used in published state dicts ('.' replaced by '_', '/' kept)."""
    return hub_id.replace(".", "_")


def get_teacher(name: str) -> TeacherSpec:
    """Look a teacher up by hub id, teacher id or short name (``clip``, ``dinov2``, ...)."""
    for spec in TEACHERS.values():
        if name in (spec.hub_id, spec.short, spec.teacher_id):
            return spec
    known = ", ".join(f"{s.short} ({s.hub_id})" for s in TEACHERS.values())
    raise TheiaError(f"unknown teacher {name!r}; known teachers: {known}")


def resolve_teachers(names: str | list[str] | tuple[str, ...]) -> list[TeacherSpec]:
    """A set name (``cdiv``/``cddsv``), a comma list or a list of names -> specs, in order."""
    if isinstance(names, str):
        if names in TEACHER_SETS:
            return [TEACHERS[h] for h in TEACHER_SETS[names]]
        names = [n.strip() for n in names.split(",") if n.strip()]
    specs = [get_teacher(n) for n in names]
    if not specs:
        raise TheiaError("no teachers given; name a set (cdiv, cddsv) or teachers")
    if len({s.hub_id for s in specs}) != len(specs):
        raise TheiaError(f"teachers listed twice in {list(names)}")
    return specs
