"""The bundled demo checkpoints (made by `make demo-checkpoints`) are sound and show the method's point."""

import math
from pathlib import Path

import pytest
from app_testdata import demo_backbone

from explorer.analysis.evaluation import evaluate_checkpoint
from explorer.analysis.geometry import ordinality_report
from explorer.methods import get_method
from explorer.store.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
NAMES = ["ordinalclip-linear", "ordinalclip-inv_prop", "ordinalclip-normal", "coop", "zero-shot", "ordinalclip-linear-16shot",
         "numclip"]
DATASET = "dots:20"  # what scripts/make_demo_checkpoints.py trains them on
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


@pytest.fixture(scope="module")
def ckpts(demo):
    return {name: load_checkpoint(ROOT / f"{name}.safetensors", backbone=demo) for name in NAMES}


def test_every_demo_checkpoint_loads_on_the_demo_backbone_and_rebuilds(ckpts, demo):
    for name, ckpt in ckpts.items():
        assert ckpt.content == "full"
        assert ckpt.backbone_spec == "demo"
        assert len(ckpt.ranks) == 21 and ckpt.ranks.unit == "dots"
        rebuilt = ckpt.build_model(demo).prototypes().matrix
        assert (rebuilt - ckpt.prototypes.matrix).abs().max() < 1e-5, name
        assert {"val", "test"} <= set(ckpt.meta["metrics"]), name


@pytest.fixture(scope="module")
def recomputed(ckpts, demo, tmp_path_factory):
    """Each checkpoint's test metrics computed now, from the checkpoint and the demo backbone, on the
    dots task's test split (as `ordinal-explorer eval` does); one feature cache for all of them."""
    cache = tmp_path_factory.mktemp("features")
    return {name: evaluate_checkpoint(ckpt, demo, DATASET, split="test", cache_dir=str(cache)) for name, ckpt in ckpts.items()}


def _close(stored, now, tol=1e-4) -> bool:
    if isinstance(stored, list):
        return isinstance(now, list) and len(now) == len(stored) and all(_close(s, n, tol) for s, n in zip(stored, now))
    if stored is None or now is None:
        return stored is None and now is None
    return math.isclose(float(stored), float(now), rel_tol=tol, abs_tol=tol)


@pytest.mark.slow  # ~4 s: the dots:20 set is opened and checked once per checkpoint
def test_stored_test_metrics_are_what_the_checkpoints_score_now(ckpts, recomputed):
    """Every metric in a checkpoint's metadata is reproduced by evaluating that checkpoint on the test
    split (a change to a predictor, the metrics or the splits shows here), NumCLIP included."""
    for name, ckpt in ckpts.items():
        result = recomputed[name]
        assert result["dataset"] == DATASET and result["split"] == "test" and "labels" not in result, name
        stored, now = ckpt.meta["metrics"]["test"], result["metrics"]
        assert stored["n"] == now["n"] == 168, name
        missing = sorted(set(stored) - set(now))
        assert not missing, f"{name}: {missing}"
        wrong = {k: (v, now[k]) for k, v in stored.items() if not _close(v, now[k])}
        assert not wrong, f"{name}: {wrong}"
    assert "mae_value" in ckpts["numclip"].meta["metrics"]["test"]


def test_ordinalclip_beats_zero_shot_and_is_more_ordered_than_coop(ckpts):
    """On the stored test metrics (test_stored_test_metrics_are_what_the_checkpoints_score_now ties them
    to what the checkpoints score)."""
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
        metric = ckpt.meta["training"].get("select_metric") or get_method(ckpt.method_config.method).select_metric
        best = min(rows, key=lambda r: r[f"val_{metric}"])
        assert ckpt.meta["training"]["best_epoch"] == best["epoch"], name


def test_demo_folder_is_small():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and "runs" not in p.parts)
    assert total < 25 * 1024 * 1024
    assert (ROOT / "demo-backbone.safetensors").stat().st_size <= 20 * 1024 * 1024
