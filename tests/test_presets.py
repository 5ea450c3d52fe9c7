"""Zero-shot presets and the template method's prompt ensemble (on the shipped demo backbone)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from app_testdata import demo_backbone

from explorer.cli import main
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.methods import get_method, make_config
from explorer.store.checkpoints import load_checkpoint
from explorer.training.presets import PRESETS, build_preset_checkpoint, build_preset_model, get_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEMPLATES = ["a photo of {} dots.", "a picture showing {} dots.", "{} dots on a plain background."]


@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


def _prototypes(backbone, ranks, **settings):
    config = make_config("zeroshot", num_ranks=len(ranks), **settings)
    with torch.no_grad():
        return get_method("zeroshot").build(backbone, config, ranks, seed=None)()


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
    assert preset.method_config().templates == list(preset.templates)


def test_age_groups_are_adience_groups():
    assert get_preset("age-groups").labels == ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100")


def test_preset_checkpoint_reloads_and_rebuilds_to_the_same_prototypes(demo, tmp_path):
    path = build_preset_checkpoint("age-groups", demo, tmp_path / "groups.safetensors")
    ckpt = load_checkpoint(path)
    assert ckpt.meta["preset"] == "age-groups" and ckpt.ranks.unit == "years"
    assert ckpt.method_config.templates == list(PRESETS["age-groups"].templates)
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
    from explorer.methods.concepts import CONCEPT_SETS
    from explorer.store.checkpoints import load_checkpoint
    from explorer.training.presets import build_preset_checkpoint

    preset = get_preset("age-concepts")
    assert preset.names == CONCEPT_SETS["age"].names
    assert preset.values == (6.0, 15.5, 26.5, 49.5, 82.5)  # child 0-12, teenager 13-18, ..., older adult 65-100
    ckpt = load_checkpoint(build_preset_checkpoint(preset, demo, tmp_path / "concepts.safetensors"))
    assert ckpt.ranks.labels == list(preset.names) and ckpt.ranks.unit == "years"


# --- evaluating a preset on one's own labels (matched to its ranks by value or by name) -----------------


def _own_photos(folder, labels, suffix=".png"):
    """Real image files, one per label (distinct colours and stripes), and their paths."""
    import numpy as np
    from PIL import Image

    folder.mkdir(exist_ok=True)
    paths = []
    for i, _ in enumerate(labels):
        pixels = np.zeros((40, 40, 3), dtype=np.uint8)
        pixels[..., 0], pixels[::2 + i % 4, :, 1], pixels[..., 2] = 20 * i % 256, 200, 255 - 25 * i % 256
        path = folder / f"img{i}{suffix}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _age_csv(tmp_path, ages):
    paths = _own_photos(tmp_path / "photos", ages)
    csv = tmp_path / "photos" / "ages.csv"
    csv.write_text("path,age\n" + "".join(f"{p.name},{a}\n" for p, a in zip(paths, ages)))
    return csv, paths


@pytest.fixture(scope="module")
def age_preset(tmp_path_factory):
    out = tmp_path_factory.mktemp("preset") / "age.safetensors"
    assert main(["zero-shot", "--preset", "age", "--backbone", "demo", "--out", str(out), "--device", "cpu"]) == 0
    return out


def _eval_json(capsys, ckpt, spec, tmp_path, *extra):
    capsys.readouterr()
    assert main(["eval", str(ckpt), spec, "--split", "all", "--json", "--cache-dir", str(tmp_path / "cache"), *extra]) == 0
    import json

    return json.loads(capsys.readouterr().out)


def _predicted_values(capsys, ckpt, paths):
    import json

    capsys.readouterr()
    assert main(["predict", str(ckpt), *map(str, paths), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    return [r["value"] for r in (records if isinstance(records, list) else [records])]


def test_age_preset_evaluates_on_own_ages_matched_by_value(age_preset, tmp_path, capsys):
    ages = [5, 20, 37, 64, 99, 5, 37, 81]
    csv, paths = _age_csv(tmp_path, ages)
    result = _eval_json(capsys, age_preset, f"csv:{csv}", tmp_path)
    values = _predicted_values(capsys, age_preset, paths)
    expected = sum(abs(v - a) for v, a in zip(values, ages)) / len(ages)
    m = result["metrics"]
    assert m["n"] == len(ages) and m["mae_value"] == pytest.approx(expected, abs=1e-4)
    assert m["mae_exp"] == pytest.approx(expected, abs=1e-4)  # ranks 0..100: index units are years
    assert len(m["per_rank_mae"]) == 101 and m["per_rank_mae"][37] is not None and m["per_rank_mae"][36] is None
    assert result["labels"] == {"matched_by": "value", "skipped_outside": 0,
                                "note": "Labels matched to the checkpoint's ranks by value."}


def _error(capsys) -> str:
    """stderr of a failed command less the precision line said when its backbone loaded."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("precision: "), lines
    return lines[1]


