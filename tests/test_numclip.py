"""NumCLIP: FCRL losses against a transcription of the reference, the soft-bin regressor and the
adapter against hand computations, bins and bad input, and an end-to-end run on dots:20."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from app_testdata import demo_backbone

from explorer import cli
from explorer.backbones.load import load_backbone
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.methods import get_method, make_config
from explorer.methods.concepts import CONCEPT_SETS, bin_index, read_bins_file
from explorer.methods.numclip import ImageAdapter, SoftBinRegressor, adapt_features
from explorer.methods.objectives import distance_weighted_logits, fcrl_kl
from explorer.store.checkpoints import load_checkpoint
from explorer.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- transcription of the reference (xmed-lab/NumCLIP runner_ssr.py), loops and all, on CPU ----------


def ref_ce_dis_loss(logits, y, d):
    target = torch.unsqueeze(torch.Tensor(list(range(d))), 1)
    weights = []
    for i in range(len(y)):
        inv = torch.abs(y[i] - target).transpose(0, 1)
        norm = torch.squeeze(inv / torch.sum(inv, dim=1) * (d - 1), 0)
        norm[y[i]] = 1.0
        weights.append(norm.tolist())
    return torch.nn.CrossEntropyLoss()(logits * torch.Tensor(weights), y)


def ref_kl_dis_loss(logits, y, d):
    y_t = F.one_hot(y, d).t()
    present = y_t.sum(-1) > 0
    num_slots = present.sum()
    target = (y_t * 10.0).softmax(-1)
    target[present <= 0] = 0
    logits_t = logits.t()
    column = torch.unsqueeze(y, 1)  # the reference's y.T of a 1-D tensor
    weights = []
    for i in range(logits_t.shape[0]):
        if present[i] > 0:
            inv = torch.abs(i - column).transpose(0, 1)
            norm = torch.squeeze(inv / torch.sum(inv, dim=1) * (d - 1), 0)
            norm[y_t[i] == 1] = 1.0
        else:
            norm = torch.ones(logits_t.shape[1])
        weights.append(norm.tolist())
    weighted = logits_t * torch.Tensor(weights)
    return torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(weighted, dim=-1), target) / num_slots


BATCHES = {
    "mixed": torch.tensor([0, 1, 2, 3, 4, 2, 2, 0]),
    "one bin": torch.tensor([3, 3, 3, 3, 3]),
    "missing bins": torch.tensor([0, 4, 4, 0, 4, 0]),
}


@pytest.mark.parametrize("name", list(BATCHES))
def test_fcrl_losses_equal_the_reference(name):
    y = BATCHES[name]
    logits = torch.randn(len(y), 5, generator=torch.Generator().manual_seed(len(y))) * 10
    ce = F.cross_entropy(distance_weighted_logits(logits, y), y)
    assert torch.allclose(ce, ref_ce_dis_loss(logits, y, 5), rtol=1e-5, atol=1e-6)
    assert torch.allclose(fcrl_kl(logits, y), ref_kl_dis_loss(logits, y, 5), rtol=1e-5, atol=1e-6)
    leaf = logits.clone().requires_grad_(True)
    (F.cross_entropy(distance_weighted_logits(leaf, y), y) + fcrl_kl(leaf, y)).backward()
    assert torch.isfinite(leaf.grad).all()


def test_regressor_and_adapter_against_hand_computation():
    starts = [0.0, 13.0, 19.0, 35.0, 65.0]
    reg = SoftBinRegressor(starts, ssr_lambda=1.0, generator=torch.Generator().manual_seed(0))
    assert reg.stage1_FC_after_PB[0].weight.std() < 0.01 and torch.all(reg.stage1_delta_k[0].bias == 0)
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    Wa, ba = reg.stage1_FC_after_PB[0].weight.detach(), reg.stage1_FC_after_PB[0].bias.detach()
    Wd, bd = reg.stage1_delta_k[0].weight.detach(), reg.stage1_delta_k[0].bias.detach()
    for n in range(2):
        L = logits[n].double()
        p = torch.exp(L) / torch.exp(L).sum()
        h = torch.clamp(Wa.double() @ L + ba.double(), min=0)
        delta = torch.tanh(Wd.double() @ h + bd.double())
        value = sum(float(p[k]) * starts[k] / (1 + float(delta[k])) for k in range(5))
        assert float(reg(logits)[n].detach()) == pytest.approx(value, rel=1e-5)
    adapter = ImageAdapter(8, reduction=4)
    f = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    a = torch.relu(torch.relu(f @ adapter.fc[0].weight.T) @ adapter.fc[2].weight.T)
    mixed = 0.8 * a + 0.2 * f
    assert torch.allclose(adapt_features(f, adapter, 0.8), mixed / mixed.norm(dim=-1, keepdim=True), atol=1e-6)
    assert torch.allclose(adapt_features(5 * f, adapter, 0.8), adapt_features(f, adapter, 0.8), atol=1e-6)  # scale-free
    assert torch.allclose(adapt_features(f, None, 0.8), F.normalize(f, dim=-1))


def test_bins_of_values_follow_the_reference_age_bins():
    starts = CONCEPT_SETS["age"].starts
    ages = torch.arange(0, 101)
    expected = [0 if a <= 12 else 1 if a <= 18 else 2 if a <= 34 else 3 if a <= 64 else 4 for a in range(101)]
    assert bin_index(ages, starts).tolist() == expected


@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


def test_numclip_learns_everything_and_the_ablations_switch_parts_off(demo):
    ranks = Ranks.integers(21)
    method = get_method("numclip")
    feats = F.normalize(torch.randn(16, demo.embed_dim, generator=torch.Generator().manual_seed(2)), dim=-1)
    y = torch.arange(16) % 21
    model = method.build(demo, make_config("numclip", concepts="dots"), ranks)
    loss, parts = model.loss(feats, model(), y, TrainConfig(dataset="x", out="y"))
    loss.backward()
    names = {n for n, p in model.learned_parameters() if p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0}
    assert names == {n for n, _ in model.learned_parameters()} and {"adapter.fc.0.weight", "regressor.stage1_delta_k.0.bias"} <= names
    assert set(parts) == {"ce", "kl", "l1"}
    plain = method.build(demo, make_config("numclip", concepts="dots", adapter=False, fcrl=False, reg_weight=0.0), ranks)
    assert plain.adapter is None and not any(n.startswith("adapter.") for n, _ in plain.learned_parameters())
    loss, parts = plain.loss(feats, plain(), y, TrainConfig(dataset="x", out="y", kl_weight=0.0))
    assert parts["kl"] == 0.0 and loss.item() == pytest.approx(parts["ce"], rel=1e-6)  # CE only


def test_bad_bins_are_one_sentence(tmp_path, demo):
    ranks = Ranks.integers(21)
    build = get_method("numclip").build
    bad_order = tmp_path / "order.csv"
    bad_order.write_text("0,low\n10,high\n5,middle\n")
    with pytest.raises(ExplorerError, match="increasing"):
        build(demo, make_config("numclip", concepts=str(bad_order)), ranks)
    columns = tmp_path / "columns.csv"
    columns.write_text("start,name\n0,low,extra\n")
    with pytest.raises(ExplorerError, match="line 2: expected 2 columns"):
        read_bins_file(columns)
    words = tmp_path / "words.csv"
    words.write_text("zero,low\n")
    with pytest.raises(ExplorerError, match="not a number"):
        read_bins_file(words)
    long = tmp_path / "long.csv"
    long.write_text("0," + " ".join(["word"] * 80) + "\n10,short\n")
    with pytest.raises(ExplorerError, match="rank .* but the text encoder takes 77"):
        build(demo, make_config("numclip", concepts=str(long)), ranks)
    with pytest.raises(ExplorerError, match="neither a concept set"):
        build(demo, make_config("numclip", concepts="ages-typo"), ranks)
    good = tmp_path / "good.csv"
    good.write_text("# start,name\n0,few\n10,many_dots\n")
    model = build(demo, make_config("numclip", concepts=str(good)), ranks)
    assert model.config.bin_names == ["few", "many dots"] and model.config.bin_starts == [0.0, 10.0]


@pytest.mark.slow
def test_numclip_run_end_to_end_on_dots(tmp_path, capsys):
    out = tmp_path / "numclip.safetensors"
    args = ["train", "dots:20:12", "--learner", "numclip", "--concepts", "dots", "--epochs", "8", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet", "--json"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ckpt = load_checkpoint(out)
    assert ckpt.content == "full" and ckpt.meta["learner"]["kind"] == "numclip"
    assert ckpt.classes.labels == list(CONCEPT_SETS["dots"].names) and len(ckpt.ranks) == 21
    assert ckpt.prototypes.matrix.shape[0] == 5
    test = summary["test"]
    assert {"mae_value", "acc_max", "mae_exp"} <= set(test) and summary["best_epoch"] >= 1
    # the checkpoint predicts what the rebuilt model computes, with the regressed value as its estimate
    backbone = load_backbone("demo", device="cpu")
    image = __import__("explorer.data.datasets", fromlist=["render_dots"]).render_dots(9, seed=0, index=0)
    feats = backbone.encode_images([image])
    stored = ckpt.predictor().predict(feats)
    rebuilt = ckpt.build_model(backbone).predictor().predict(feats)
    assert np.allclose(stored.probs, rebuilt.probs, atol=1e-5) and np.allclose(stored.value, rebuilt.value, atol=1e-4)
    path = tmp_path / "nine.png"
    image.save(path)
    assert cli.main(["predict", str(out), str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["value"] == pytest.approx(float(stored.value[0]), abs=1e-4) and record["estimate"] == "regressed"
    assert len(record["probs"]) == 5 and record["argmax_label"] in CONCEPT_SETS["dots"].names
    assert cli.main(["eval", str(out), "dots:20:12", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    evaluation = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluation["mae_value"] == pytest.approx(test["mae_value"], abs=1e-6)
    assert len(evaluation["per_rank_mae"]) == 21
    # a dataset with fewer ranks (0..10 dots) is matched by value; its MAE is the regressed values' error
    assert cli.main(["eval", str(out), "dots:10:3", "--split", "all", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    fewer = json.loads(capsys.readouterr().out)
    dataset = __import__("explorer.data.datasets", fromlist=["open_dataset"]).open_dataset("dots:10:3")
    values = ckpt.predictor().predict(backbone.encode_images([dataset.load_image(s) for s in dataset.samples])).value
    truth = np.array([dataset.ranks.values[s.label] for s in dataset.samples])
    assert fewer["labels"]["matched_by"] == "value" and fewer["metrics"]["n"] == len(truth) == 33
    assert fewer["metrics"]["mae_value"] == pytest.approx(float(np.abs(values - truth).mean()), abs=1e-4)
    assert fewer["metrics"]["per_rank_mae"][11:] == [None] * 10


def test_adapter_and_regressor_train_at_their_own_learning_rate(demo):
    model = get_method("numclip").build(demo, make_config("numclip", concepts="dots", head_lr_scale=0.1), Ranks.integers(21))
    prompts, heads = model.param_groups(1e-4)
    assert prompts["lr"] == 1e-4 and heads["lr"] == pytest.approx(1e-5)
    names = {id(p): n for n, p in model.learned_parameters()}
    assert {names[id(p)] for p in prompts["params"]} == {"context_embeds", "rank_embeds"}
    assert {names[id(p)].split(".")[0] for p in heads["params"]} == {"adapter", "regressor"}
    from explorer.training.config import config_from_recipe

    config = config_from_recipe("morph", "dots:4", "x.safetensors", "numclip", {}, {})
    assert config.method_config.head_lr_scale == 0.1 and config.method_config.concepts == "age" and config.optimizer == "radam"
