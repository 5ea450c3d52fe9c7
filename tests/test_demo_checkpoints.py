"""The bundled demo checkpoints (made by `make demo-checkpoints`) are sound and show the method's point."""

from pathlib import Path

import pytest

from explorer.analysis.geometry import ordinality_report
from explorer.backbones.load import load_backbone
from explorer.store.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
NAMES = ["ordinalclip-linear", "ordinalclip-inv_prop", "ordinalclip-normal", "coop", "zero-shot", "ordinalclip-linear-16shot"]


@pytest.fixture(scope="module")
def demo():
    return load_backbone("demo")


@pytest.fixture(scope="module")
def ckpts(demo):
    return {name: load_checkpoint(ROOT / f"{name}.safetensors", backbone=demo) for name in NAMES}


def test_every_demo_checkpoint_loads_on_the_demo_backbone_and_rebuilds(ckpts, demo):
    for name, ckpt in ckpts.items():
        assert ckpt.kind == "full"
        assert ckpt.backbone_spec == "demo"
        assert len(ckpt.ranks) == 21 and ckpt.ranks.unit == "dots"
        rebuilt = ckpt.build_model(demo).prototypes().matrix
        assert (rebuilt - ckpt.prototypes.matrix).abs().max() < 1e-5, name
        assert {"val", "test"} <= set(ckpt.meta["metrics"]), name


def test_ordinalclip_beats_zero_shot_and_is_more_ordered_than_coop(ckpts):
    test = {n: c.meta["metrics"]["test"] for n, c in ckpts.items()}
    assert test["ordinalclip-linear"]["mae_exp"] < test["zero-shot"]["mae_exp"]
    order = {n: ordinality_report(c.prototypes.matrix.numpy())["ordinality"] for n, c in ckpts.items()}
    assert order["ordinalclip-linear"] > order["coop"]


def test_selection_used_val_and_history_sits_beside(ckpts):
    import json

    for name, ckpt in ckpts.items():
        if not ckpt.method.trainable:  # zero-shot: nothing trained, no history
            continue
        rows = [json.loads(line) for line in (ROOT / f"{name}.history.jsonl").read_text().splitlines()]
        best = min(rows, key=lambda r: r["val_mae_exp"])
        assert ckpt.meta["training"]["best_epoch"] == best["epoch"], name


def test_demo_folder_is_small():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and "runs" not in p.parts)
    assert total < 25 * 1024 * 1024
    assert (ROOT / "demo-backbone.safetensors").stat().st_size <= 20 * 1024 * 1024
