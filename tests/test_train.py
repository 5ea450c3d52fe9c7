"""Training runs end to end (explorer.training.trainer, the train/eval/sweep/embed commands) on tiny dots sets.

The objective itself is tested in test_objective.py. Everything here is real: the demo backbone,
files on disk, subprocesses where a crash has to be real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from explorer import cli
from explorer.analysis.evaluation import evaluate_checkpoint
from explorer.backbones.load import load_backbone
from explorer.core.errors import ExplorerError
from explorer.data.datasets import open_dataset
from explorer.data.features import FeatureCache, content_key
from explorer.methods import canonical_name
from explorer.store.checkpoints import load_checkpoint
from explorer.training.config import Cancelled, TrainConfig
from explorer.training.parts import prepare_data
from explorer.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
DATA = "dots:4:6"  # 5 ranks, 30 images: 21 train / 3 val / 6 test
HISTORY_KEYS = {"epoch", "train_loss", "lr", "seconds", "val_mae_exp", "val_mae_max", "val_acc_max", "val_cs1", "val_qwk", "val_n"}




pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A feature cache shared by this module's runs (never the repository's)."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("demo", device="cpu")


def config(out: Path, cache: Path, **kw) -> TrainConfig:
    base = dict(dataset=DATA, out=str(out), method_config={"method": "ordinalclip", "num_context_tokens": 4}, epochs=3, batch_size=8,
                device="cpu", cache_dir=str(cache))
    return TrainConfig(**{**base, **kw})


def read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


LEARNERS = {
    "rank-linear": {"method": "ordinalclip", "interpolation": "linear", "num_context_tokens": 4},
    "rank-inv_prop": {"method": "ordinalclip", "interpolation": "inv_prop", "num_context_tokens": 4},
    "rank-normal": {"method": "ordinalclip", "interpolation": "normal", "num_context_tokens": 4},
    "plain": {"method": "coop", "num_context_tokens": 4},
    "template": {"method": "zeroshot"},
    "linear": {"method": "linear-probe"},
}


@pytest.mark.parametrize("label", list(LEARNERS))
def test_frozen_run_end_to_end(label, tmp_path, cache, backbone):
    events = []
    result = train(config(tmp_path / "run.safetensors", cache, method_config=dict(LEARNERS[label])), progress=events.append)
    ckpt = load_checkpoint(result.checkpoint, backbone=backbone)
    assert ckpt.content == ("prototypes" if label == "linear" else "full")
    assert ckpt.prototypes.matrix.shape == (5, backbone.embed_dim)
    assert not result.cancelled and not (tmp_path / "run.resume.safetensors").exists()

    history = read_history(result.history_path) if result.history_path.exists() else []
    assert history == result.history
    epochs = 0 if label == "template" else 3
    assert [h["epoch"] for h in history] == list(range(epochs))
    for h in history:
        assert HISTORY_KEYS <= set(h) and not any(k.startswith("test") for k in h)
        assert np.isfinite(h["train_loss"]) and h["val_n"] == 3

    # the checkpoint is the best epoch by validation MAE, chosen without the test split
    training, metrics = ckpt.meta["training"], ckpt.meta["metrics"]
    if history:
        best = int(np.argmin([h["val_mae_exp"] for h in history]))
        assert training["best_epoch"] == result.best_epoch == best
        assert metrics["val"]["mae_exp"] == pytest.approx(history[best]["val_mae_exp"], abs=1e-9)
    val = evaluate_checkpoint(ckpt, backbone, DATA, split="val", cache_dir=str(cache))["metrics"]
    assert val["mae_exp"] == pytest.approx(metrics["val"]["mae_exp"], abs=1e-5)  # stored prototypes = best epoch's
    assert metrics["test"]["n"] == 6 and result.test_metrics["mae_exp"] == pytest.approx(metrics["test"]["mae_exp"])
    test = evaluate_checkpoint(ckpt, backbone, DATA, split="test", cache_dir=str(cache))["metrics"]
    assert test["mae_exp"] == pytest.approx(metrics["test"]["mae_exp"], abs=1e-5)
    assert training["data"]["num_train"] == 21 and training["learner"]["kind"] == canonical_name(LEARNERS[label]["method"])

    # progress: stages in order, fractions in [0, 1]
    stages = [e.stage for e in events]
    expected = ["load", "embed"] + (["train", "epoch"] if epochs else []) + ["test", "done"]
    assert [s for s in dict.fromkeys(stages)] == expected
    assert stages[-1] == "done" and all(0.0 <= e.fraction <= 1.0 for e in events)
    assert sum(e.stage == "epoch" for e in events) == epochs


@pytest.mark.slow
def test_training_lowers_the_loss_and_beats_the_untrained_model(tmp_path, cache):
    kw = dict(dataset="dots:5:20", method_config={"method": "ordinalclip"}, batch_size=32)
    untrained = train(config(tmp_path / "untrained.safetensors", cache, epochs=0, **kw))
    started = time.perf_counter()
    result = train(config(tmp_path / "trained.safetensors", cache, epochs=30, **kw))
    seconds = time.perf_counter() - started
    losses = [h["train_loss"] for h in result.history]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert result.val_metrics["mae_exp"] < 0.75 * untrained.val_metrics["mae_exp"]
    assert result.test_metrics["mae_exp"] < untrained.test_metrics["mae_exp"]
    print(f"30 epochs on dots:5:20 in {seconds:.1f} s; val MAE {untrained.val_metrics['mae_exp']:.3f} -> {result.val_metrics['mae_exp']:.3f}")


def test_should_stop_ends_the_run_after_the_current_step(tmp_path, cache):
    out = tmp_path / "run.safetensors"
    steps_per_epoch = 3  # 21 training images, batch 8
    events = []
    state = {"train": 0, "asked_after": None}

    def on_event(p):
        events.append(p)
        state["train"] += p.stage == "train"

    def stop():
        if state["train"] >= 2 * steps_per_epoch + 1:
            state["asked_after"] = state["asked_after"] or state["train"]
            return True
        return False

    result = train(config(out, cache, epochs=5), progress=on_event, should_stop=stop)
    assert result.cancelled and result.test_metrics is None
    assert state["train"] == state["asked_after"] == 2 * steps_per_epoch + 1  # no step after the request
    assert [h["epoch"] for h in result.history] == [0, 1] and len(read_history(result.history_path)) == 2
    assert "test" not in [e.stage for e in events]
    ckpt = load_checkpoint(out)  # the best checkpoint so far
    assert ckpt.meta["training"]["best_epoch"] == result.best_epoch in (0, 1)
    assert (tmp_path / "run.resume.safetensors").is_file()  # --resume can continue it

    # a stop before this run wrote any checkpoint raises Cancelled, even with an older file at --out
    before = out.read_bytes()
    with pytest.raises(Cancelled, match="before its first checkpoint"):
        train(config(out, cache, epochs=5), should_stop=lambda: True)
    assert out.read_bytes() == before and load_checkpoint(out)
    # a stop while embedding (empty cache) also raises Cancelled and writes nothing
    with pytest.raises(Cancelled):
        train(config(tmp_path / "other.safetensors", tmp_path / "empty-cache", epochs=5), should_stop=lambda: True)
    assert not (tmp_path / "other.safetensors").exists()


@pytest.mark.slow
def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path, cache, capsys):
    out = tmp_path / "run.safetensors"
    resume_file = tmp_path / "run.resume.safetensors"
    args = ["train", DATA, "--method", "ordinalclip", "--context-tokens", "4", "--epochs", "50", "--batch-size", "8",
            "--device", "cpu", "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "explorer", *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_file() and resume_file.is_file()):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    ckpt = load_checkpoint(out)
    assert ckpt.meta["training"]["epochs"] == 50
    left = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert {"run.safetensors", "run.resume.safetensors", "run.history.jsonl"} <= left
    assert all(name.endswith(".tmp") for name in left - {"run.safetensors", "run.resume.safetensors", "run.history.jsonl"}), left
    with safe_open(str(resume_file), "pt") as f:
        saved_epoch = json.loads(f.metadata()["resume"])["epoch"]
    before = [json.loads(line) for line in (tmp_path / "run.history.jsonl").read_text().splitlines()[: saved_epoch + 1]]
    assert [h["epoch"] for h in before] == list(range(saved_epoch + 1))
    # what a kill in the middle of an atomic write leaves behind: cleaned by the next run
    (tmp_path / ".run.safetensors.k1ll3d.tmp").write_bytes(b"half")
    (tmp_path / "run.resume.tmp").write_bytes(b"half")
    with open(tmp_path / "run.history.jsonl", "a") as f:
        f.write('{"epoch": 4')  # a torn last line

    assert cli.main([*args, "--resume", "--json"]) == 0
    summary = json_out(capsys)
    history = read_history(tmp_path / "run.history.jsonl")
    assert [h["epoch"] for h in history] == list(range(50))  # continued, no duplicate epoch
    assert history[: saved_epoch + 1] == before  # the epochs before the kill were not run again
    assert summary["test"] is not None and summary["best_epoch"] == load_checkpoint(out).meta["training"]["best_epoch"] + 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["run.history.jsonl", "run.safetensors"]


@pytest.mark.slow
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path, cache):
    def final_state(name):
        """Copy the resume state written at the end of the last epoch (before the run deletes it)."""
        def on_event(p):
            if p.stage == "epoch" and p.epoch == p.epochs:
                shutil.copy(tmp_path / f"{name}.resume.safetensors", tmp_path / f"{name}.final.safetensors")
        return on_event

    def params(name):
        with safe_open(str(tmp_path / f"{name}.final.safetensors"), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith("param.")}

    straight = train(config(tmp_path / "a.safetensors", cache, epochs=6), progress=final_state("a"))
    steps = {"n": 0}

    def count(p):
        steps["n"] += p.stage == "train"

    # interrupted one step into epoch 4 (3 steps per epoch), then resumed
    first = train(config(tmp_path / "b.safetensors", cache, epochs=6), progress=count, should_stop=lambda: steps["n"] >= 10)
    assert first.cancelled and len(first.history) == 3
    resumed = train(config(tmp_path / "b.safetensors", cache, epochs=6), progress=final_state("b"), resume=True)

    a, b = params("a"), params("b")
    assert set(a) == set(b) and a
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in straight.history], rel=1e-9)
    assert [h["val_mae_exp"] for h in resumed.history] == pytest.approx([h["val_mae_exp"] for h in straight.history], abs=1e-6)
    ca, cb = load_checkpoint(tmp_path / "a.safetensors"), load_checkpoint(tmp_path / "b.safetensors")
    assert torch.allclose(ca.prototypes.matrix, cb.prototypes.matrix, atol=1e-5)
    assert resumed.test_metrics["mae_exp"] == pytest.approx(straight.test_metrics["mae_exp"], abs=1e-6)


@pytest.mark.slow
def test_finetune_writes_and_uses_its_own_backbone(tmp_path, backbone):
    out = tmp_path / "ft.safetensors"
    result = train(config(out, tmp_path / "cache", dataset="dots:3:4", mode="finetune", epochs=2, image_lr=1e-3))
    ckpt = load_checkpoint(out)
    weights = (tmp_path / "ft.backbone.safetensors").resolve()
    assert weights.is_file() and ckpt.backbone_spec == f"ordinalclip-demo@{weights}"
    tuned = load_backbone(ckpt.backbone_spec, device="cpu")
    ckpt.check_backbone(tuned)
    assert tuned.backbone_id != backbone.backbone_id
    with pytest.raises(ExplorerError, match="was made with backbone"):
        ckpt.check_backbone(backbone)
    demo_visual, tuned_visual = backbone.model.visual.state_dict(), tuned.model.visual.state_dict()
    assert any(not torch.equal(demo_visual[k], tuned_visual[k]) for k in demo_visual)
    text_keys = [k for k in backbone.model.state_dict() if not k.startswith("visual.")]
    assert all(torch.equal(backbone.model.state_dict()[k], tuned.model.state_dict()[k]) for k in text_keys)
    # predicting with it: the stored test metrics are those of the saved (best-epoch) image encoder
    test = evaluate_checkpoint(ckpt, tuned, "dots:3:4", split="test", cache_dir=str(tmp_path / "cache"))["metrics"]
    assert test["mae_exp"] == pytest.approx(result.test_metrics["mae_exp"], abs=1e-5)
    image = open_dataset("dots:3:4").load_image(0)
    assert ckpt.prototypes.predict(tuned.encode_images([image])).probs.shape == (1, 4)


def test_cli_train_eval_embed_and_bad_spec(tmp_path, cache, backbone, capsys):
    out = tmp_path / "cli.safetensors"
    code = cli.main(["train", DATA, "--method", "ordinalclip", "--context-tokens", "4", "--epochs", "2", "--out", str(out),
                     "--cache-dir", str(cache), "--device", "cpu", "--json", "--quiet"])
    assert code == 0
    summary = json_out(capsys)
    assert summary["checkpoint"] == str(out) and summary["val"]["n"] == 3 and summary["test"]["n"] == 6
    assert 1 <= summary["best_epoch"] <= 2

    assert cli.main(["eval", str(out), DATA, "--split", "test", "--json", "--cache-dir", str(cache), "--quiet"]) == 0
    evaluated = json_out(capsys)
    assert evaluated["split"] == "test"
    for key, value in summary["test"].items():
        assert evaluated["metrics"][key] == pytest.approx(value, abs=1e-6), key

    fresh = tmp_path / "embed-cache"
    assert cli.main(["embed", DATA, "--cache-dir", str(fresh), "--device", "cpu", "--quiet"]) == 0
    assert "30 images embedded" in capsys.readouterr().out
    dataset = open_dataset(DATA)
    assert len(FeatureCache(backbone, fresh)) == len({content_key(dataset, s) for s in dataset.samples})

    for spec in ("dots:x", "nosuchkind:abc", str(tmp_path / "missing")):
        assert cli.main(["train", spec, "--out", str(tmp_path / "bad.safetensors"), "--cache-dir", str(cache), "--device", "cpu",
                         "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()  # the precision, said first, then one error line
        assert len(err) == 2 and err[0].startswith("precision: ") and err[1].startswith("error: "), err
    assert not (tmp_path / "bad.safetensors").exists()


def test_cli_sweep_writes_mean_and_std_tables(tmp_path, cache, capsys):
    out_dir = tmp_path / "sweep"
    code = cli.main(["sweep", DATA, "--methods", "zeroshot,ordinalclip:linear", "--shots-list", "2", "--seeds", "0,1",
                     "--epochs", "2", "--context-tokens", "4", "--out-dir", str(out_dir), "--cache-dir", str(cache),
                     "--device", "cpu", "--quiet"])
    assert code == 0
    runs = pd.read_csv(out_dir / "runs.csv")
    assert len(runs) == 4 and sorted(runs["seed"]) == [0, 0, 1, 1]
    table = pd.read_csv(out_dir / "results.csv")
    assert list(table["method"]) == ["zeroshot", "ordinalclip:linear"] and list(table["seeds"]) == [2, 2]
    for _, row in table.iterrows():
        maes = runs.loc[runs["method"] == row["method"], "mae_exp"]
        assert row["mae_exp_mean"] == pytest.approx(maes.mean())
        assert row["mae_exp_std"] == pytest.approx(maes.std(ddof=1))
    md = (out_dir / "results.md").read_text().strip().splitlines()
    assert len(md) == 4 and md[2].startswith("| zeroshot | 2 | 2 |") and md[3].startswith("| ordinalclip:linear | 2 | 2 |")
    assert all(line.count("±") == 5 for line in md[2:])
    assert "results.md" in capsys.readouterr().out
    assert len(list(out_dir.glob("runs/*/*.safetensors"))) == 4


def test_few_shot_keeps_at_most_k_per_label(tmp_path, cache):
    cfg = config(tmp_path / "fs.safetensors", cache, shots=2, epochs=1)
    result = train(cfg)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.meta["training"]["shots"] == 2 and ckpt.meta["training"]["data"]["num_train"] == 10  # 5 labels x 2
    data = prepare_data(config(tmp_path / "x.safetensors", cache, shots=2))
    counts = np.bincount(data.labels_eval[data.splits["train"]], minlength=5)
    assert counts.tolist() == [2, 2, 2, 2, 2]
    assert data.report["num_val"] == 3 and data.report["num_test"] == 6  # evaluation sets untouched


def test_long_tail_evaluation_keeps_only_high_labels(tmp_path, cache, backbone):
    result = train(config(tmp_path / "lt.safetensors", cache, dataset="dots:5:10", epochs=1))
    ckpt = load_checkpoint(result.checkpoint)
    full = evaluate_checkpoint(ckpt, backbone, "dots:5:10", cache_dir=str(cache))
    tail = evaluate_checkpoint(ckpt, backbone, "dots:5:10", cache_dir=str(cache), min_label=3)
    assert tail["metrics"]["n"] < full["metrics"]["n"]
    assert all(v is None for v in tail["metrics"]["per_rank_mae"][:3])
    # the same images' errors; only the batching differs (a float32 matmul over other rows: 1e-7 apart)
    assert tail["metrics"]["per_rank_mae"][3:] == pytest.approx(full["metrics"]["per_rank_mae"][3:], rel=1e-5)
    with pytest.raises(ExplorerError, match="labels >= 9"):
        evaluate_checkpoint(ckpt, backbone, "dots:5:10", cache_dir=str(cache), min_label=9)


def test_a_csv_with_apparent_age_spreads_reports_the_epsilon_error(tmp_path, cache):
    """ChaLearn-style ``filename,age,stdv``: the panel gains epsilon_error = mean 1 - exp(-(pred - mu)^2 / 2 sigma^2)."""
    from explorer.backbones.load import load_backbone
    from explorer.data.datasets import open_dataset, render_dots

    rows = ["filename,age,stdv"]
    for i in range(36):
        age = i % 4
        render_dots(age, seed=1, index=i).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{age},{0.5 + 0.25 * (i % 3)}")
    (tmp_path / "lap.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "lap.safetensors"
    result = train(config(out, cache, dataset=f"csv:{tmp_path / 'lap.csv'}", epochs=2))
    test = result.test_metrics
    assert 0.0 <= test["epsilon_error"] <= 1.0
    # the same number by hand from the checkpoint's predictions
    ckpt = load_checkpoint(out)
    dataset = open_dataset(f"csv:{tmp_path / 'lap.csv'}")
    samples = [dataset.samples[i] for i in dataset.splits["test"]]
    feats = load_backbone("demo", device="cpu").encode_images([dataset.load_image(s) for s in samples])
    pred = ckpt.predictor().predict(feats).value
    mu = np.array([ckpt.ranks.values[s.label] for s in samples])
    sigma = np.array([s.spread for s in samples])
    assert test["epsilon_error"] == pytest.approx(float(np.mean(1 - np.exp(-((pred - mu) ** 2) / (2 * sigma**2)))), abs=1e-6)
