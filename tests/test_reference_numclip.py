"""Import of reference NumCLIP runs (model type RegCLIPSSR) checked against an independent forward
written from numclip-method.md §2-§3: text = normalise(text_encoder(prompts)), f = image_encoder(x),
a = ReLU(W2 ReLU(W1 f)), f' = normalise(0.8 a + 0.2 f), L = exp(logit_scale) f' text^T,
value = sum_k softmax(L)_k s_k / (1 + tanh(W_d ReLU(W_a L + b_a) + b_d)_k), + 1 in label units.

The run is the fake-but-faithful one of test_reference.py (tiny OpenAI-layout CLIP, Lightning-style
.ckpt, config.yaml) with the plain learner over K = 5 concepts and seeded random adapter / regressor
tensors (plus the SSR layers the reference never calls).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_reference import (
    make_run,
    reference_prototypes,
    tokenizer,
    tuned_clip,
    write_clip_file,
)

from explorer import cli
from explorer.analysis.evaluation import evaluate_features
from explorer.backbones.load import load_backbone
from explorer.core.errors import ExplorerError
from explorer.methods.concepts import CONCEPT_SETS
from explorer.store.checkpoints import load_checkpoint
from explorer.store.reference import import_reference, import_reference_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 5
AGE = list(CONCEPT_SETS["age"].names)
AGE_CONTEXT = CONCEPT_SETS["age"].context
UNUSED = ("stage2_FC_after_PB.0.weight", "stream1_stage1.0.weight", "funsion_block_stream1_stage_1_before_PB.weight",
          "stage1_prob.0.weight", "stage1_index_offsets.0.bias")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """The tiny OpenAI-layout CLIP of test_reference.py."""
    return write_clip_file(tmp_path_factory.mktemp("clip") / "clip.pt")


def make_numclip_run(root: Path, clip_state, *, names: list[str] | None = AGE, init_context: str | None = AGE_CONTEXT,
                     t: int | None = None, n: int = 4, seed: int = 0, names_file: bool = True, write_config: bool = True):
    """A RegCLIPSSR run: plain learner over K concepts, adapter, SSR (stage 1 used, the rest never called)."""
    if t is None:
        t = max(len(tokenizer().encode(x)) for x in names)
    path = None
    if names is not None:
        path = str(root / "concepts.txt")
        if names_file:
            root.mkdir(parents=True, exist_ok=True)
            Path(path).write_text("\n".join(x.replace(" ", "_") for x in names) + "\n")
    run, sd = make_run(root, clip_state, kind="plain", num_ranks=K, n=n, t=t, init_context=init_context,
                       init_rank_path=path, seed=seed, write_config=write_config)
    g = torch.Generator().manual_seed(seed + 100)
    E = sd["module.text_encoder.text_projection"].shape[1]
    sd.update({
        "module.image_adapter.fc.0.weight": torch.randn(E // 4, E, generator=g) * 0.2,
        "module.image_adapter.fc.2.weight": torch.randn(E, E // 4, generator=g) * 0.2,
        "module.regressor.stage1_FC_after_PB.0.weight": torch.randn(2 * K, K, generator=g) * 0.05,
        "module.regressor.stage1_FC_after_PB.0.bias": torch.randn(2 * K, generator=g) * 0.1,
        "module.regressor.stage1_delta_k.0.weight": torch.randn(K, 2 * K, generator=g) * 0.1,
        "module.regressor.stage1_delta_k.0.bias": torch.randn(K, generator=g) * 0.1,
        **{f"module.regressor.{k}": torch.randn(3, generator=g) for k in UNUSED},
    })
    save_ckpt(run, sd)
    if write_config:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["runner_cfg"]["model_cfg"]["type"] = "RegCLIPSSR"
        (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run, sd


def save_ckpt(run: Path, sd) -> Path:
    path = run / "ckpts" / "epoch=7-step=96.ckpt"
    torch.save({"epoch": 7, "global_step": 96, "pytorch-lightning_version": "1.6.4", "state_dict": sd}, path)
    return path


def _images(count: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)) for _ in range(count)]


def reference_forward(sd, clip_state, pixels: torch.Tensor, starts, counts) -> tuple[torch.Tensor, torch.Tensor]:
    """(N x K softmax, N values in label units) as RegCLIPSSR.forward computes them, + 1 (§3)."""
    text = reference_prototypes(sd, clip_state["token_embedding.weight"], kind="plain", B=3, position="tail", counts=counts).double()
    tower = tuned_clip(clip_state, sd)
    with torch.no_grad():
        f = tower.encode_image(pixels).double()  # raw image_encoder output, not normalised
    w = {k[len("module."):]: v.double() for k, v in sd.items() if k.startswith(("module.image_adapter.", "module.regressor."))}
    a = torch.relu(torch.relu(f @ w["image_adapter.fc.0.weight"].T) @ w["image_adapter.fc.2.weight"].T)
    mixed = 0.8 * a + 0.2 * f
    mixed = mixed / mixed.norm(dim=-1, keepdim=True)
    logits = sd["module.logit_scale"].double().exp() * mixed @ text.T
    p = torch.softmax(logits, dim=-1)
    h = torch.relu(logits @ w["regressor.stage1_FC_after_PB.0.weight"].T + w["regressor.stage1_FC_after_PB.0.bias"])
    delta = torch.tanh(h @ w["regressor.stage1_delta_k.0.weight"].T + w["regressor.stage1_delta_k.0.bias"])
    value = (p * torch.tensor(starts, dtype=torch.float64) / (1 + delta)).sum(-1)
    return p, value + 1.0


def _check_parity(out: Path, sd, clip_state, starts, counts) -> dict:
    """Imported checkpoint (stored predictor and rebuilt model) vs the reference forward; returns the gaps."""
    ckpt = load_checkpoint(out)
    backbone = load_backbone(ckpt.backbone_spec)
    images = _images()
    pixels = torch.stack([backbone.preprocess(im) for im in images])
    probs_ref, values_ref = reference_forward(sd, clip_state, pixels, starts, counts)
    feats = backbone.encode_images(images)
    gaps = {}
    for label, predictor in (("stored", ckpt.predictor()), ("rebuilt", ckpt.build_model(backbone).predictor())):
        probs, values = predictor.outputs(feats)
        gaps[label] = (float(np.abs(values - values_ref.numpy()).max()), float(np.abs(probs - probs_ref.numpy()).max()))
        assert gaps[label][0] < 1e-3 and gaps[label][1] < 1e-4, gaps
    assert float(values_ref.std()) > 0.01 and float(probs_ref.max(-1).values.min()) < 0.999  # a non-degenerate check
    return gaps


def test_numclip_import_matches_the_reference_forward(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_numclip_run(tmp_path / "run", clip_state)
    out = tmp_path / "out" / "numclip.safetensors"
    result = import_reference_run(run_dir=run, clip_weights=clip_path, out=out)
    counts = [len(tokenizer().encode(x)) for x in AGE]
    assert len(set(counts)) > 1  # the names' own token counts shape the prompts
    gaps = _check_parity(out, sd, clip_state, CONCEPT_SETS["age"].starts, counts)
    print("parity (max |value gap|, max |prob gap|):", gaps)

    ckpt = load_checkpoint(out)
    assert ckpt.content == "full" and ckpt.meta["learner"]["kind"] == "numclip"
    cfg = ckpt.method_config
    assert cfg.value_offset == 1.0 and cfg.bin_names == AGE and cfg.bin_starts == [0.0, 13.0, 19.0, 35.0, 65.0]
    assert cfg.context_init == AGE_CONTEXT and cfg.adapter_reduction == 4 and cfg.prompt_token_counts is None
    assert ckpt.ranks.values == [float(v) for v in range(101)] and ckpt.ranks.unit == "years"
    src = ckpt.meta["source"]
    assert src["model_type"] == "RegCLIPSSR" and src["value_offset"] == 1.0 and "label - 1" in src["value_offset_reason"]
    assert src["dropped_unused"] == sorted(f"regressor.{k}" for k in UNUSED) and src["concepts"] == "age"
    assert src["tuned"]["image_encoder"] and ckpt.backbone_spec.endswith("numclip.backbone.safetensors")
    assert result.warnings == [] and sorted(os.listdir(out.parent)) == ["numclip.backbone.safetensors", "numclip.safetensors"]

    # Evaluation in label units: the coarse bin of label y is the reference's bin of y - 1 (13 -> child).
    feats = load_backbone(ckpt.backbone_spec).encode_images(_images())
    labels = np.array([13, 14, 19, 66])  # ranks 0..100: index = age
    probs, values = ckpt.predictor().outputs(feats)
    metrics = evaluate_features(ckpt.predictor(), feats, labels)
    coarse = np.array([0, 1, 1, 4])
    assert metrics["mae_max"] == pytest.approx(np.abs(probs.argmax(1) - coarse).mean())
    assert metrics["mae_value"] == pytest.approx(np.abs(values - labels).mean(), abs=1e-6)


def test_reference_forward_is_sensitive(clip_file, tmp_path):
    """The parity check would catch wrong prompt token counts or a missing +1 (guards the test above)."""
    _, clip_state = clip_file
    _, sd = make_numclip_run(tmp_path / "run", clip_state)
    backbone = load_backbone("demo")
    pixels = torch.stack([backbone.preprocess(im) for im in _images(2)])
    starts = CONCEPT_SETS["age"].starts
    right_p, right_v = reference_forward(sd, clip_state, pixels, starts, [len(tokenizer().encode(x)) for x in AGE])
    wrong_p, wrong_v = reference_forward(sd, clip_state, pixels, starts, [2] * K)
    assert float((right_p - wrong_p).abs().max()) > 1e-3 and float((right_v - wrong_v).abs().max()) > 1e-3


def test_run_without_names_file_uses_all_tokens_and_aesthetics_bins(clip_file, tmp_path):
    """init_rank_path null: every concept uses its t tokens (the reference); digits bins 0..4, labels 1..5."""
    clip_path, clip_state = clip_file
    run, sd = make_numclip_run(tmp_path / "run", clip_state, names=None, init_context=None, t=2, n=3)
    out = tmp_path / "aes.safetensors"
    import_reference_run(run_dir=run, clip_weights=clip_path, out=out, concepts="aesthetics")
    _check_parity(out, sd, clip_state, [0, 1, 2, 3, 4], [2] * K)
    ckpt = load_checkpoint(out)
    assert ckpt.method_config.prompt_token_counts == [2] * K and ckpt.classes.labels == ["0", "1", "2", "3", "4"]
    assert ckpt.ranks.values == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.slow
def test_cli_import_and_bare_ckpt_with_flags(clip_file, tmp_path, capsys):
    clip_path, clip_state = clip_file
    run, sd = make_numclip_run(tmp_path / "run", clip_state, names_file=False)
    out = tmp_path / "cli.safetensors"
    args = ["import-reference", "--run-dir", str(run), "--clip-weights", str(clip_path), "--out", str(out),
            "--concepts", "age", "--num-ranks", "70", "--rank-start", "16"]
    assert cli.main(args) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.ranks.values[0] == 16.0 and len(ckpt.ranks) == 70 and ckpt.ranks.unit == "years"
    assert any("not found" in w for w in ckpt.meta["source"]["warnings"])  # names assumed from --concepts
    _check_parity(out, sd, clip_state, CONCEPT_SETS["age"].starts, [len(tokenizer().encode(x)) for x in AGE])

    bare, sd = make_numclip_run(tmp_path / "bare", clip_state, write_config=False, seed=3)
    ckpt_file = next((bare / "ckpts").glob("*.ckpt"))
    assert cli.main(["import-reference", "--ckpt", str(ckpt_file), "--learner", "numclip", "--clip-weights", str(clip_path),
                     "--out", str(tmp_path / "bare.safetensors")]) == 0
    _check_parity(tmp_path / "bare.safetensors", sd, clip_state, CONCEPT_SETS["age"].starts,
                  [len(tokenizer().encode(x)) for x in AGE])
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "bare.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "numclip"


# --- refusals: one sentence naming the tensor, nothing written ---------------------------------------


def _refused(run, clip_path, out_dir, match, **kwargs):
    with pytest.raises(ExplorerError, match=match):
        import_reference(run_dir=run, clip_weights=clip_path, out=out_dir / "x.safetensors", **kwargs)
    assert not out_dir.exists() or os.listdir(out_dir) == []


def test_missing_or_misshaped_numclip_tensors_are_refused(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_numclip_run(tmp_path / "run", clip_state)
    out_dir = tmp_path / "out"
    E = sd["module.text_encoder.text_projection"].shape[1]
    for key, value, message in (
        ("module.regressor.stage1_delta_k.0.bias", None, r"lacks module\.regressor\.stage1_delta_k\.0\.bias"),
        ("module.image_adapter.fc.0.weight", None, r"lacks module\.image_adapter\.fc\.0\.weight"),
        ("module.image_adapter.fc.2.weight", torch.zeros(E, E // 2), r"module\.image_adapter\.fc\.2\.weight has shape"),
        ("module.image_adapter.fc.0.weight", torch.zeros(E // 4, E + 1), r"module\.image_adapter\.fc\.0\.weight has shape"),
        ("module.regressor.stage1_FC_after_PB.0.weight", torch.zeros(2 * K, K - 1), r"module\.regressor\.stage1_FC_after_PB\.0\.weight has shape"),
        ("module.regressor.stage1_delta_k.0.weight", torch.full((K, 2 * K), float("nan")), r"stage1_delta_k\.0\.weight contains NaN"),
        ("module.regressor.head.weight", torch.zeros(3), r"module\.regressor\.head\.weight, which the reference NumCLIP"),
        ("module.prompt_learner.context_embeds", torch.zeros(K, 4, E), r"context_embeds has shape \(5, 4, 128\)"),
    ):
        broken = {k: v for k, v in sd.items() if k != key}
        if value is not None:
            broken[key] = value
        save_ckpt(run, broken)
        _refused(run, clip_path, out_dir, message)


def test_concepts_that_do_not_fit_the_run_are_refused(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, _ = make_numclip_run(tmp_path / "run", clip_state, names_file=False)
    out_dir = tmp_path / "out"
    three = tmp_path / "three.csv"
    three.write_text("0,low\n5,mid\n9,high\n")
    _refused(run, clip_path, out_dir, r"rank_embeds has shape \(5, 2, 128\) but the 3 concept bins", concepts=str(three))
    long_names = tmp_path / "long.csv"
    long_names.write_text("0,a very young child\n13,teen\n19,young\n35,middle\n65,old\n")
    _refused(run, clip_path, out_dir, r"rank_embeds has 2 tokens per concept but the concept names", concepts=str(long_names))
    _refused(run, clip_path, out_dir, r"interpolation does not apply to a NumCLIP run", learner_overrides={"interpolation": "linear"})
    _refused(run, clip_path, out_dir, r"cannot be imported as the method .ordinalclip.", learner_overrides={"method": "ordinalclip"})


def test_numclip_options_on_an_ordinalclip_run_are_refused(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, _ = make_run(tmp_path / "run", clip_state)
    out_dir = tmp_path / "out"
    _refused(run, clip_path, out_dir, r"--concepts\) only apply to NumCLIP", concepts="age")
    _refused(run, clip_path, out_dir, r"--method numclip is for NumCLIP runs", learner_overrides={"method": "numclip"})


def test_cli_help_names_the_numclip_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["import-reference", "--help"])
    out = capsys.readouterr().out
    for option in ("--concepts", "--rank-start", "--rank-unit", "numclip"):
        assert option in out, option
