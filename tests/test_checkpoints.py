"""Checkpoints (explorer/checkpoints.py) and prototype prediction (explorer/prototypes.py).

Real parts only: the shipped demo backbone, real safetensors files in tmp_path, torch pickles
written by torch.save. Expected values are computed independently (numpy softmax and quantiles,
safetensors read back directly).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from app_testdata import demo_backbone
from safetensors import safe_open
from safetensors.torch import save_file

import explorer.core.fsio as fsio
from explorer.backbones.load import load_backbone
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.methods import canonical_name, stored_config
from explorer.methods.prompt import build_prompt_model
from explorer.predict.prototypes import Prototypes
from explorer.predict.summaries import summarize
from explorer.store.checkpoints import (
    FORMAT_VERSION,
    META_KEY,
    export_prototypes,
    load_checkpoint,
    save_checkpoint,
    save_prototypes,
    update_metadata,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


AGES = Ranks.integers(12, start=16, unit="years")  # 16 .. 27 years

CONFIGS = {
    "rank": dict(kind="ordinalclip", num_ranks=12, num_context_tokens=3, num_base_ranks=3, interpolation="linear"),
    "rank-specific": dict(kind="ordinalclip", num_ranks=12, num_context_tokens=2, rank_specific_context=True,
                          num_base_ranks=4, num_tokens_per_rank=2, interpolation="inv_prop", position="middle"),
    "plain": dict(kind="coop", num_ranks=12, num_context_tokens=4, position="front"),
    "plain-names": dict(kind="coop", num_ranks=12, context_init="the age of the person is",
                        rank_names=[f"{a} years" for a in range(16, 28)]),
    "template": dict(kind="zeroshot", num_ranks=12, template="a photo of a {} year old person."),
}


def _model(demo, key, seed=3):
    model = build_prompt_model(demo, stored_config(CONFIGS[key]), AGES, seed=seed)
    # make the learned tensors clearly non-default so a silent re-initialisation would show
    with torch.no_grad():
        for p in model.learner.parameters():
            p.add_(torch.linspace(-0.05, 0.05, p.numel()).reshape(p.shape))
    return model


@pytest.fixture(scope="module")
def saved(demo, tmp_path_factory):
    """A full rank-learner checkpoint on disk with training info and metrics."""
    path = tmp_path_factory.mktemp("ckpt") / "rank.safetensors"
    model = _model(demo, "rank")
    save_checkpoint(path, model, demo, name="my rank run", training={"epochs": 7, "lr": 1e-4},
                    metrics={"mae_exp": 2.5, "acc_max": 0.31})
    return path, model


def _image_features(demo, n=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(n)]
    return demo.encode_images(images)


def _read_raw(path):
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def _write_raw(path, tensors, meta):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={META_KEY: json.dumps(meta)})
    return path


# --- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(CONFIGS))
def test_round_trip_params_prototypes_and_metadata(demo, tmp_path, key):
    model = _model(demo, key)
    path = save_checkpoint(tmp_path / f"{key}.safetensors", model, demo,
                           training={"epochs": 3, "seed": 0}, metrics={"mae_exp": 1.25})
    ckpt = load_checkpoint(path, backbone=demo)

    meta = ckpt.meta
    assert meta["format"] == "ordinalclip-explorer" and meta["format_version"] == FORMAT_VERSION == 1
    assert meta["kind"] == "full" and ckpt.content == "full"
    assert meta["backbone"] == {"spec": "demo", "id": demo.backbone_id}
    assert ckpt.backbone_id == demo.backbone_id and ckpt.backbone_spec == "demo"
    assert meta["learner"] == model.config.to_dict()
    assert ckpt.method_config == model.config
    assert meta["ranks"] == {"labels": [str(a) for a in range(16, 28)], "values": [float(a) for a in range(16, 28)],
                             "unit": "years", "name": "rank"}
    assert ckpt.ranks == AGES
    assert meta["training"] == {"epochs": 3, "seed": 0} and meta["metrics"] == {"mae_exp": 1.25}
    assert meta["logit_scale"] == pytest.approx(demo.logit_scale)
    assert ckpt.name == key  # default name: the file stem

    # what is on disk, read without the explorer
    raw, _ = _read_raw(path)
    params = dict(model.learner.named_parameters())
    assert set(raw) == {"prototypes"} | {f"learner.{k}" for k in params}
    for k, p in params.items():
        assert torch.equal(raw[f"learner.{k}"], p.detach().float())

    rebuilt = ckpt.build_model(demo)
    rebuilt_params = dict(rebuilt.learner.named_parameters())
    assert set(rebuilt_params) == set(params)
    for k in params:
        assert torch.equal(rebuilt_params[k], params[k]), k
    with torch.no_grad():
        expected = model()
        again = rebuilt()
    assert torch.allclose(ckpt.tensors["prototypes"], expected, atol=1e-6)  # stored = normalised again
    assert torch.allclose(again, expected, atol=1e-6)
    assert ckpt.prototypes.matrix.shape == (12, demo.embed_dim)


def test_template_checkpoint_has_no_learner_tensors(demo, tmp_path):
    path = save_checkpoint(tmp_path / "t.safetensors", _model(demo, "template"), demo)
    raw, meta = _read_raw(path)
    assert set(raw) == {"prototypes"}
    assert meta["learner"]["rank_names"] == AGES.labels


def test_name_training_metrics_and_update_metadata(saved):
    path, _ = saved
    ckpt = load_checkpoint(path)
    assert ckpt.name == "my rank run"
    assert ckpt.meta["training"] == {"epochs": 7, "lr": 1e-4}
    summary = ckpt.summary()
    assert summary["num_ranks"] == 12 and summary["ranks"] == "16 .. 27 years"
    assert summary["method"] == "ordinalclip" and summary["num_base_ranks"] == 3 and summary["num_context_tokens"] == 3
    assert summary["tensors"] == {"learner.context_embeds": [3, 128], "learner.rank_embeds": [3, 1, 128],
                                  "prototypes": [12, 128]}

    copy = path.with_name("copy.safetensors")
    copy.write_bytes(path.read_bytes())
    update_metadata(copy, metrics={"mae_exp": 9.0})
    updated = load_checkpoint(copy)
    assert updated.meta["metrics"] == {"mae_exp": 9.0}
    assert updated.meta["training"] == ckpt.meta["training"]
    for k, v in ckpt.tensors.items():
        assert torch.equal(updated.tensors[k], v)


@pytest.mark.parametrize("name_length", range(80, 112))
def test_loads_whatever_the_header_length(tmp_path, name_length):
    """The header length is the file's first 8 bytes; its low byte may be 0x80 like a pickle's (every residue mod 256 of 8)."""
    protos = Prototypes(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), 100.0, Ranks.integers(3))
    path = save_prototypes(tmp_path / "p.safetensors", protos, "demo", "x@0", name="n" * name_length)
    ckpt = load_checkpoint(path)
    assert ckpt.name == "n" * name_length
    assert torch.allclose(ckpt.tensors["prototypes"], protos.matrix)


# --- prototype-only export ----------------------------------------------------------------------


def _softmax_np(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("key", ["rank", "plain"])
def test_prototype_export_predicts_like_the_full_model(demo, tmp_path, key):
    model = _model(demo, key)
    full_path = save_checkpoint(tmp_path / "full.safetensors", model, demo, training={"epochs": 2}, metrics={"mae_exp": 3.0})
    full = load_checkpoint(full_path, backbone=demo)
    out = export_prototypes(full, tmp_path / "protos.safetensors")
    exported = load_checkpoint(out, backbone=demo)

    raw, meta = _read_raw(out)
    assert set(raw) == {"prototypes"}  # no learner tensors at all
    assert exported.method_tensors() == {}
    assert meta["kind"] == "prototypes" and meta["learner"] is None
    assert meta["backbone"] == full.meta["backbone"] and meta["ranks"] == full.meta["ranks"]
    assert meta["training"] == {"epochs": 2} and meta["metrics"] == {"mae_exp": 3.0}
    assert meta["source"]["learner"] == canonical_name(key)  # the method's name (old names resolved)
    assert exported.summary()["method"] == canonical_name(key)

    feats = _image_features(demo)
    # the full model: rebuild the learner, run the text encoder
    rebuilt = full.build_model(demo)
    with torch.no_grad():
        fresh = rebuilt()
    want = Prototypes(fresh, demo.logit_scale, AGES).predict(feats)
    got = exported.prototypes.predict(feats)

    np.testing.assert_allclose(got.probs, want.probs, atol=1e-5)
    np.testing.assert_allclose(got.expected_rank, want.expected_rank, atol=1e-4)
    np.testing.assert_allclose(got.expected_value, want.expected_value, atol=1e-4)
    np.testing.assert_array_equal(got.argmax, want.argmax)
    np.testing.assert_array_equal(got.median, want.median)
    np.testing.assert_array_equal(got.interval, want.interval)

    # and independently of Prototypes: softmax(scale * cos) in numpy
    P = fresh.numpy().astype(np.float64)
    F = feats.numpy().astype(np.float64)
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    p = _softmax_np(demo.logit_scale * F @ P.T)
    np.testing.assert_allclose(got.probs, p, atol=1e-5)
    np.testing.assert_allclose(got.expected_value, p @ np.arange(16, 28), atol=1e-4)

    with pytest.raises(ExplorerError, match="prototypes only"):
        exported.build_model(demo)


# --- validation ---------------------------------------------------------------------------------


def _variant(saved, tmp_path, name, tensors_fn=None, meta_fn=None):
    tensors, meta = _read_raw(saved[0])
    if tensors_fn:
        tensors = tensors_fn(tensors)
    if meta_fn:
        meta = meta_fn(meta)
    return _write_raw(tmp_path / name, tensors, meta)


def test_the_unmodified_rewrite_loads(saved, tmp_path):
    path = _variant(saved, tmp_path, "same.safetensors")
    assert load_checkpoint(path).content == "full"


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_wrong_format_version(saved, tmp_path, version):
    path = _variant(saved, tmp_path, "v.safetensors", meta_fn=lambda m: {**m, "format_version": version})
    with pytest.raises(ExplorerError, match=rf"format version {version}.*reads version 1"):
        load_checkpoint(path)


def test_not_an_explorer_checkpoint(saved, tmp_path):
    path = _variant(saved, tmp_path, "f.safetensors", meta_fn=lambda m: {**m, "format": "something-else"})
    with pytest.raises(ExplorerError, match="not an explorer checkpoint"):
        load_checkpoint(path)
    plain = tmp_path / "plain.safetensors"
    save_file({"prototypes": torch.zeros(2, 2)}, str(plain))
    with pytest.raises(ExplorerError, match="no 'ordinalclip_explorer' metadata"):
        load_checkpoint(plain)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file(saved, tmp_path, keep):
    data = saved[0].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ExplorerError, match="cut.safetensors is not a readable safetensors file .truncated or corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("data", [
    np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    b"hello, this is a text file\n" * 20,
    b"\x00" * 100,
    b"{}",
])
def test_garbage_bytes(tmp_path, data):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(data)
    with pytest.raises(ExplorerError, match="junk.safetensors is not a readable safetensors file"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(ExplorerError, match="Checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(ExplorerError, match="Checkpoint not found"):
        load_checkpoint(tmp_path)  # a folder


@pytest.mark.parametrize("zipfile", [True, False])
def test_torch_pickle_is_refused(tmp_path, zipfile):
    path = tmp_path / "model.pt"
    torch.save({"prototypes": torch.randn(3, 4), "state_dict": {}}, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(ExplorerError, match="model.pt is a torch pickle.*pickles are never loaded"):
        load_checkpoint(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=4))
    with pytest.raises(ExplorerError, match="pickle"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("key,value", [
    ("prototypes", float("nan")),
    ("prototypes", float("inf")),
    ("learner.rank_embeds", float("-inf")),
    ("learner.context_embeds", float("nan")),
])
def test_non_finite_tensors(saved, tmp_path, key, value):
    def poison(t):
        t = dict(t)
        t[key] = t[key].clone()
        t[key].view(-1)[1] = value
        return t

    path = _variant(saved, tmp_path, "nan.safetensors", tensors_fn=poison)
    with pytest.raises(ExplorerError, match=rf"tensor '{key}' contains 1 NaN/Inf values"):
        load_checkpoint(path)


@pytest.mark.parametrize("key,shape,pattern", [
    ("learner.rank_embeds", (4, 1, 128), r"tensor 'rank_embeds' has shape \(4, 1, 128\) but the config needs \(3, 1, None\)"),
    ("learner.rank_embeds", (3, 2, 128), r"'rank_embeds' has shape \(3, 2, 128\)"),
    ("learner.rank_embeds", (3, 128), r"'rank_embeds' has shape \(3, 128\)"),
    ("learner.context_embeds", (5, 128), r"'context_embeds' has shape \(5, 128\) but the config needs \(3, None\)"),
    ("prototypes", (11, 128), r"prototypes have shape \(11, 128\) but there are 12 ranks"),
])
def test_shapes_that_do_not_match_the_config(saved, tmp_path, key, shape, pattern):
    path = _variant(saved, tmp_path, "shape.safetensors", tensors_fn=lambda t: {**t, key: torch.zeros(shape)})
    with pytest.raises(ExplorerError, match=pattern):
        load_checkpoint(path)


def test_missing_and_unexpected_learner_tensors(saved, tmp_path):
    def drop(t):
        return {k: v for k, v in t.items() if k != "learner.context_embeds"}

    path = _variant(saved, tmp_path, "drop.safetensors", tensors_fn=drop)
    with pytest.raises(ExplorerError, match=r"learner tensors \['context_embeds'\] are missing"):
        load_checkpoint(path)
    path = _variant(saved, tmp_path, "extra.safetensors", tensors_fn=lambda t: {**t, "learner.bias": torch.zeros(3)})
    with pytest.raises(ExplorerError, match="unexpected learner tensor 'bias'"):
        load_checkpoint(path)
    path = _variant(saved, tmp_path, "noprotos.safetensors",
                    tensors_fn=lambda t: {k: v for k, v in t.items() if k != "prototypes"})
    with pytest.raises(ExplorerError, match="no 'prototypes' tensor"):
        load_checkpoint(path)


@pytest.mark.parametrize("meta_fn,pattern", [
    (lambda m: {**m, "kind": "weird"}, "unknown checkpoint content 'weird'"),
    (lambda m: {k: v for k, v in m.items() if k != "ranks"}, "lacks the 'ranks' metadata"),
    (lambda m: {**m, "logit_scale": -1.0}, "logit_scale must be a positive number"),
    (lambda m: {**m, "learner": {**m["learner"], "num_ranks": 13}}, "the learner has 13 ranks but the metadata lists 12"),
    (lambda m: {**m, "ranks": {**m["ranks"], "values": m["ranks"]["values"][:-1]}}, "12 rank labels but 11 rank values"),
])
def test_inconsistent_metadata(saved, tmp_path, meta_fn, pattern):
    path = _variant(saved, tmp_path, "meta.safetensors", meta_fn=meta_fn)
    with pytest.raises(ExplorerError, match=pattern):
        load_checkpoint(path)


def test_another_backbone_is_refused(demo, saved, tmp_path):
    path, _ = saved
    # the same demo weights through a file: same id, accepted
    state = {k: v.detach().float().contiguous() for k, v in demo.model.state_dict().items() if k != "attn_mask"}
    same_file = tmp_path / "same.safetensors"
    save_file(state, str(same_file))
    same = load_backbone(f"ordinalclip-demo@{same_file}", device="cpu")
    assert same.backbone_id == demo.backbone_id
    load_checkpoint(path, backbone=same).build_model(same)

    # one weight changed: a different backbone
    state["text_projection"] = state["text_projection"].clone()
    state["text_projection"][0, 0] += 1e-3
    other_file = tmp_path / "other.safetensors"
    save_file(state, str(other_file))
    other = load_backbone(f"ordinalclip-demo@{other_file}", device="cpu")
    assert other.backbone_id != demo.backbone_id

    ckpt = load_checkpoint(path)
    for call in (lambda: ckpt.check_backbone(other), lambda: ckpt.build_model(other),
                 lambda: load_checkpoint(path, backbone=other)):
        with pytest.raises(ExplorerError) as info:
            call()
        msg = str(info.value)
        assert demo.backbone_id in msg and other.backbone_id in msg and "load that backbone" in msg

    renamed = dataclasses.replace(demo, spec="demo", backbone_id="ordinalclip-demo@0000000000000000")
    with pytest.raises(ExplorerError, match="ordinalclip-demo@0000000000000000"):
        ckpt.check_backbone(renamed)


# --- atomic writes ------------------------------------------------------------------------------


def test_save_leaves_no_temporary_files(demo, tmp_path):
    model = _model(demo, "plain")
    save_checkpoint(tmp_path / "a.safetensors", model, demo)
    save_checkpoint(tmp_path / "a.safetensors", model, demo)  # overwrite
    export_prototypes(load_checkpoint(tmp_path / "a.safetensors"), tmp_path / "b.safetensors")
    update_metadata(tmp_path / "b.safetensors", metrics={"x": 1})
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors", "b.safetensors"]


def test_crash_during_write_keeps_the_previous_checkpoint(demo, tmp_path, monkeypatch):
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, _model(demo, "rank", seed=1), demo, metrics={"mae_exp": 1.0})
    before = path.read_bytes()
    real_save_file = fsio.save_file
    written = []

    def crashing_save_file(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)  # a complete file at the temporary path ...
        with open(filename, "r+b") as f:  # ... cut short, as by a crash mid-write
            f.truncate(os.path.getsize(filename) // 2)
        written.append(filename)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsio, "save_file", crashing_save_file)  # the one atomic write every file goes through
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, _model(demo, "rank", seed=2), demo, metrics={"mae_exp": 2.0})
    monkeypatch.undo()

    assert written and os.path.dirname(written[0]) == str(tmp_path) and written[0] != str(path)
    assert not os.path.exists(written[0])
    assert os.listdir(tmp_path) == ["run.safetensors"]
    assert path.read_bytes() == before
    assert load_checkpoint(path, backbone=demo).meta["metrics"] == {"mae_exp": 1.0}


# --- Prototypes.predict summaries ---------------------------------------------------------------


def _quantile_np(p, q):
    """Smallest r with CDF(r) >= q, by a plain loop."""
    c = 0.0
    for r, pr in enumerate(p):
        c += pr
        if c >= q - 1e-9:
            return r
    return len(p) - 1


def _check_summaries(pred, probs, values, coverage=0.9):
    """``probs``: the independent distribution; summaries are checked on the float32 ones ``pred`` holds."""
    R = probs.shape[1]
    np.testing.assert_allclose(pred.probs, probs, atol=1e-6)
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pred.expected_value, probs @ values, rtol=1e-5)
    probs = pred.probs
    np.testing.assert_allclose(pred.expected_rank, probs @ np.arange(R), rtol=1e-12)
    np.testing.assert_allclose(pred.expected_value, probs @ values, rtol=1e-12)
    tail = (1 - coverage) / 2
    for i, p in enumerate(probs):
        assert pred.argmax[i] == int(np.argmax(p))
        assert pred.median[i] == _quantile_np(p, 0.5)
        assert list(pred.interval[i]) == [_quantile_np(p, tail), _quantile_np(p, 1 - tail)]
        rec = pred.record(i, k=4)
        assert rec["expected_value"] == pytest.approx(float(p @ values))
        assert rec["median_value"] == values[pred.median[i]]
        assert rec["interval_values"] == [values[pred.interval[i][0]], values[pred.interval[i][1]]]
        top = rec["top"]
        assert [t["rank"] for t in top] == list(np.argsort(-p, kind="stable")[:4])
        assert [t["prob"] for t in top] == sorted((t["prob"] for t in top), reverse=True)


@pytest.mark.parametrize("ranks", [
    Ranks.integers(62, start=16, unit="years"),  # ages 16 .. 77
    Ranks.integers(9, start=1930, step=10, unit=""),  # decades 1930 .. 2010
    Ranks(["tiny", "small", "mid", "big", "huge"], [0.5, 1.25, 3.0, 7.75, 20.0], unit="kg"),
])
def test_predict_summaries_match_numpy(ranks):
    R = len(ranks)
    g = torch.Generator().manual_seed(R)
    matrix = torch.randn(R, 16, generator=g)
    feats = torch.randn(6, 16, generator=g) * 3
    scale = 20.0
    pred = Prototypes(matrix * 5.0, scale, ranks).predict(feats)  # un-normalised input is normalised

    P = matrix.double().numpy()
    F = feats.double().numpy()
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    probs = _softmax_np(scale * F @ P.T)
    values = ranks.value_array
    _check_summaries(pred, probs, values)
    assert pred.ranks.unit == ranks.unit
    assert values.min() <= pred.expected_value.min() and pred.expected_value.max() <= values.max()


def test_summaries_on_hand_made_distributions():
    ranks = Ranks.integers(5, start=1930, step=10)
    probs = np.array([
        [0.2, 0.2, 0.2, 0.2, 0.2],   # CDF .2 .4 .6 .8 1
        [0.05, 0.9, 0.05, 0, 0],    # CDF hits .05 and .95 exactly
        [0.0, 0.0, 0.0, 0.0, 1.0],  # a point mass at the top
        [0.5, 0.0, 0.0, 0.0, 0.5],  # bimodal: CDF 0.5 reached at rank 0
        [0.01, 0.02, 0.07, 0.3, 0.6],
    ])
    pred = summarize(probs, ranks, coverage=0.9)
    assert list(pred.median) == [2, 1, 4, 0, 4]
    assert pred.interval.tolist() == [[0, 4], [0, 1], [4, 4], [0, 4], [2, 4]]
    assert list(pred.argmax) == [0, 1, 4, 0, 4]
    np.testing.assert_allclose(pred.expected_value, [1950, 1940, 1970, 1950, 1930 + 10 * (0.02 + 0.14 + 0.9 + 2.4)])
    _check_summaries(pred, probs, ranks.value_array)
    wide = summarize(probs, ranks, coverage=0.5)  # quartiles
    assert wide.interval.tolist()[0] == [1, 3]


def test_predict_rejects_bad_input():
    protos = Prototypes(torch.randn(4, 8), 100.0, Ranks.integers(4))
    with pytest.raises(ExplorerError, match="16 dimensions but the prototypes have 8.*another backbone"):
        protos.predict(torch.randn(2, 16))
    with pytest.raises(ExplorerError, match="coverage must be between 0 and 1"):
        protos.predict(torch.randn(2, 8), coverage=1.0)
    with pytest.raises(ExplorerError, match="does not match 5 ranks"):
        Prototypes(torch.randn(4, 8), 100.0, Ranks.integers(5))
    one = protos.predict(torch.randn(8))  # a single feature vector
    assert one.probs.shape == (1, 4) and math.isclose(one.probs.sum(), 1.0, rel_tol=1e-6)
