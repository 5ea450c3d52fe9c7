"""Methods as plug-ins: every registered method honours the interface, and a new method plugged in
from outside (one class plus one registry line) trains, saves, loads and predicts without any change
to the trainer, checkpoints or CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from app_testdata import demo_backbone, scan_folder
from torch import nn

from explorer import cli, methods
from explorer.backbones.load import load_backbone
from explorer.cli.training_commands import train_config
from explorer.core.errors import ExplorerError
from explorer.core.options import default_of, option
from explorer.core.ranks import Ranks
from explorer.methods import Method, get_method, make_config, method_names
from explorer.methods.ordinalclip import OrdinalCLIPConfig
from explorer.store.checkpoints import inspect_resume_state, load_checkpoint, save_checkpoint
from explorer.training.config import TrainConfig, parse_method_list, sweep_grid
from explorer.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


def _config(name: str, ranks: Ranks):
    fields = get_method(name).config_class.__dataclass_fields__
    settings = {"num_ranks": len(ranks)} if "num_ranks" in fields else {}
    if "num_context_tokens" in fields:
        settings["num_context_tokens"] = 3
    if name == "numclip":
        settings.update(concepts="dots", context_init="")  # bins 0, 3, 7, 12, 16 over ranks 0..5; random context
    return make_config(name, **settings)


@pytest.mark.parametrize("name", method_names())
def test_every_method_builds_scores_learns_and_round_trips(name, demo, tmp_path):
    ranks = Ranks.integers(6)
    method = get_method(name)
    model = method.build(demo, _config(name, ranks), ranks, seed=0)
    protos = model()
    k = len(model.classes)  # the ranks, or NumCLIP's concept bins
    assert protos.shape == (k, demo.embed_dim) and k == (5 if name == "numclip" else 6)
    assert torch.allclose(protos.norm(dim=-1), torch.ones(k), atol=1e-5)
    feats = F.normalize(torch.randn(8, demo.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    loss, parts = model.loss(feats, protos, y, TrainConfig(dataset="dots:5", out="x"))
    assert torch.isfinite(loss) and set(parts) >= {"ce", "kl"}
    if method.trainable:
        loss.backward()
        grads = [p.grad for _, p in model.learned_parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model, demo)
    ckpt = load_checkpoint(path, backbone=demo)
    for stored, current in zip(ckpt.predictor().outputs(feats), model.predictor().outputs(feats)):
        np.testing.assert_allclose(stored, current, atol=1e-5)
    if ckpt.content == "full":
        rebuilt = ckpt.build_model(demo)
        assert type(rebuilt) is method and torch.allclose(rebuilt(), protos.detach(), atol=1e-6)


def test_unknown_methods_and_settings_are_one_sentence():
    with pytest.raises(ExplorerError, match="Unknown method 'numclipx'; choose one of ordinalclip, coop"):
        get_method("numclipx")
    with pytest.raises(ExplorerError, match="Unknown method settings: num_base_rank"):
        make_config("ordinalclip", num_base_rank=3)
    with pytest.raises(ExplorerError, match="Unknown method settings"):
        TrainConfig(dataset="dots:3", out="x", method_config={"method": "linear-probe", "interpolation": "normal"})


def test_configs_are_copied_not_shared():
    learner = make_config("ordinalclip", num_context_tokens=5)
    config = TrainConfig(dataset="dots:3", out="x", method_config=learner)
    assert config.method_config == learner and config.method_config is not learner
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_defaults_and_choices_come_from_the_dataclasses(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "dots:3", "--out", "x.safetensors"])
    config = train_config(args, args.dataset, args.out, args.method)
    assert config.method_config == make_config("ordinalclip") and config.method_config.num_context_tokens == default_of(OrdinalCLIPConfig, "num_context_tokens")
    assert config.epochs == default_of(TrainConfig, "epochs") and config.lr == default_of(TrainConfig, "lr")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "dots:3", "--out", "x", "--learner", "nope"])
    assert "choose from" in capsys.readouterr().err
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert f"(default {default_of(OrdinalCLIPConfig, 'num_context_tokens')})" in help_text
    for name in method_names():
        assert name in help_text


def test_sweep_grid_is_every_combination():
    base = TrainConfig(dataset="dots:3", out="x", epochs=2)
    learners = parse_method_list("zeroshot,ordinalclip:normal", {"num_context_tokens": 4, "interpolation": "linear"})
    assert [label for label, _ in learners] == ["zeroshot", "ordinalclip:normal"]
    assert learners[1][1].interpolation == "normal" and learners[1][1].num_context_tokens == 4
    runs = sweep_grid(base, learners, [1, None], [0, 1], "out")
    assert len(runs) == 8 and {(r.label, r.shots, r.seed) for r in runs} == {
        (label, s, seed) for label in ("zeroshot", "ordinalclip:normal") for s in (1, None) for seed in (0, 1)}
    assert all(r.config.epochs == 2 and r.config.seed == r.seed for r in runs)
    assert runs[-1].config.out.endswith("ordinalclip-normal-shotsall-seed1.safetensors")


# --- a method registered at run time (the registry is data): trained, saved and predicted unchanged ------


@dataclass
class CentroidConfig(methods.ConfigMixin):
    """Settings of the toy method: prototypes are learned offsets from one shared centre."""

    method: str = option("centroid")
    num_ranks: int = 101
    spread: float = option(0.1, flag="--spread", help="initial spread of the offsets")


class CentroidMethod(Method):
    """Toy method: R prototypes = normalise(centre + offset_r); no text encoder."""

    name = "centroid"
    title = "centroid (toy)"
    config_class = CentroidConfig
    supports_finetune = False

    def __init__(self, config, dim, logit_scale, ranks, generator=None):
        super().__init__()
        self.config, self.logit_scale, self.ranks = config, float(logit_scale), ranks
        self.centre = nn.Parameter(torch.randn(dim, generator=generator))
        self.offsets = nn.Parameter(config.spread * torch.randn(config.num_ranks, dim, generator=generator))

    @classmethod
    def build(cls, backbone, config, ranks, seed=0):
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return cls(config, backbone.embed_dim, backbone.logit_scale, ranks, gen)

    @classmethod
    def expected_shapes(cls, config):
        return {"centre": (None,), "offsets": (config.num_ranks, None)}

    def forward(self, full_length: bool = False):
        return F.normalize(self.centre + self.offsets, dim=-1)


@pytest.fixture
def centroid_registered(monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "centroid", f"{__name__}:CentroidMethod")
    yield


def test_a_plugged_in_method_trains_saves_and_predicts_unchanged(centroid_registered, tmp_path, capsys):
    out = tmp_path / "toy.safetensors"
    args = ["train", "dots:4:8", "--learner", "centroid", "--spread", "0.3", "--epochs", "3", "--batch-size", "8",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet", "--json"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ckpt = load_checkpoint(out)
    assert ckpt.content == "full" and ckpt.meta["learner"] == {"kind": "centroid", "num_ranks": 5, "spread": 0.3}
    assert set(ckpt.method_tensors()) == {"centre", "offsets"} and summary["test"]["n"] > 0
    rebuilt = ckpt.build_model(load_backbone("demo", device="cpu"))
    assert isinstance(rebuilt, CentroidMethod) and torch.allclose(rebuilt(), ckpt.prototypes.matrix, atol=1e-6)
    assert cli.main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "centroid"


def test_info_and_library_describe_a_resume_state(tmp_path, capsys):

    out = tmp_path / "run.safetensors"
    stop_after = {"n": 0}

    def stop():  # stop in the second epoch: a checkpoint and a resume state exist, the run is unfinished
        return stop_after["n"] > 0

    def on_event(p):
        if p.stage == "epoch":
            stop_after["n"] += 1

    config = TrainConfig(dataset="dots:4:8", out=str(out), method_config={"method": "ordinalclip", "num_context_tokens": 2}, epochs=4,
                         batch_size=8, cache_dir=str(tmp_path / "cache"), device="cpu")
    result = train(config, progress=on_event, should_stop=stop)
    assert result.cancelled
    resume = tmp_path / "run.resume.safetensors"
    info = inspect_resume_state(resume)
    assert info["run"] == "run" and info["epochs_done"] == 1 and info["epochs"] == 4 and info["method"] == "ordinalclip"
    assert cli.main(["info", str(resume), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["content"] == "resume-state" and printed["continue_with"].endswith("--resume")
    with pytest.raises(ExplorerError, match="resume state of run run"):
        load_checkpoint(resume)
    entries = {e.path.name: e for e in scan_folder(tmp_path)}
    assert entries["run.safetensors"].ok
    row = entries["run.resume.safetensors"].row()
    assert row["status"] == "resume state" and "epoch 1 of 4" in row["note"] and "--resume" in row["note"]


def test_resuming_with_other_settings_is_one_sentence(tmp_path):
    """A resume state only fits the run that saved it: other learner settings are refused up front."""
    out = tmp_path / "run.safetensors"
    stopped = {"n": 0}
    base = dict(dataset="dots:4:8", out=str(out), epochs=4, batch_size=8, cache_dir=str(tmp_path / "cache"), device="cpu")
    train(TrainConfig(method_config={"method": "ordinalclip", "num_context_tokens": 2}, **base),
          progress=lambda p: stopped.__setitem__("n", stopped["n"] + (p.stage == "epoch")), should_stop=lambda: stopped["n"] > 0)
    assert (tmp_path / "run.resume.safetensors").is_file()
    with pytest.raises(ExplorerError, match="other settings \\(learner differ\\)"):
        train(TrainConfig(method_config={"method": "ordinalclip", "num_context_tokens": 3}, **base), resume=True)
    with pytest.raises(ExplorerError, match="selection metric"):
        TrainConfig(select_metric="mae", **base).validate()


def test_decoding_a_numclip_checkpoint_names_its_concepts(tmp_path):
    from explorer.analysis.decode import decode_checkpoint

    out = tmp_path / "n.safetensors"
    train(TrainConfig(dataset="dots:4:8", out=str(out), method_config={"method": "numclip", "concepts": "dots"}, epochs=1,
                      batch_size=8, cache_dir=str(tmp_path / "cache"), device="cpu"))
    decoded = decode_checkpoint(load_checkpoint(out), load_backbone("demo", device="cpu"), top=2)
    assert [r["label"] for r in decoded["ranks"]] == ["very few", "a few", "several", "many", "very many"]


def test_prototypes_out_writes_exactly_the_path_given(tmp_path, capsys):
    import numpy as np

    from explorer.methods import make_config as mk

    demo = load_backbone("demo", device="cpu")
    ckpt = save_checkpoint(tmp_path / "r.safetensors", get_method("ordinalclip").build(demo, mk("ordinalclip", num_ranks=5, num_context_tokens=2),
                                                                              Ranks.integers(5)), demo)
    assert cli.main(["prototypes", str(ckpt), "--out", str(tmp_path / "protos")]) == 0
    assert (tmp_path / "protos").is_file() and not (tmp_path / "protos.npy").exists()
    assert np.load(tmp_path / "protos").shape == (5, demo.embed_dim)
