"""Zero-shot presets and the template method's prompt ensemble (on the shipped demo backbone)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from explorer.backbones import load_backbone
from explorer.checkpoints import load_checkpoint
from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.methods import get_method, make_config
from explorer.presets import PRESETS, build_preset_checkpoint, build_preset_model, get_preset
from explorer.ranks import Ranks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEMPLATES = ["a photo of {} dots.", "a picture showing {} dots.", "{} dots on a plain background."]


@pytest.fixture(scope="module")
def demo():
    return load_backbone("demo", device="cpu")


def _prototypes(backbone, ranks, **settings):
    config = make_config("template", num_ranks=len(ranks), **settings)
    with torch.no_grad():
        return get_method("template").build(backbone, config, ranks, seed=None)()


def test_single_template_is_unchanged_by_the_ensemble_option(demo):
    ranks = Ranks.integers(6)
    alone = _prototypes(demo, ranks, template=TEMPLATES[0])
    as_list = _prototypes(demo, ranks, templates=TEMPLATES[:1])
    assert torch.equal(alone, as_list)


def test_ensemble_is_the_normalised_mean_of_normalised_features(demo):
    ranks = Ranks.integers(6)
    each = [_prototypes(demo, ranks, template=t) for t in TEMPLATES]
    expected = F.normalize(torch.stack(each).mean(0), dim=-1)
    ensemble = _prototypes(demo, ranks, templates=TEMPLATES)
    torch.testing.assert_close(ensemble, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(ensemble, each[0], atol=1e-3)


def test_ensemble_templates_are_validated(demo):
    with pytest.raises(ExplorerError, match="has no"):
        _prototypes(demo, Ranks.integers(3), templates=["a photo", "a photo of {}"])
    with pytest.raises(ExplorerError, match="empty"):
        _prototypes(demo, Ranks.integers(3), templates=[])


@pytest.mark.parametrize("name, count", [("age", 101), ("age-groups", 8), ("aesthetics", 5), ("decade", 5), ("age-concepts", 5)])
def test_presets_are_data_with_consistent_ranks(name, count):
    preset = get_preset(name)
    assert len(preset.labels) == len(preset.values) == len(preset.names) == count
    assert len(preset.templates) >= 3 and all("{}" in t for t in preset.templates)
    assert list(preset.values) == sorted(preset.values)
    assert preset.learner_config().templates == list(preset.templates)


def test_age_groups_are_adience_groups():
    assert get_preset("age-groups").labels == ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100")


def test_preset_checkpoint_reloads_and_rebuilds_to_the_same_prototypes(demo, tmp_path):
    path = build_preset_checkpoint("age-groups", demo, tmp_path / "groups.safetensors")
    ckpt = load_checkpoint(path)
    assert ckpt.meta["preset"] == "age-groups" and ckpt.ranks.unit == "years"
    assert ckpt.learner_config.templates == list(PRESETS["age-groups"].templates)
    with torch.no_grad():
        rebuilt = ckpt.build_model(demo)()
    torch.testing.assert_close(rebuilt, ckpt.prototypes.matrix, atol=1e-6, rtol=0)
    torch.testing.assert_close(build_preset_model("age-groups", demo)().detach(), rebuilt, atol=1e-6, rtol=0)


def test_cli_zero_shot_preset(tmp_path, capsys):
    out = tmp_path / "decade.safetensors"
    assert main(["zero-shot", "--preset", "decade", "--backbone", "demo", "--out", str(out), "--device", "cpu"]) == 0
    assert "4 templates averaged" in capsys.readouterr().out
    assert load_checkpoint(out).ranks.labels == ["1930s", "1940s", "1950s", "1960s", "1970s"]
    with pytest.raises(SystemExit):
        main(["zero-shot", "--preset", "nope", "--out", str(out)])


def test_age_concepts_are_numclips_bins_valued_at_their_midpoints(demo, tmp_path):
    from explorer.checkpoints import load_checkpoint
    from explorer.concepts import CONCEPT_PRESETS
    from explorer.presets import build_preset_checkpoint

    preset = get_preset("age-concepts")
    assert preset.names == CONCEPT_PRESETS["age"].names
    assert preset.values == (6.0, 15.5, 26.5, 49.5, 82.5)  # child 0-12, teenager 13-18, ..., older adult 65-100
    ckpt = load_checkpoint(build_preset_checkpoint(preset, demo, tmp_path / "concepts.safetensors"))
    assert ckpt.ranks.labels == list(preset.names) and ckpt.ranks.unit == "years"
