"""Methods are plug-ins: old names are aliases (version-1 checkpoints and the old CLI names keep
working), nothing outside explorer/methods branches on a method's name, and a plugged-in method's
option reaches the CLI and the app's Train form."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from explorer import cli, methods
from explorer.methods import ALIASES, REGISTRY, canonical_name, get_method, make_config, method_names
from explorer.store.checkpoints import load_checkpoint
from explorer.training.config import parse_method_list

ROOT = Path(__file__).resolve().parent.parent
OLD_TO_NEW = {"rank": "ordinalclip", "plain": "coop", "template": "zeroshot", "linear": "linear-probe"}


def test_the_alias_table_maps_every_old_name_to_its_method():
    assert ALIASES == OLD_TO_NEW
    assert method_names() == ("ordinalclip", "coop", "zeroshot", "linear-probe", "numclip")
    for old, new in OLD_TO_NEW.items():
        assert canonical_name(old) == new and get_method(old) is get_method(new) and get_method(new).name == new
        assert make_config(old) == make_config(new) and make_config(old).method == new
    assert set(method_names(aliases=True)) == set(REGISTRY) | set(ALIASES)


def test_bundled_version_1_checkpoints_keep_their_old_names_and_load(tmp_path):
    stored = {}
    for path in sorted((ROOT / "checkpoints").glob("*.safetensors")):
        if path.name == "demo-backbone.safetensors":
            continue
        ckpt = load_checkpoint(path)
        stored[path.stem] = ckpt.meta["learner"]["kind"]
        assert ckpt.method is get_method(stored[path.stem]) and ckpt.method_config.method == ckpt.method.name
        assert ckpt.summary()["method"] == ckpt.method.name
    assert stored["ordinalclip-linear"] == "rank" and stored["coop"] == "plain" and stored["zero-shot"] == "template"


def test_a_version_1_learner_without_a_name_is_ordinalclip_and_rebuilds(tmp_path):
    from explorer.backbones.load import load_backbone
    from explorer.store.checkpoints import save_checkpoint

    demo = load_backbone("demo", device="cpu")
    model = get_method("rank").build(demo, make_config("rank", num_ranks=6, num_context_tokens=2), methods.base.Ranks.integers(6))
    path = save_checkpoint(tmp_path / "a.safetensors", model, demo)
    # what version 1 wrote: one prompt-learner config with every field, here without "kind"
    from safetensors import safe_open

    from explorer.backbones.spec import META_KEY
    from explorer.core.fsio import save_safetensors

    with safe_open(str(path), "pt") as f:
        meta, tensors = json.loads(f.metadata()[META_KEY]), {k: f.get_tensor(k) for k in f.keys()}
    legacy = dict(meta["learner"], template="a photo of a {} year old person.", rank_token_counts=None)
    del legacy["kind"]
    old = tmp_path / "old.safetensors"
    save_safetensors(old, tensors, metadata={META_KEY: json.dumps({**meta, "learner": legacy})})
    ckpt = load_checkpoint(old)
    assert ckpt.method.name == "ordinalclip" and ckpt.method_config == model.config
    assert torch.allclose(ckpt.build_model(demo)(), model(), atol=1e-6)


def _train(tmp_path, name: str, learner: str) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{name}.safetensors"
    assert cli.main(["train", "dots:4:6", "--learner", learner, "--context-tokens", "2", "--epochs", "2", "--batch-size", "8",
                     "--seed", "3", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.meta["learner"]["kind"] == canonical_name(learner)
    return ckpt.tensors


@pytest.mark.parametrize("old", ["rank", "plain"])
def test_an_old_cli_name_trains_exactly_what_the_new_name_trains(tmp_path, old, capsys):
    a, b = _train(tmp_path, "old", old), _train(tmp_path, "new", OLD_TO_NEW[old])
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_old_names_in_sweep_lists_and_import_reference():
    assert [c for _, c in parse_method_list("rank:normal,plain,template,linear")] == [
        make_config("ordinalclip", interpolation="normal"), make_config("coop"), make_config("zeroshot"), make_config("linear-probe")]
    parser = cli.build_parser()
    for name in ("rank", "plain", "ordinalclip", "coop", "numclip"):
        args = parser.parse_args(["import-reference", "--ckpt", "x.ckpt", "--clip-weights", "w.pt", "--out", "o", "--learner", name])
        assert args.method == name
    from explorer.store.reference import method_config_from_reference

    for old, new, rows in (("rank", "ordinalclip", 3), ("plain", "coop", 5)):
        with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"):
            config, _ = method_config_from_reference(None, torch.zeros(2, 8), torch.zeros(rows, 1, 8), {"method": old, "num_ranks": 5})
        assert config.method == new


# --- no method names outside explorer/methods -----------------------------------------------------

ALLOWED = ("explorer/methods/", "explorer/store/reference/")  # the reference importer maps a foreign format


def _name_branches(path: Path, names: set[str]) -> list[str]:
    """Comparisons with a method's name, and name tables (dicts keyed by two or more names)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            consts = [c.value for part in (node.left, *node.comparators) for c in ast.walk(part) if isinstance(c, ast.Constant)]
            if any(isinstance(v, str) and v in names for v in consts):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if len(set(keys) & names) >= 2:
                found.append(f"{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_the_static_check_finds_a_name_branch(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('if cfg.kind == "rank":\n    pass\nx = kind in ("coop", "zeroshot")\n'
                   'what = {"plain": "CoOp", "template": "zero-shot"}.get(kind)\nok = row["rank"]\n')
    assert [line.split(":")[0] for line in _name_branches(bad, set(REGISTRY) | set(ALIASES))] == ["1", "3", "4"]


def test_nothing_outside_the_methods_compares_with_a_method_name():
    names = set(REGISTRY) | set(ALIASES)
    sources = sorted((ROOT / "explorer").rglob("*.py")) + sorted((ROOT / "app_pages").rglob("*.py")) + [ROOT / "app.py"]
    found = {str(p.relative_to(ROOT)): b for p in sources if not str(p.relative_to(ROOT)).startswith(ALLOWED)
             and (b := _name_branches(p, names))}
    assert found == {}


def test_the_removed_api_is_gone():
    from explorer.methods.base import Method

    assert not hasattr(Method, "needs_text_encoder") and not hasattr(Method, "learner_state")
    assert not hasattr(__import__("explorer.methods.prompt", fromlist=["x"]), "LEARNER_KINDS")


def test_the_train_form_fields_come_from_the_method_configs():
    from explorer.core.options import form_fields, form_label, widget_for

    def shown(name):
        method = get_method(name)
        return [(f.name, widget_for(f)) for f in form_fields(method.config_class, method.form_fields)]

    assert shown("rank") == [("num_context_tokens", "int"), ("num_base_ranks", "int"), ("interpolation", "choice")]
    assert shown("coop") == [("num_context_tokens", "int")] and shown("zeroshot") == [("template", "text")]
    assert shown("numclip") == [("num_context_tokens", "int"), ("concepts", "text")] and shown("linear-probe") == []
    every = {f.name: widget_for(f) for f in form_fields(get_method("ordinalclip").config_class)}  # form_fields None
    assert every["rank_specific_context"] == "toggle" and every["bandwidth"] == "float" and every["context_init"] == "text"
    assert "rank_names" not in every  # a file: CLI only
    assert "templates" not in {f.name for f in form_fields(get_method("zeroshot").config_class)}  # a list
    assert [form_label(f) for f in form_fields(get_method("ordinalclip").config_class, ("num_base_ranks",))] == ["Base ranks"]
