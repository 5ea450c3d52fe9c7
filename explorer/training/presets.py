"""Zero-shot presets: ranks and a prompt ensemble per task, as data, turned into template checkpoints.

A preset is ranks (labels, values, unit), the name each rank gets in the prompts, and several
templates; :func:`build_preset_checkpoint` averages the normalised text features of the templates
per rank (CLIP's zero-shot recipe, the ``zeroshot`` method with ``templates``) and writes an
ordinary explorer checkpoint that reloads and rebuilds to the same prototypes.

=================  ==========================================================================
``age``            ages 0-100 (years), 101 ranks
``age-groups``     Adience's 8 groups: 0-2, 4-6, 8-12, 15-20, 25-32, 38-43, 48-53, 60-100
``aesthetics``     aesthetic scores 1-5
``decade``         the decade a photo was taken, 1930s-1970s
``age-concepts``   NumCLIP-style: the 5 age concepts (child ... older adult), valued at their bins' midpoints
=================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from explorer.core.errors import ExplorerError
from explorer.core.fsio import safe_filename
from explorer.core.ranks import Ranks
from explorer.data.datasets.adience import ADIENCE_GROUPS
from explorer.methods.concepts import CONCEPT_SETS


@dataclass(frozen=True)
class Preset:
    """One zero-shot task: rank labels / values / unit, prompt names of the ranks, templates."""

    name: str
    title: str
    labels: tuple[str, ...]
    values: tuple[float, ...]
    names: tuple[str, ...]
    templates: tuple[str, ...]
    unit: str = ""
    rank_name: str = Ranks.name  # what one rank is called ("age", "decade", ...)

    def ranks(self) -> Ranks:
        """The preset's ranks."""
        return Ranks(list(self.labels), list(self.values), self.unit, self.rank_name)

    def method_config(self):
        """The zero-shot config of the ensemble."""
        from explorer.methods.zeroshot import ZeroShotConfig

        return ZeroShotConfig(num_ranks=len(self.labels), rank_names=list(self.names),
                              template=self.templates[0], templates=list(self.templates))


def _concept_midpoints(starts: tuple[float, ...], last: float) -> tuple[float, ...]:
    """Midpoint of each bin [start_k, start_{k+1} - 1], the last one closed at ``last``."""
    ends = [b - 1 for b in starts[1:]] + [last]
    return tuple((a + b) / 2 for a, b in zip(starts, ends))


_AGE_CONCEPTS = CONCEPT_SETS["age"]
_AGES = tuple(str(a) for a in range(101))
_DECADES = tuple(f"{y}s" for y in range(1930, 1980, 10))

PRESETS: dict[str, Preset] = {
    "age": Preset(
        "age", "Age in years (0-100)", _AGES, tuple(float(a) for a in range(101)), _AGES,
        ("a photo of a {} year old person.", "a photo of the face of a {} year old person.",
         "a close-up photo of a {} year old person.", "a cropped photo of a {} year old person's face.",
         "a portrait of a person who is {} years old.", "a selfie of a {} year old person."),
        unit="years", rank_name="age"),
    "age-groups": Preset(
        "age-groups", "Adience age groups (8)", tuple(f"{a}-{b}" for a, b in ADIENCE_GROUPS),
        tuple((a + b) / 2 for a, b in ADIENCE_GROUPS), tuple(f"{a} to {b}" for a, b in ADIENCE_GROUPS),
        ("a photo of a person aged {} years.", "a photo of the face of a person aged {} years.",
         "a close-up photo of someone who is {} years old.", "a cropped face of a person between {} years old."),
        unit="years", rank_name="age group"),
    "aesthetics": Preset(
        "aesthetics", "Aesthetic score (1-5)", ("1", "2", "3", "4", "5"), (1.0, 2.0, 3.0, 4.0, 5.0),
        ("terrible", "poor", "average", "good", "excellent"),
        ("a {} photo.", "a photo of {} quality.", "a {} picture.", "an aesthetically {} photograph."),
        rank_name="aesthetic score"),
    "decade": Preset(
        "decade", "Decade a photo was taken (1930s-1970s)", _DECADES, tuple(float(y) for y in range(1930, 1980, 10)),
        _DECADES,
        ("a photo from the {}.", "a photograph taken in the {}.", "an old photo from the {}.",
         "a historical color photo from the {}."),
        rank_name="decade"),
    "age-concepts": Preset(
        "age-concepts", "Age concepts (NumCLIP's child ... older adult)", _AGE_CONCEPTS.names,
        _concept_midpoints(_AGE_CONCEPTS.starts, 100.0), _AGE_CONCEPTS.names,
        ("a photo of a {}.", "a photo of the face of a {}.", "a close-up photo of a {}.", "a portrait of a {}."),
        unit="years", rank_name="age concept"),
}


def get_preset(name: str) -> Preset:
    """The preset ``name``; one sentence naming the choices otherwise."""
    preset = PRESETS.get(name)
    if preset is None:
        raise ExplorerError(f"Unknown zero-shot preset '{name}'; choose one of {', '.join(PRESETS)}.")
    return preset


def build_preset_model(preset: Preset | str, backbone):
    """The zero-shot model of a preset on ``backbone`` (prompt ensemble, nothing learned)."""
    from explorer.methods.zeroshot import ZeroShot

    preset = get_preset(preset) if isinstance(preset, str) else preset
    return ZeroShot.build(backbone, preset.method_config(), preset.ranks(), seed=None)


def build_preset_checkpoint(preset: Preset | str, backbone, out: str | Path, name: str | None = None) -> Path:
    """Write the preset's zero-shot checkpoint for ``backbone`` to ``out`` (atomically); returns the path."""
    import torch

    from explorer.store.checkpoints import save_checkpoint

    preset = get_preset(preset) if isinstance(preset, str) else preset
    with torch.no_grad():
        model = build_preset_model(preset, backbone)
        return save_checkpoint(out, model, backbone, name=name or f"zero-shot {preset.name} ({backbone.spec})",
                               extra={"preset": preset.name})


def preset_checkpoint_path(folder: str | Path, preset: str, spec: str) -> Path:
    """Where the preset checkpoint of ``spec`` goes in ``folder`` (a file name made from both)."""
    safe = safe_filename(spec.replace("hf-hub:", "hub-"), sep="-", strip="-.", default="backbone")
    return Path(folder) / f"zeroshot-{preset}-{safe[:80]}.safetensors"


def build_preset_for(spec: str, preset: str, folder: str | Path, backbone=None) -> Path:
    """Write the zero-shot ``preset`` checkpoint on backbone ``spec`` into ``folder`` (loading it unless
    given); returns the path."""
    from explorer.backbones.load import load_backbone

    get_preset(preset)  # a bad name fails before any loading
    backbone = backbone if backbone is not None else load_backbone(spec)
    return build_preset_checkpoint(preset, backbone, preset_checkpoint_path(folder, preset, spec))