def test_labels_outside_the_ranks_are_one_sentence_or_skipped(age_preset, tmp_path, capsys):
    ages = [5, 104, 20, 120, 37, 120]
    csv, paths = _age_csv(tmp_path, ages)
    assert main(["eval", str(age_preset), f"csv:{csv}", "--split", "all", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert _error(capsys) == ("error: 3 of 6 images have labels outside the checkpoint's ranks 0-100 (e.g. 104, 120); "
                              "--skip-bad skips them.")
    result = _eval_json(capsys, age_preset, f"csv:{csv}", tmp_path, "--skip-bad")
    kept = [(p, a) for p, a in zip(paths, ages) if a <= 100]
    values = _predicted_values(capsys, age_preset, [p for p, _ in kept])
    expected = sum(abs(v - a) for v, (_, a) in zip(values, kept)) / len(kept)
    assert result["metrics"]["n"] == 3 and result["metrics"]["mae_value"] == pytest.approx(expected, abs=1e-4)
    assert result["labels"]["skipped_outside"] == 3
    assert main(["eval", str(age_preset), f"csv:{csv}", "--split", "all", "--skip-bad", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "3 images with labels outside them were skipped" in capsys.readouterr().out


def test_decade_names_are_matched_by_name(tmp_path, capsys):
    from explorer.analysis.evaluation import open_eval_split

    out = tmp_path / "decade.safetensors"
    assert main(["zero-shot", "--preset", "decade", "--backbone", "demo", "--out", str(out), "--device", "cpu"]) == 0
    decades = ["1950s", "1930s", "1970s", "1950s", "1990s"]
    paths = _own_photos(tmp_path / "photos", decades)
    (tmp_path / "photos" / "all.txt").write_text("".join(f"{p.name} {d}\n" for p, d in zip(paths, decades)))
    spec = f"list:{tmp_path / 'photos'}:all.txt"
    assert main(["eval", str(out), spec, "--split", "all", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "1 of 5 images has labels outside the checkpoint's ranks (1930s, ..., 1970s) (e.g. 1990s)" in capsys.readouterr().err
    es = open_eval_split(load_checkpoint(out), spec, "all", skip_bad=True)
    assert es.match.by == "name" and es.skipped == 1 and es.labels.tolist() == [2, 0, 4, 2]
    result = _eval_json(capsys, out, spec, tmp_path, "--skip-bad")
    assert result["metrics"]["n"] == 4 and result["labels"]["matched_by"] == "name"


def test_unit_mismatch_is_refused_in_one_sentence(age_preset, tmp_path, capsys):
    assert main(["eval", str(age_preset), "dots:5:4", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert _error(capsys) == ("error: The labels are in dots but the checkpoint's ranks are in years; "
                              "evaluate on labels in the checkpoint's unit.")


def test_match_ranks_by_value_name_and_position():
    from explorer.core.ranks import match_ranks

    ages = Ranks.integers(101, unit="years")
    assert match_ranks(ages, ages).by == "same"
    own = match_ranks(Ranks.integers(4, start=98), ages)  # no unit: matched by value anyway
    assert own.by == "value" and own.index == [98, 99, 100, None]
    halves = match_ranks(Ranks(["1.5", "2"], [1.5, 2.0], "years"), Ranks(["1", "1.5", "2"], [1, 1.5, 2], "Years"))
    assert halves.index == [1, 2]
    groups = Ranks(["0-2", "4-6", "8-12"], [1, 5, 10], "years")
    named = match_ranks(Ranks(["8-12", "0-2", "60-100"], [0, 1, 2]), groups)
    assert named.by == "name" and named.index == [2, 0, None]
    assert match_ranks(Ranks.integers(3), groups).by == "position"  # rank indices of a list file, as before
    with pytest.raises(ExplorerError, match="numbers .* names"):
        match_ranks(Ranks.integers(5), groups)
    with pytest.raises(ExplorerError, match="in decades but .* in years"):
        match_ranks(Ranks.integers(3, unit="decades"), groups)
